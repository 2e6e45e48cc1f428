"""Face rendering for the synthetic AU benchmark: py-feat's AU->mesh model, a real 3-D head pose, flat shading.

Geometry: py-feat 2.1.5's fitted PLS model maps 20 AU intensities (+ pose, kept at 0 here) to the 478 vertices of
the MediaPipe face mesh, ``v = x @ coef + intercept`` reshaped (3, 478). We add a per-identity smooth shape
deformation, rotate the head in 3-D (pitch, yaw, roll), project orthographically and paint the 898 triangles back to
front with Lambert shading. dlib's HOG detector finds no face in bare flat-shaded triangles, so eyes (sclera and
iris inside the lid contour), brows, lips, the mouth opening, hair and a neck are drawn on top — with them it does.

Everything random about a face lives in `Identity` (drawn from a seed); everything that changes per frame is an AU
vector and a `Pose`. Rendering is supersampled 2x and box-filtered down, which keeps edges smooth for the detector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw

AU_NAMES = ["AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU11", "AU12", "AU14", "AU15",
            "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28", "AU43"]
AU_INDEX = {name: i for i, name in enumerate(AU_NAMES)}

# MediaPipe face-mesh indices (right = the subject's right, on the image's left)
LIPS_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]
LIPS_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
EYE_R = [33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7]
EYE_L = [263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249]
BROW_R = ([70, 63, 105, 66, 107], [46, 53, 52, 65, 55])  # upper edge, lower edge (outer -> inner)
BROW_L = ([300, 293, 334, 296, 336], [276, 283, 282, 295, 285])
IRIS_R, IRIS_L = 468, 473  # centres; the next four indices are on the iris ring
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
HAIRLINE = [162, 21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251, 389]
JAW = [234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454]
# landmarks with a fixed meaning, used by tests and by the "true geometry" probe
KEYPOINTS = {"mouth_r": 61, "mouth_l": 291, "lip_top": 13, "lip_bottom": 14, "chin": 152, "inner_brow_r": 55,
             "inner_brow_l": 285, "lid_top_r": 159, "lid_bottom_r": 145, "lid_top_l": 386, "lid_bottom_l": 374,
             "nose_tip": 1}

ASPECT = 1.3
EYE_BOX = True  # draw the eyes' masks on their bounding box only (False: on the whole canvas; the same pixels)

SKIN_TONES = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 140, 100], [160, 110, 75],
                       [130, 88, 62], [108, 72, 50]], np.float32)


class MeshModel:
    """py-feat's AU->mesh PLS model, in image-like coordinates: x right, y down, z toward the camera, unit scale
    (chin-to-forehead = 1), centred between the eyes."""


    def __init__(self, npz: Path, tessellation: Path):
        with np.load(npz, allow_pickle=False) as d:
            coef, intercept = d["coef"].astype(np.float64), d["intercept"].astype(np.float64)
            cols = [str(c) for c in d["input_columns"]]
        if cols[:20] != AU_NAMES:
            raise ValueError(f"{npz}: unexpected input columns {cols[:20]}")
        # y flipped to image rows, and stretched: the model's mesh is "frontalized + aspect-corrected" to a squarer
        # face than a camera sees; at 1.3 dlib's frontal detector finds 85 % of full frames instead of 53 %
        flip = np.array([1.0, -ASPECT, 1.0])
        neutral = intercept.reshape(3, 478).T * flip
        basis = coef[:20].reshape(20, 3, 478).transpose(0, 2, 1) * flip
        centre = (neutral[33] + neutral[263]) / 2
        height = neutral[152, 1] - neutral[10, 1]
        self.neutral = (neutral - centre) / height
        self.basis = basis / height
        self.triangles = np.asarray(json.loads(Path(tessellation).read_text())["triangles"], np.int64)

    def mesh(self, au: np.ndarray) -> np.ndarray:
        """(478, 3) vertices for 20 AU intensities (0 = neutral, ~3 = maximal)."""
        # einsum's own loop, not BLAS: threaded BLAS may sum in another order and change the last bits
        return self.neutral + np.einsum("k,kvd->vd", au, self.basis, optimize=False)


@dataclass(frozen=True)
class Identity:
    """Everything that makes one synthetic person look like themselves."""

    seed: int
    shape: np.ndarray  # (3, 10) coefficients of a smooth polynomial deformation field
    rest: np.ndarray  # (20,) resting-face offset in AU space: looks like an AU, is not one
    skin: np.ndarray  # RGB albedo
    lips: np.ndarray
    hair: np.ndarray
    brow: np.ndarray
    iris: np.ndarray
    background: np.ndarray  # two RGB colours of a vertical gradient
    light: np.ndarray  # unit light direction
    ambient: float
    brow_thickness: float
    hair_volume: float
    hairline: float
    face_scale: float

    @classmethod
    def sample(cls, seed: int) -> Identity:
        r = np.random.default_rng(seed)
        # smooth shape variation, bounded (±1.5 sd): beyond that faces stop looking like faces to a detector
        shape = np.clip(r.normal(0, 1, (3, 10)), -1.5, 1.5) * np.array(
            [0.03, 0.03, 0.02, 0.015, 0.01, 0.01, 0.01, 0.01, 0.008, 0.005])
        shape[0, 0] += np.clip(r.normal(0, 0.05), -0.08, 0.08)  # face width
        shape[1, 1] += np.clip(r.normal(0, 0.03), -0.05, 0.05)  # face length
        rest = np.zeros(20)
        # resting faces that mimic AUs: raised inner brows, upturned or downturned corners, heavy lids, frown
        for au, scale in [("AU01", 0.9), ("AU02", 0.5), ("AU04", 0.7), ("AU12", 0.8), ("AU15", 0.7),
                          ("AU43", 0.35), ("AU06", 0.4), ("AU17", 0.4)]:
            if r.random() < 0.5:
                rest[AU_INDEX[au]] = abs(r.normal(0, scale))
        tone = r.uniform(0, len(SKIN_TONES) - 1)
        lo = int(tone)
        skin = SKIN_TONES[lo] + (SKIN_TONES[min(lo + 1, len(SKIN_TONES) - 1)] - SKIN_TONES[lo]) * (tone - lo)
        skin = np.clip(skin * r.uniform(0.92, 1.08, 3), 0, 255)
        lips = np.clip(skin * np.array([0.85, 0.55, 0.55]) * r.uniform(0.8, 1.0) + [25, 0, 5], 0, 255)
        hair = np.clip(r.choice([[30, 20, 15], [70, 45, 25], [120, 80, 40], [200, 170, 110], [60, 60, 60],
                                 [150, 60, 30]]) * r.uniform(0.7, 1.2), 0, 255)
        # hair darker than the skin: a bright frame around a darker face cuts dlib's detection rate by half
        ratio = _lum(hair) / max(_lum(skin), 1.0)
        if ratio > 0.8:
            hair = hair * 0.8 / ratio
        light = np.array([r.uniform(-0.6, 0.6), r.uniform(-0.6, 0.1), 1.0])
        return cls(
            seed=seed, shape=shape, rest=rest, skin=skin, lips=lips, hair=hair,
            brow=np.minimum(hair * 0.8, skin * 0.35),  # brows darker than the skin, whatever the hair
            iris=np.clip(r.choice([[60, 40, 20], [90, 60, 30], [60, 90, 120], [70, 100, 60]]) * r.uniform(0.7, 1.1),
                         0, 255),
            background=_background(r, skin), light=light / np.linalg.norm(light),
            ambient=float(r.uniform(0.4, 0.6)), brow_thickness=float(r.uniform(0.9, 1.6)),
            hair_volume=float(r.uniform(0.08, 0.22)), hairline=float(r.uniform(0.05, 0.2)),
            face_scale=float(r.uniform(0.9, 1.05)),
        )

    def deform(self, v: np.ndarray) -> np.ndarray:
        x, y, z = v[:, 0], v[:, 1], v[:, 2]
        phi = np.stack([x, y, z, x * x, y * y, x * y, x * z, y * z, x * x * y, y * y * y])
        return v + (self.shape @ phi).T


def _lum(c: np.ndarray) -> float:
    return float(np.asarray(c) @ [0.299, 0.587, 0.114])


def _background(r: np.random.Generator, skin: np.ndarray) -> np.ndarray:
    """Two gradient colours whose brightness differs from the skin's: a face must stand out to be found."""
    while True:
        bg = r.uniform(15, 240, (2, 3))
        if min(abs(_lum(c) - _lum(skin)) for c in bg) > 45:
            return bg


