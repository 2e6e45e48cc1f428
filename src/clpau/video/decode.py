"""Video decoding with PyAV: frame-accurate, rotation-aware, timestamps kept.

`probe` reads packet headers only (no decoding: milliseconds per minute of video) to learn the frame count,
keyframe positions and geometry, and classifies files that are not usable video. `decode` yields upright frames of
one presentation-time range; a long video is split at keyframes into such ranges that separate processes decode in
parallel. Frame numbers are the rank of a frame's presentation time among all decoded frames, so they stay exact on
variable-frame-rate files where "time × fps" would not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# formats whose first plane is the luma: a free grey image for the detector
_LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21",
               "yuv420p10le", "gray"}


class VideoError(Exception):
    """A file that cannot be used as video; `status` is the machine-readable reason."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class VideoInfo:
    width: int  # as stored (before rotation)
    height: int
    n_packets: int
    fps: float
    duration: float
    codec: str
    time_base: float
    first_pts: int | None
    keyframe_pts: list[int] = field(default_factory=list)  # sorted presentation times of keyframes
    packet_pts: list[int] = field(default_factory=list)  # sorted presentation times of all packets
    truncated: str | None = None  # why the file looks cut short, if it does
    declared_frames: int = 0  # the frames the container's index declares (0: it declares none)


def probe(path: Path | str) -> VideoInfo:
    path = Path(path)
    if not path.exists():
        raise VideoError("not_found", f"no such file: {path}")
    if path.stat().st_size == 0:
        raise VideoError("empty_file", "the file is empty (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as err:
        raise VideoError("unreadable", f"not a readable media file: {err}") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise VideoError("no_video_stream", f"no video stream (has: {', '.join(kinds)})")
        stream = container.streams.video[0]
        pts: list[int] = []
        keys: list[int] = []
        declared = stream.frames  # from the container's index; 0 when it has none
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
            demux_error = None
        except av.FFmpegError as err:
            demux_error = f"reading stopped after {len(pts)} packets: {err}"
        if not pts:
            raise VideoError("unreadable", "the video stream holds no frames")
        pts.sort()
        keys.sort()
        tb = float(stream.time_base)
        duration = (pts[-1] - pts[0]) * tb if len(pts) > 1 else 0.0
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else ((len(pts) - 1) / duration if duration > 0 else 0.0)
        return VideoInfo(
            width=stream.codec_context.width, height=stream.codec_context.height, n_packets=len(pts),
            fps=fps, duration=duration, codec=stream.codec_context.name, time_base=tb, first_pts=pts[0],
            keyframe_pts=keys or [pts[0]], packet_pts=pts, declared_frames=int(declared or 0),
            truncated=demux_error or (f"the file holds {len(pts)} of the {declared} frames its index declares"
                                      if declared and len(pts) < declared * 0.99 - 1 else None),
        )


@dataclass
class Frame:
    """One decoded frame, upright and possibly downscaled (`scale` = processed / stored size)."""

    pts: int
    gray: np.ndarray  # (H, W) uint8, C-contiguous
    _frame: av.VideoFrame
    _size: tuple[int, int] | None
    rotation: int
    scale: float

    def rgb(self) -> np.ndarray:
        frame = self._frame
        if self._size is not None:
            frame = frame.reformat(width=self._size[0], height=self._size[1], format="rgb24")
            arr = frame.to_ndarray()
        else:
            arr = frame.to_ndarray(format="rgb24")
        return np.ascontiguousarray(_upright(arr, self.rotation))  # dlib needs C order; padded rows are not


def _upright(arr: np.ndarray, rotation: int) -> np.ndarray:

    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(arr, k)) if k else arr


def _gray(frame: av.VideoFrame) -> np.ndarray:
    if frame.format.name in _LUMA_FIRST and frame.format.name != "yuv420p10le":
        plane = frame.planes[0]
        buf = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        return buf[:, : frame.width]
    return frame.to_ndarray(format="gray")


def processing_size(width: int, height: int, max_side: int) -> tuple[tuple[int, int] | None, float]:
    """Size frames are worked at: huge frames are downscaled (even dimensions) so the long side is max_side."""
    long_side = max(width, height)
    if long_side <= max_side:
        return None, 1.0
    s = max_side / long_side
    w, h = max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)
    return (w, h), w / width


class DecodeReport:
    """Filled in while `decode` runs: how many frames came out, and whether the stream ended in an error."""

    def __init__(self) -> None:
        self.frames = 0
        self.error: str | None = None


def decode(path: Path | str, start_pts: int | None, end_pts: int | None, max_side: int,
           report: DecodeReport | None = None) -> Iterator[Frame]:
    """Yield frames with start_pts <= pts < end_pts (None = open end) in presentation order."""
    report = report or DecodeReport()
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"  # one thread: parallelism comes from worker processes (measured faster)
        size, scale = processing_size(stream.codec_context.width, stream.codec_context.height, max_side)
        if start_pts is not None:
            container.seek(start_pts, stream=stream, backward=True, any_frame=False)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                if start_pts is not None and frame.pts < start_pts:
                    continue
                if end_pts is not None and frame.pts >= end_pts:
                    break
                rotation = int(frame.rotation or 0) % 360
                src = frame if size is None else frame.reformat(width=size[0], height=size[1])
                gray = _upright(_gray(src), rotation)
                report.frames += 1
                yield Frame(frame.pts, np.ascontiguousarray(gray), frame, size, rotation, scale)
        except av.FFmpegError as err:
            report.error = f"decoding stopped after {report.frames} frames: {err}"


def write_h264(dest, frames, fps: int, crf: int = 18, preset: str = "veryfast") -> int:
    """Encode RGB uint8 frames (an iterable) to an H.264 mp4 at `dest` (a path or a binary file object).

    Reproducible: the same frames give the same bytes in any process. That needs explicit timestamps and x264
    without macroblock-tree rate control, which otherwise varies with what the process encoded before. One encoder
    thread: parallelism comes from processes. Returns the number of frames written.
    """
    n = 0
    with av.open(dest, "w", format="mp4") as container:
        stream = None
        for n, rgb in enumerate(frames, 1):
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": preset, "threads": "1", "x264-params": "mbtree=0"}
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = n - 1, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return n
