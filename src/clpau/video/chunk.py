"""Worker side of `extract`: one (video, time range) chunk -> per-frame face track + aligned crops.

Runs in a pool process. It imports no pandas, so a fresh worker starts fast, and it reports progress through a
queue every few frames so the parent's progress bar moves during long chunks.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass, field

import numpy as np

from clpau.video.decode import DecodeReport, decode
from clpau.video.detect import FaceModels, FaceTracker, Template, align, iou, tiny_faces
from clpau.video.params import ExtractParams

# Per thread: dlib's detector and shape predictor must not be shared by threads running chunks at the same time
# (in-process extraction from a thread pool, e.g. Prefect's). A forked worker inherits the forking (main) thread's.
_LOCAL = threading.local()


def _models() -> FaceModels:
    models = getattr(_LOCAL, "models", None)
    if models is None:
        models = _LOCAL.models = FaceModels()
    return models


def init_worker(progress_queue=None) -> None:
    """Pool initializer: load the dlib models once per process (unless inherited through fork)."""
    _models()
    _LOCAL.progress = progress_queue


def preload_models() -> None:
    """Load the models in this thread, so forked workers share them instead of each loading ~100 MB."""
    _models()


def set_progress(sink) -> object:
    """Route this thread's progress ticks to `sink` (anything with .put(n)); returns the previous sink."""
    previous, _LOCAL.progress = getattr(_LOCAL, "progress", None), sink
    return previous


def _hist(gray: np.ndarray) -> np.ndarray:
    h = np.bincount((gray[::4, ::4] >> 3).ravel(), minlength=32).astype(np.float32)
    return h / max(h.sum(), 1.0)


def crop_quality(crop: np.ndarray) -> tuple[float, float]:
    """(brightness 0-255, sharpness = variance of the 4-neighbour Laplacian) of one aligned RGB crop."""
    g = crop[..., 0] * 0.299 + crop[..., 1] * 0.587 + crop[..., 2] * 0.114
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(g.mean()), float(lap.var())


@dataclass
class ChunkTask:
    video_index: int
    chunk_index: int
    path: str
    start_pts: int | None
    end_pts: int | None
    shard_tmp: str
    params: ExtractParams
    target: np.ndarray | None = None
    descriptors: int = 1  # face descriptors this chunk samples, at most (its share of extract.descriptor_samples)


@dataclass
class ChunkResult:
    video_index: int
    chunk_index: int
    pts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    face: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    box: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 68, 2), np.float32))
    affine: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3), np.float32))
    hist_diff: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    brightness: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    sharpness: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    first_hist: np.ndarray | None = None
    last_hist: np.ndarray | None = None
    n_faces: int = 0
    max_faces: int = 0
    descriptor: np.ndarray | None = None  # the tracker's target: the person it followed
    person: np.ndarray = field(default_factory=lambda: np.zeros((0, 128), np.float32))  # the followed face's
    # descriptors on sampled well-detected frames, and those of the other faces the full-frame scans found
    others: np.ndarray = field(default_factory=lambda: np.zeros((0, 128), np.float32))
    tiny_face_px: float | None = None
    decode_error: str | None = None
    rotation: int = 0
    scale: float = 1.0
    failure: str | None = None  # an unexpected exception: "Type: message"
    traceback: str | None = None


def process_chunk(task: ChunkTask) -> ChunkResult:  # runs in a worker process
    """Decode one range of a video, follow the face, write aligned crops to `task.shard_tmp`."""
    res = ChunkResult(task.video_index, task.chunk_index)
    try:
        _run_chunk(task, res)
    except Exception as err:  # one bad chunk must not take the batch down: report it as data
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        res.failure = f"{type(err).__name__}: {first_line}"
        res.traceback = traceback.format_exc(limit=8)
    return res