@dataclass(frozen=True)
class Pose:
    pitch: float = 0.0  # degrees
    yaw: float = 0.0
    roll: float = 0.0
    dx: float = 0.0  # translation, fraction of the image size
    dy: float = 0.0
    scale: float = 1.0

    def matrix(self) -> np.ndarray:
        p, y, r = np.radians([self.pitch, self.yaw, self.roll])
        rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
        ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
        return rz @ ry @ rx


def _gradient(size: int, top: np.ndarray, bottom: np.ndarray) -> Image.Image:
    t = np.linspace(0, 1, size)[:, None, None]
    img = (top[None, None] * (1 - t) + bottom[None, None] * t).repeat(size, 1)
    return Image.fromarray(img.astype(np.uint8))


class Renderer:
    """Draws frames of one identity; `size` is the output side in pixels."""

    def __init__(self, model: MeshModel, identity: Identity, size: int = 160, supersample: int = 2):
        self.m, self.id, self.size, self.ss = model, identity, size, supersample
        self.canvas = size * supersample
        self.bg = _gradient(self.canvas, identity.background[0], identity.background[1])
        # a fixed per-triangle albedo jitter: skin texture that belongs to the person
        r = np.random.default_rng(identity.seed + 1)
        self.tri_albedo = identity.skin[None] * r.uniform(0.93, 1.05, (len(model.triangles), 1))
        self.tri = model.triangles

    def vertices(self, au: np.ndarray, pose: Pose) -> np.ndarray:
        """(478, 3) posed vertices in canvas pixels (x, y) and depth (z, toward the camera)."""
        v = self.id.deform(self.m.mesh(au + self.id.rest))
        v = v @ pose.matrix().T
        s = self.canvas * 0.72 * self.id.face_scale * pose.scale
        out = v * s
        out[:, 0] += self.canvas * (0.5 + pose.dx)
        out[:, 1] += self.canvas * (0.46 + pose.dy)
        # quantised to 1/256 px: rasterisation and the painter's order then never hinge on float noise, so a frame
        # renders to the same pixels in any process
        return np.round(out * 256) / 256

    def render(self, au: np.ndarray, pose: Pose) -> np.ndarray:
        """One RGB frame (size, size, 3) uint8."""
        v = self.vertices(np.asarray(au, np.float64), pose)
        img = self.bg.copy()
        draw = ImageDraw.Draw(img)
        ident = self.id
        xy = v[:, :2]
        centre = xy[[33, 263]].mean(0)
        # neck and hair mass behind the face
        jaw = xy[JAW]
        neck = np.concatenate([jaw[4:-4], jaw[-5:-4] + [0, self.canvas], jaw[4:5] + [0, self.canvas]])
        draw.polygon([tuple(p) for p in neck.tolist()], fill=tuple((ident.skin * 0.7).astype(int).tolist()))
        oval = xy[FACE_OVAL]
        hair = centre + (oval - centre) * (1 + ident.hair_volume)
        upper = hair[(hair[:, 1] < xy[234, 1] + 0.1 * self.canvas)]
        draw.polygon([tuple(p) for p in upper.tolist()], fill=tuple(ident.hair.astype(int).tolist()))
        # the skin: back-facing triangles culled, the rest painted far to near with Lambert shading
        p = xy[self.tri]
        cross = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0])
        front = cross < 0
        e1 = v[self.tri[:, 1]] - v[self.tri[:, 0]]
        e2 = v[self.tri[:, 2]] - v[self.tri[:, 0]]
        n = np.cross(e1, e2)
        n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-9
        n[n[:, 2] < 0] *= -1
        shade = ident.ambient + (1 - ident.ambient) * np.clip(n @ ident.light, 0, 1)
        colours = np.clip(self.tri_albedo * shade[:, None], 0, 255).astype(int)
        depth = v[self.tri, 2].mean(1)
        order = np.argsort(depth, kind="stable")
        order = order[front[order]]
        # the silhouette first, in the mean skin colour, so hairline cracks between triangles show skin
        draw.polygon(xy[FACE_OVAL].ravel().tolist(), fill=tuple(colours[order].mean(0).astype(int).tolist()))
        flat = p[order].reshape(len(order), 6).tolist()
        cols = [tuple(c) for c in colours[order].tolist()]
        polygon = draw.polygon
        for tri, c in zip(flat, cols, strict=True):
            polygon(tri, fill=c)
        self._features(img, draw, xy, v)
        if self.ss > 1:
            img = img.reduce(self.ss)
        return np.array(img)  # owned and writeable: PyAV's from_ndarray misreads read-only views

    def _features(self, img: Image.Image, draw: ImageDraw.ImageDraw, xy: np.ndarray, v: np.ndarray) -> None:
        ident = self.id
        # hairline over the top of the forehead
        top = xy[HAIRLINE]
        inner = top + (xy[[9]] - top) * ident.hairline
        hairline = np.concatenate([top, inner[::-1]])
        draw.polygon([tuple(p) for p in hairline.tolist()], fill=tuple(ident.hair.astype(int).tolist()))
        # eyes: a shaded socket, sclera inside the lid contour, an iris clipped by it, a dark lash line
        lash = max(1, int(round(1.5 * self.ss)))
        for contour, iris in ((EYE_R, IRIS_R), (EYE_L, IRIS_L)):
            lid = xy[contour]
            mid = lid.mean(0)
            socket = mid + (lid - mid) * [1.35, 1.9]
            draw.polygon([tuple(p) for p in socket.tolist()], fill=tuple((ident.skin * 0.5).astype(int).tolist()))
            opening = lid[4, 1] - lid[12, 1]  # upper lid above lower lid: negative y difference
            if opening >= -0.5:  # closed (or lids crossed): the lid is skin, with a dark lash line
                draw.line([tuple(p) for p in lid[:9].tolist()], fill=(30, 22, 22), width=lash)
                continue
            # sclera, iris and pupil all lie inside the lid contour: their masks need only its bounding box (on the
            # whole canvas the masks took 40 % of a frame's time). Shifted by whole pixels, every shape rasterises to
            # the same pixels as on the full canvas
            # the box holds the iris's whole circle as well, so that no shape has a negative coordinate there
            r = np.linalg.norm(xy[iris + 1: iris + 5] - xy[iris], axis=1).mean() * 1.05
            lo = np.minimum(lid.min(0), xy[iris] - r)
            hi = np.maximum(lid.max(0), xy[iris] + r)
            x0, y0 = (int(np.floor(v)) - 2 for v in lo)
            x1, y1 = (int(np.ceil(v)) + 3 for v in hi)
            if not EYE_BOX or min(x0, y0) < 0 or x1 > img.size[0] or y1 > img.size[1]:  # at the edge: whole canvas
                x0, y0, (x1, y1) = 0, 0, img.size
            box, at = (x0, y0, x1, y1), np.array([x0, y0])
            mask = Image.new("L", (x1 - x0, y1 - y0), 0)
            ImageDraw.Draw(mask).polygon([tuple(p) for p in (lid - at).tolist()], fill=255)
            img.paste((235, 232, 225), box, mask)
            c = xy[iris] - at
            iris_mask = Image.new("L", mask.size, 0)
            ImageDraw.Draw(iris_mask).ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=255)
            img.paste(tuple(ident.iris.astype(int).tolist()), box, ImageChops.multiply(iris_mask, mask))
            pupil = Image.new("L", mask.size, 0)
            ImageDraw.Draw(pupil).ellipse([c[0] - r * 0.45, c[1] - r * 0.45, c[0] + r * 0.45, c[1] + r * 0.45],
                                          fill=255)
            img.paste((15, 12, 12), box, ImageChops.multiply(pupil, mask))
            draw.line([tuple(p) for p in lid[:9].tolist()], fill=(30, 22, 22), width=lash)
        # brows: the lower edge pushed down by the person's brow thickness
        for upper_idx, lower_idx in (BROW_R, BROW_L):
            up, lo = xy[upper_idx], xy[lower_idx]
            lo = up + (lo - up) * ident.brow_thickness
            draw.polygon([tuple(p) for p in np.concatenate([up, lo[::-1]]).tolist()],
                         fill=tuple(ident.brow.astype(int).tolist()))
        # lips and the mouth opening (dark, with teeth when wide open)
        draw.polygon([tuple(p) for p in xy[LIPS_OUTER].tolist()], fill=tuple(ident.lips.astype(int).tolist()))
        inner = xy[LIPS_INNER]
        gap = inner[15, 1] - inner[5, 1]
        if gap > 0.6 * self.ss:
            draw.polygon([tuple(p) for p in inner.tolist()], fill=(60, 20, 25))
            if gap > 3 * self.ss:
                teeth = inner[[1, 2, 3, 4, 5, 6, 7, 8, 9]]
                band = teeth + [0, gap * 0.3]
                draw.polygon([tuple(p) for p in np.concatenate([teeth, band[::-1]]).tolist()], fill=(225, 220, 210))
        else:
            draw.line([tuple(p) for p in inner[:11].tolist()], fill=tuple((ident.lips * 0.5).astype(int).tolist()),
                      width=max(1, self.ss))

    def keypoints(self, au: np.ndarray, pose: Pose = Pose()) -> dict[str, np.ndarray]:
        """Image positions (output pixels) of the named landmarks, for tests and geometry probes."""
        v = self.vertices(np.asarray(au, np.float64), pose)[:, :2] / self.ss
        return {k: v[i] for k, i in KEYPOINTS.items()}
