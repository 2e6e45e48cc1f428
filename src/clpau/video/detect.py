"""Face detection, tracking and alignment with dlib.

Speed comes from not running the full-frame HOG detector (≈13 ms at 640×360) on every frame. After a face is
acquired, each frame is searched only in a window around the previous face, resized so the face is `roi_face_px`
wide (≈1 ms), and the 68 landmarks are fitted inside the box found there (≈0.7 ms on grey). Inside that window a
looser score threshold keeps the face than acquisition needs (`track_threshold`: hysteresis, as in
tracking-by-detection — a face already followed may dip in score for a frame without being gone). A
full-frame scan runs only to acquire a face, to re-acquire it after a miss, and every `recheck_every` frames to
count other faces. Every kept frame therefore has a real detection, so "face found" never means "landmarks
fitted to wherever the face used to be".

The face followed is the largest one at acquisition. If it is lost and no detection continues its track, a new
candidate must match its dlib face descriptor (128-D, distance < `identity_threshold`), so a person in the
background never takes over the track.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
from PIL import Image

from clpau.video.params import ExtractParams

# dlib's 68-point layout: 36-41 the eye on the image's left, 42-47 the other eye
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
HOG_MIN_FACE = 80  # dlib's frontal detector window; smaller faces need upsampling


def model_dir() -> Path:
    """Folder of face-recognition-models' files, found without importing the package (it needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the package face-recognition-models is not installed (pip install face-recognition-models)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class FaceModels:
    """dlib's HOG detector, 68-landmark predictor and (lazily) face-descriptor network."""

    def __init__(self) -> None:
        d = model_dir()
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(d / "shape_predictor_68_face_landmarks.dat"))
        self._recognizer_path = d / "dlib_face_recognition_resnet_model_v1.dat"
        self._recognizer = None

    def descriptor(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        if self._recognizer is None:
            self._recognizer = dlib.face_recognition_model_v1(str(self._recognizer_path))
        shape = self.predictor(rgb, _rect(box))
        return np.asarray(self._recognizer.compute_face_descriptor(rgb, shape), dtype=np.float32)


def _rect(box: np.ndarray) -> dlib.rectangle:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return dlib.rectangle(x0, y0, x1, y1)


def detect(models: FaceModels, gray: np.ndarray, scale: float, threshold: float,
           offset: tuple[int, int] = (0, 0), upsample: int = 0) -> list[tuple[np.ndarray, float]]:
    """HOG detections on `gray` resized by `scale`, as (box x0,y0,x1,y1 in the caller's frame, score)."""
    img = gray
    if abs(scale - 1.0) > 1e-3:
        h, w = gray.shape
        img = np.asarray(Image.fromarray(gray).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                      Image.BILINEAR))
    # dlib reads the buffer as if it were C-contiguous: a strided view (a window of the frame) must be copied, or
    # it sees other rows — and, past the end of the buffer, whatever memory follows
    rects, scores, _ = models.detector.run(np.ascontiguousarray(img), upsample, threshold)
    out = []
    for r, s in zip(rects, scores, strict=True):
        box = np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float32) / scale
        box[[0, 2]] += offset[0]
        box[[1, 3]] += offset[1]
        out.append((box, float(s)))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_width(box: np.ndarray) -> float:
    return float(box[2] - box[0])