def _sample_descriptors(models, p, frame, obs, scanned, kept: int, most: int, person: list, others: list) -> None:
    """Who is in the video, for the leakage guard and the pool's persons (core/faces.py): dlib's face descriptor
    of the followed face every `descriptor_every` kept frames (well detected only: a score at the acquisition
    threshold, not the tracking window's looser one), at most `most` in this chunk; and of each other face a
    full-frame scan found on a kept frame, as many. ≈ 150 ms each on a 2-core AVX2 CPU: a handful a video."""
    if kept % p.descriptor_every == 0 and len(person) < most and obs.score >= p.detect_threshold:
        person.append(models.descriptor(frame.rgb(), obs.box))
    for box, _ in scanned or ():
        if len(others) < most and iou(box, obs.box) < 0.3:
            others.append(models.descriptor(frame.rgb(), box))


def _run_chunk(task: ChunkTask, res: ChunkResult) -> None:
    models = _models()
    progress = getattr(_LOCAL, "progress", None)
    p = task.params
    template = Template.from_params(p)
    report = DecodeReport()
    tracker: FaceTracker | None = None
    pts, face, score, boxes, lms, affines, diffs, crops, samples = [], [], [], [], [], [], [], [], []
    bright, sharp, person, others = [], [], [], []
    prev_hist = None
    ticks = 0
    for frame in decode(task.path, task.start_pts, task.end_pts, p.max_side, report):
        if tracker is None:
            tracker = FaceTracker(models, p, frame.scale, target=task.target)
            res.rotation, res.scale = frame.rotation, frame.scale
        hist = _hist(frame.gray)
        if prev_hist is None:
            res.first_hist = hist
            diffs.append(np.nan)
        else:
            diffs.append(0.5 * float(np.abs(hist - prev_hist).sum()))
        prev_hist = hist
        obs = tracker.step(frame)
        pts.append(frame.pts)
        if obs is None:
            face.append(False)
            score.append(np.nan)
            boxes.append(np.full(4, np.nan, np.float32))
            lms.append(np.full((68, 2), np.nan, np.float32))
            affines.append(np.full((2, 3), np.nan, np.float32))
            bright.append(np.nan)
            sharp.append(np.nan)
            if len(samples) < 4 and len(pts) % 12 == 1:
                samples.append(frame.gray.copy())
        else:
            crop, fwd = align(frame.rgb(), obs.landmarks, template)
            crops.append(crop)
            face.append(True)
            score.append(obs.score)
            boxes.append(obs.box)
            lms.append(obs.landmarks)
            affines.append(fwd)
            b, sh = crop_quality(crop)
            bright.append(b)
            sharp.append(sh)
            _sample_descriptors(models, p, frame, obs, tracker.scanned, len(crops) - 1, task.descriptors, person,
                                others)
        ticks += 1
        if progress is not None and ticks >= 16:
            progress.put(ticks)
            ticks = 0
    if progress is not None and ticks:
        progress.put(ticks)
    res.last_hist = prev_hist
    res.decode_error = report.error
    res.pts = np.asarray(pts, np.int64)
    res.face = np.asarray(face, bool)
    res.score = np.asarray(score, np.float32)
    res.box = np.asarray(boxes, np.float32).reshape(-1, 4)
    res.landmarks = np.asarray(lms, np.float32).reshape(-1, 68, 2)
    res.affine = np.asarray(affines, np.float32).reshape(-1, 2, 3)
    res.hist_diff = np.asarray(diffs, np.float32)
    res.brightness = np.asarray(bright, np.float32)
    res.sharpness = np.asarray(sharp, np.float32)
    res.n_faces = len(crops)
    res.person = np.asarray(person, np.float32).reshape(-1, 128)
    res.others = np.asarray(others, np.float32).reshape(-1, 128)
    if tracker is not None:
        res.max_faces = tracker.max_faces
        res.descriptor = tracker.target if tracker.target is not None else tracker.acquired_target
    if crops:
        with open(task.shard_tmp, "wb") as f:
            np.save(f, np.stack(crops))
    elif samples:
        widths = [w for w in (tiny_faces(models, g) for g in samples) if w is not None]
        res.tiny_face_px = max(widths) if widths else None


