"""Generate real media files for the tests with PyAV: every bad-input kind `extract` must survive."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def read_frames(path: Path, n: int) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        out = []
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return out


def write_video(path: Path, frames: list[np.ndarray], fps: int = 24, rotation: int | None = None,
                pts_ms: list[int] | None = None, codec: str = "libx264") -> Path:
    """Encode RGB frames; `pts_ms` gives each frame's time in ms (variable frame rate), `rotation` a display
    matrix rotation like a phone writes."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        s.options = {"preset": "ultrafast", "x264-params": "mbtree=0"} if codec == "libx264" else {}
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, arr in enumerate(frames):
            # an owned, writeable copy: PyAV's from_ndarray misreads read-only views (e.g. of PIL images)
            frame = av.VideoFrame.from_ndarray(np.array(arr), format="rgb24").reformat(format="yuv420p")
            # explicit timestamps and time base: x264's rate control reads them
            frame.pts, frame.time_base = (i, Fraction(1, fps)) if pts_ms is None else (pts_ms[i], Fraction(1, 1000))
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=44100)
        n = int(44100 * seconds)
        t = np.arange(n) / 44100
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        for i in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, i:i + 1024], format="fltp", layout="mono")
            frame.sample_rate = 44100
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def resize(frames: list[np.ndarray], w: int, h: int) -> list[np.ndarray]:
    return [np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames]


def make_bad_inputs(folder: Path, sample: Path, single: Path, group_photo: Path, n: int = 24) -> dict[str, tuple]:
    """Write one file per kind; returns name -> (path, expected status)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = read_frames(sample, n)
    kinds: dict[str, tuple] = {}

    p = folder / "empty.mp4"
    p.write_bytes(b"")
    kinds["zero-byte"] = (p, "empty_file")

    p = folder / "notes.mp4"
    p.write_text("this is a text file with a video name\n" * 50)
    kinds["not-a-video"] = (p, "unreadable")

    p = folder / "truncated.mp4"
    data = sample.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # the sample keeps its index first: half the frames remain
    kinds["truncated"] = (p, "truncated")

    kinds["audio-only"] = (write_audio_only(folder / "speech.mp4"), "no_video_stream")

    rng = np.random.default_rng(0)
    noise = [np.clip(rng.normal(120, 30, (360, 640, 3)), 0, 255).astype(np.uint8) for _ in range(n)]
    kinds["no-face"] = (write_video(folder / "noise.mp4", noise), "no_face")

    # a real group photo, panned slowly: several faces in every frame
    photo = np.asarray(Image.open(group_photo).convert("RGB"))
    h, w = photo.shape[:2]
    ch, cw = (h * 9 // 10) // 2 * 2, (w * 9 // 10) // 2 * 2
    pan = [photo[i: i + ch, i: i + cw] for i in range(n)]
    kinds["several-faces"] = (write_video(folder / "group.mp4", pan), "multiple_faces")

    kinds["tiny-faces"] = (write_video(folder / "tiny.mp4", resize(frames, 160, 90)), "face_too_small")
    kinds["huge-resolution"] = (write_video(folder / "huge.mp4", resize(frames, 3840, 2160)), "ok")

    # stored sideways (turned clockwise), with the display matrix a phone writes to turn it back
    turned = [np.ascontiguousarray(np.rot90(f, -1)) for f in frames]
    kinds["rotated"] = (write_video(folder / "rotated.mp4", turned, rotation=90), "ok")

    p = folder / "vidéo d'été 日本 (1).mp4"
    shutil.copyfile(single, p)
    kinds["odd-name"] = (p, "ok")
    return kinds


def real_face_videos(sample: Path, folder: Path, n: int, frames: int = 24, prefix: str = "talk") -> list[Path]:
    """`n` different real-face videos from one real talking-face video: trims at different times, every other one
    mirrored, each re-encoded (different bytes, the same real face and camera)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = read_frames(sample, n * frames)
    if len(source) < n * frames:
        raise ValueError(f"{sample} has {len(source)} frames, {n * frames} needed")
    out = []
    for i in range(n):
        clip = source[i * frames:(i + 1) * frames]
        if i % 2:
            clip = [f[:, ::-1] for f in clip]
        out.append(write_video(folder / f"{prefix}{i:02d}.mp4", clip))
    return out


def partly_faceless(sample: Path, faceless: Path, path: Path, face_frames: int, other_frames: int) -> Path:
    """A real video whose face is on screen in face_frames of face_frames + other_frames: a talking face, then
    the camera on an empty scene (an interview where the face is out of shot half the time)."""
    face = read_frames(sample, face_frames)
    h, w = face[0].shape[:2]
    rest = resize(read_frames(faceless, other_frames), w, h)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, face + rest)


def person_copies(sample: Path, folder: Path, prefix: str, n: int = 48) -> list[Path]:
    """Copies of one real video a user might feed in again, as `<prefix>_<kind>.mp4`: the source (its first `n`
    frames), mirrored, darkened, re-encoded smaller at another frame rate, a later part, cropped to the middle."""
    frames = read_frames(sample, 2 * n)
    first, later = frames[:n], frames[n:]
    h, w = first[0].shape[:2]
    out = [write_video(folder / f"{prefix}_source.mp4", first),
           write_video(folder / f"{prefix}_mirrored.mp4", [f[:, ::-1] for f in first]),
           write_video(folder / f"{prefix}_darkened.mp4", [(f * 0.45).astype(np.uint8) for f in first]),
           write_video(folder / f"{prefix}_reencoded.mp4", resize(first, w * 3 // 4, h * 3 // 4), fps=30),
           write_video(folder / f"{prefix}_later.mp4", later)]
    y0, x0 = h // 8, w // 8
    out.append(write_video(folder / f"{prefix}_cropped.mp4",
                                 [np.ascontiguousarray(f[y0:h - y0, x0:w - x0]) for f in first]))
    return out