def landmarks(models: FaceModels, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
    shape = models.predictor(gray, _rect(box))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


# ---------------------------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class Template:
    """Where the eye centres go in the square crop (pixel-centre coordinates)."""

    size: int
    eye_distance: float
    eye_y: float

    @property
    def eyes(self) -> np.ndarray:
        s, d = self.size, self.eye_distance
        return np.array([[(0.5 - d / 2) * s - 0.5, self.eye_y * s - 0.5],
                         [(0.5 + d / 2) * s - 0.5, self.eye_y * s - 0.5]], dtype=np.float64)

    @classmethod
    def from_params(cls, p: ExtractParams) -> Template:
        return cls(p.crop_size, p.eye_distance, p.eye_y)


def eye_centres(lm: np.ndarray) -> np.ndarray:
    return np.stack([lm[LEFT_EYE].astype(np.float64).mean(0), lm[RIGHT_EYE].astype(np.float64).mean(0)])


# The alignment's geometry is plain arithmetic on Python floats: no BLAS or LAPACK (np.linalg.inv ran through
# OpenBLAS's kernel for the CPU at hand, and other kernels changed some crops — bench/extract_fingerprint.py with
# OPENBLAS_CORETYPE=Haswell) and no SIMD sin/cos (NumPy's differ between CPUs in the last bit), so the same video
# gives the same crops on every machine and DVC's cache holds across them.
def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 matrix of the similarity that maps the two points `src` exactly onto the two points `dst`. With the
    point-to-point vectors as complex numbers, rotation and scale are their quotient: c + i·s = v_dst / v_src."""
    (sx0, sy0), (sx1, sy1) = ((float(x), float(y)) for x, y in src)
    (dx0, dy0), (dx1, dy1) = ((float(x), float(y)) for x, y in dst)
    vx, vy, wx, wy = sx1 - sx0, sy1 - sy0, dx1 - dx0, dy1 - dy0
    n = max(vx * vx + vy * vy, 1e-12)
    c, s = (wx * vx + wy * vy) / n, (vx * wy - vy * wx) / n
    return np.array([[c, -s, dx0 - (c * sx0 - s * sy0)], [s, c, dy0 - (s * sx0 + c * sy0)]])


def invert_affine(m: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """(a, b, tx, d, e, ty) of the inverse of the 2×3 affine `m`, by the closed form."""
    a, b, tx, d, e, ty = (float(v) for v in m.ravel())
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    return ia, ib, -(ia * tx + ib * ty), id_, ie, -(id_ * tx + ie * ty)


def align(rgb: np.ndarray, lm: np.ndarray, template: Template) -> tuple[np.ndarray, np.ndarray]:
    """Crop the face so its eye centres land on the template's; returns (crop, 2×3 frame→crop matrix).

    When the face is more than twice the crop's scale, the source is box-filtered down first (PIL `reduce`) so
    the bilinear warp does not alias fine texture such as wrinkles and furrows, which carry AU information.
    """
    fwd = similarity(eye_centres(lm), template.eyes)
    a, b, tx, d, e, ty = invert_affine(fwd)  # crop -> frame
    s = template.size
    k = math.sqrt(float(fwd[0, 0]) ** 2 + float(fwd[1, 0]) ** 2)
    img = Image.fromarray(rgb)
    ox = oy = 0
    factor = int(1.0 / k) if k < 0.5 else 1
    if factor > 1:
        corners = [(0, 0), (s, 0), (0, s), (s, s)]
        xs = [a * x + b * y + tx for x, y in corners]
        ys = [d * x + e * y + ty for x, y in corners]
        x0, y0 = max(math.floor(min(xs)) - factor, 0), max(math.floor(min(ys)) - factor, 0)
        x1, y1 = min(math.ceil(max(xs)) + factor, rgb.shape[1]), min(math.ceil(max(ys)) + factor, rgb.shape[0])
        if x1 - x0 >= factor and y1 - y0 >= factor:
            img = img.crop((x0, y0, x1, y1)).reduce(factor)
            ox, oy = x0, y0
        else:
            factor = 1
    # frame (pixel centres) -> working image: w = (p - origin + 0.5) / factor - 0.5
    m00, m01, m10, m11 = a / factor, b / factor, d / factor, e / factor
    t0, t1 = (tx - ox + 0.5) / factor - 0.5, (ty - oy + 0.5) / factor - 0.5
    # PIL samples the input at M·(x+0.5, y+0.5) + c in pixel-corner coordinates
    c0, c1 = t0 - (m00 + m01) * 0.5 + 0.5, t1 - (m10 + m11) * 0.5 + 0.5
    crop = img.transform((s, s), Image.AFFINE, (m00, m01, c0, m10, m11, c1), resample=Image.BILINEAR)
    return np.asarray(crop), fwd.astype(np.float32)


# ---------------------------------------------------------------------------------------------- tracking


@dataclass
class Observation:
    box: np.ndarray  # x0, y0, x1, y1 in the processed frame
    score: float
    landmarks: np.ndarray  # (68, 2)


class FaceTracker:
    """Follows one face through consecutive frames of one chunk (see the module docstring)."""

    def __init__(self, models: FaceModels, params: ExtractParams, scale: float,
                 target: np.ndarray | None = None):
        self.m = models
        self.p = params
        self.min_face = max(params.min_face_px * scale, 1.0)
        self.threshold = params.detect_threshold
        self.target = target  # face descriptor of the person to follow
        self.acquired_target: np.ndarray | None = None
        self.last: np.ndarray | None = None
        self.lost = 0
        self.since_scan = 0
        self.max_faces = 0
        self.scanned: list[tuple[np.ndarray, float]] | None = None  # this step's full-frame detections, if it scanned

    # full-frame scan: coarse first (cheap, finds big faces), full resolution only if that finds nothing
    def _scan(self, gray: np.ndarray) -> list[tuple[np.ndarray, float]]:
        self.since_scan = 0
        short = min(gray.shape)
        coarse = HOG_MIN_FACE / max(self.min_face, HOG_MIN_FACE)
        scales = [0.5, 1.0] if coarse <= 0.5 and short * 0.5 >= HOG_MIN_FACE else [1.0]
        for s in scales:
            dets = [(b, sc) for b, sc in detect(self.m, gray, s, self.threshold) if box_width(b) >= self.min_face]
            if dets:
                return dets
        return []

    def _roi(self, gray: np.ndarray) -> tuple[np.ndarray, float] | None:
        box = self.last
        w = box_width(box)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = w  # window is twice the face: room for motion between frames
        x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
        x1, y1 = int(min(cx + half, gray.shape[1])), int(min(cy + half, gray.shape[0]))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        scale = min(1.0, self.p.roi_face_px / w)
        dets = detect(self.m, gray[y0:y1, x0:x1], scale, min(self.p.track_threshold, self.threshold),
                      offset=(x0, y0))
        best = max(dets, key=lambda d: iou(d[0], box), default=None)
        if best is None or iou(best[0], box) < 0.3 or box_width(best[0]) < self.min_face:
            return None
        return best

    def _choose(self, frame, dets: list[tuple[np.ndarray, float]]) -> tuple[np.ndarray, float] | None:
        if not dets:
            return None
        if self.last is not None and self.lost <= 2:  # a short miss: continue the track spatially
            near = max(dets, key=lambda d: iou(d[0], self.last))
            if iou(near[0], self.last) >= 0.3:
                return near
        ranked = sorted(dets, key=lambda d: -box_width(d[0]))
        target = self.target if self.target is not None else self.acquired_target
        if target is None:
            best = ranked[0]
            self.acquired_target = self.m.descriptor(frame.rgb(), best[0])
            return best
        rgb = frame.rgb()
        for det in ranked:
            if np.linalg.norm(self.m.descriptor(rgb, det[0]) - target) < self.p.identity_threshold:
                return det
        return None

    def step(self, frame) -> Observation | None:
        gray = frame.gray
        found = self._roi(gray) if self.last is not None else None
        self.since_scan += 1
        self.scanned = None
        if found is None or self.since_scan >= self.p.recheck_every:
            dets = self.scanned = self._scan(gray)
            self.max_faces = max(self.max_faces, len(dets))
            if found is None:
                found = self._choose(frame, dets)
        if found is None:
            self.lost += 1
            return None
        box, score = found
        self.last = box
        self.lost = 0
        return Observation(box, score, landmarks(self.m, gray, box))


def tiny_faces(models: FaceModels, gray: np.ndarray) -> float | None:
    """Width of the largest face dlib finds with 2× upsampling, for telling "tiny faces" from "no face"."""
    dets = detect(models, gray, 1.0, 0.0, upsample=1)
    return max((box_width(b) for b, _ in dets), default=None)
