"""Stage `synth`: a synthetic AU face-video benchmark with exact ground truth (docs/data.md, `clpau synth`).

Two disjoint populations, both deterministic by seed:

- **pretrain** (unlabelled corpus): many identities, a few clips each, every clip talking (speech-like mouth
  motion) with the AU events of one of `synth.pretrain.profiles` (default: the labelled benchmark's five task
  profiles, so the corpus has BP4D-like base rates and event durations — docs/results.md, "The corpus"), blinks and
  head-pose drift. Labels are written (for analysis) but pretraining never reads them.
- **labelled** benchmark: the subjects of the committed fold file `data/folds/synth.yaml` × `tasks` sequences,
  BP4D's 12 AUs with co-occurring events and uneven base rates, labels in the BP4D occurrence-CSV layout.

Every identity has a resting-face offset in AU space (raised inner brows, upturned corners, heavy lids …) that is
rendered but never labelled: labels are intensity relative to the person's own neutral face, so a detector keyed on
static appearance fails across subjects. The videos are ordinary H.264 files that go through `clpau extract` like
real video; labels join the extracted frames by frame number. Next to each video an `.npz` keeps the exact ground
truth (AU intensities without the resting offset, the offset, head pose) for tests and probes.
"""

from __future__ import annotations

import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clpau.core.benchmarks import read_folds
from clpau.core.fileio import atomic_path
from clpau.core.hardware import usable_cpus
from clpau.synth.assets import AssetPaths
from clpau.synth.params import SynthParams
from clpau.synth.render import AU_INDEX, AU_NAMES, Identity, MeshModel, Pose, Renderer
from clpau.video.decode import write_h264

BP4D_AUS = [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]

# co-occurring AU groups: (weights of the AUs that move together)
GROUPS: dict[str, dict[str, float]] = {
    "smile": {"AU06": 0.7, "AU12": 1.0},
    "brow_raise": {"AU01": 1.0, "AU02": 0.9, "AU05": 0.4},
    "inner_brow": {"AU01": 1.0},
    "frown": {"AU04": 1.0, "AU07": 0.7},
    "squint": {"AU07": 1.0, "AU06": 0.4},
    "sad": {"AU01": 0.6, "AU04": 0.5, "AU15": 1.0, "AU17": 0.7},
    "chin": {"AU17": 1.0, "AU15": 0.4},
    "press": {"AU23": 1.0, "AU24": 0.9},
    "upper_lip": {"AU10": 1.0, "AU14": 0.6},
    "dimple": {"AU14": 1.0, "AU12": 0.3},
    "disgust": {"AU09": 1.0, "AU10": 0.8, "AU04": 0.4},
    "jaw_drop": {"AU25": 1.0, "AU26": 0.8},
}

# events per second of each group, per task profile (like BP4D's emotion-eliciting tasks)
PROFILES: dict[str, dict[str, float]] = {
    "amusement": {"smile": 0.6, "squint": 0.3, "upper_lip": 0.45, "dimple": 0.35, "jaw_drop": 0.15,
                  "brow_raise": 0.1, "chin": 0.1},
    "sadness": {"sad": 0.35, "inner_brow": 0.25, "chin": 0.35, "frown": 0.25, "press": 0.2, "upper_lip": 0.35,
                "squint": 0.3, "smile": 0.1},
    "startle": {"brow_raise": 0.35, "jaw_drop": 0.2, "frown": 0.2, "squint": 0.35, "press": 0.2, "upper_lip": 0.4,
                "smile": 0.25},
    "pain": {"frown": 0.35, "squint": 0.45, "upper_lip": 0.5, "disgust": 0.15, "press": 0.15, "smile": 0.3},
    "anger": {"frown": 0.4, "press": 0.35, "chin": 0.3, "squint": 0.3, "upper_lip": 0.3},
    "spontaneous": {g: 0.12 for g in GROUPS},
}
TASK_PROFILES = ["amusement", "sadness", "startle", "pain", "anger"]


@dataclass(frozen=True)
class VideoSpec:
    population: str  # "pretrain" | "labelled"
    name: str  # file stem, e.g. S001_T2 (identity before the "_")
    identity_seed: int
    seed: int
    frames: int
    profile: str
    speech: float  # 0..1 how much of the clip is talking


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def plan(params: SynthParams) -> list[VideoSpec]:
    """All videos of both populations, in a fixed order."""
    specs = []
    corpus = params.pretrain
    for i in range(corpus.identities):
        name = f"P{i + 1:04d}"
        for v in range(corpus.videos_per_identity):
            profile = corpus.profiles[(i * corpus.videos_per_identity + v) % len(corpus.profiles)]
            specs.append(VideoSpec("pretrain", f"{name}_V{v + 1}", _seed(params.seed, "pretrain", name),
                                   _seed(params.seed, "pretrain", name, v), corpus.frames, profile, speech=1.0))
    subjects = [s for fold in read_folds(params.folds) for s in fold]
    for s in subjects:
        for t in range(params.labelled.tasks):
            seed = _seed(params.seed, "labelled", s, t)
            specs.append(VideoSpec("labelled", f"{s}_T{t + 1}", _seed(params.seed, "labelled", s), seed,
                                   params.labelled.frames, TASK_PROFILES[t % len(TASK_PROFILES)],
                                   speech=float(np.random.default_rng(seed).random() < params.labelled.speech)))
    return specs


# ---------------------------------------------------------------------------------------------- dynamics


def _envelope(t: np.ndarray, start: float, onset: float, apex: float, offset: float) -> np.ndarray:
    """Onset-apex-offset curve: smooth rise, plateau, smooth fall (0..1)."""
    rise = np.clip((t - start) / onset, 0, 1)
    fall = np.clip(1 - (t - start - onset - apex) / offset, 0, 1)
    return (0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall)))


def dynamics(spec: VideoSpec, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(frames, 20) AU intensities relative to the person's neutral, and (frames, 6) head pose."""
    r = np.random.default_rng(spec.seed)
    n = spec.frames
    t = np.arange(n) / fps
    dur = n / fps
    au = np.zeros((n, 20))
    for group, rate in PROFILES[spec.profile].items():
        for _ in range(r.poisson(rate * dur)):
            start = r.uniform(-1.0, dur)
            env = _envelope(t, start, r.uniform(0.2, 0.6), r.uniform(0.8, 3.0), r.uniform(0.3, 0.8))
            peak = r.uniform(0.6, 2.0)
            for name, w in GROUPS[group].items():
                au[:, AU_INDEX[name]] += env * peak * w * r.uniform(0.8, 1.2)
    # blinks every few seconds
    b = r.uniform(0, 2.5)
    while b < dur:
        au[:, AU_INDEX["AU43"]] += 1.2 * _envelope(t, b, 0.06, 0.05, 0.1)
        b += r.uniform(1.5, 5.0)
    # speech: jaw and lips moving at syllable rate
    if spec.speech > 0:
        f = r.uniform(3.0, 5.0)
        talk = np.clip(np.sin(2 * np.pi * r.uniform(0.1, 0.3) * t + r.uniform(0, 6)) + 0.6, 0, 1)
        syll = np.abs(np.sin(2 * np.pi * f * t + r.uniform(0, 6)))
        au[:, AU_INDEX["AU25"]] += 1.2 * talk * (syll > 0.2)
        au[:, AU_INDEX["AU26"]] += 1.3 * talk * syll
        au[:, AU_INDEX["AU10"]] += 0.25 * talk * syll
        au[:, AU_INDEX["AU23"]] += 0.3 * talk * (1 - syll)
    # the linear mesh model folds the face when it extrapolates: stacked events saturate at 2, and at 1.2 the
    # lids already meet (AU43)
    au = np.clip(au, 0, 2.0)
    au[:, AU_INDEX["AU43"]] = np.minimum(au[:, AU_INDEX["AU43"]], 1.2)
    pose = np.zeros((n, 6))
    for k, amp in enumerate([6.0, 9.0, 4.0, 0.02, 0.02, 0.03]):  # pitch, yaw, roll, dx, dy, scale
        for _ in range(3):
            pose[:, k] += amp / 2 * np.sin(2 * np.pi * r.uniform(0.05, 0.5) * t + r.uniform(0, 2 * np.pi))
    pose[:, 5] += 1.0
    return au, pose


def occurrence(au: np.ndarray, threshold: float) -> np.ndarray:
    """(frames, 12) 0/1 labels of BP4D's AUs."""
    idx = [AU_INDEX[f"AU{a:02d}"] for a in BP4D_AUS]
    return (au[:, idx] >= threshold).astype(np.int8)


def write_labels(path: Path, labels: np.ndarray) -> None:
    """BP4D occurrence-CSV layout: frame number, then one column per AU number; 0/1 (9 = unknown)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("frame," + ",".join(str(a) for a in BP4D_AUS) + "\n")
        for i, row in enumerate(labels):
            f.write(f"{i}," + ",".join(str(int(v)) for v in row) + "\n")


# ---------------------------------------------------------------------------------------------- rendering

_MODEL: MeshModel | None = None


def _model(params: SynthParams) -> MeshModel:
    global _MODEL
    if _MODEL is None:
        _MODEL = MeshModel(AssetPaths(params.assets_dir).au_to_mesh, AssetPaths(params.assets_dir).tessellation)
    return _MODEL


def video_paths(params: SynthParams, spec: VideoSpec) -> tuple[Path, Path, Path]:
    video = params.out_dir / spec.population / f"{spec.name}.mp4"
    return video, video.with_suffix(".npz"), params.labels_dir / spec.population / f"{spec.name}.csv"


def render_video(spec: VideoSpec, params: SynthParams) -> int:
    """Render one video + its ground truth + labels; returns frames rendered (0 when already there)."""
    video, truth, labels_csv = video_paths(params, spec)
    if truth.exists() and video.exists() and labels_csv.exists():
        return 0  # the .npz is written last: its presence means the video is complete
    identity = Identity.sample(spec.identity_seed)
    renderer = Renderer(_model(params), identity, size=params.size)
    au, pose = dynamics(spec, params.fps)
    video.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(video) as tmp:
        write_h264(str(tmp), (renderer.render(au[i], Pose(*pose[i])) for i in range(spec.frames)), params.fps,
                   crf=params.crf)
    labels_csv.parent.mkdir(parents=True, exist_ok=True)
    write_labels(labels_csv, occurrence(au, params.occurrence_threshold))
    with atomic_path(truth) as tmp, open(tmp, "wb") as f:
        np.savez(f, au=au.astype(np.float32), rest=identity.rest.astype(np.float32),
                 pose=pose.astype(np.float32), au_names=np.array(AU_NAMES), identity_seed=spec.identity_seed)
    return spec.frames


def _render_one(args) -> int:
    return render_video(*args)


def run_synth(params: SynthParams, workers: int | None = None, progress: bool = True) -> dict:
    """Render everything that is missing; returns a summary with the measured frames/s."""
    from tqdm import tqdm

    specs = plan(params)
    n = workers if workers is not None else params.workers
    n = n or usable_cpus()
    t0 = time.perf_counter()
    rendered = 0
    bar = tqdm(total=sum(s.frames for s in specs), unit="frame", desc="synth", disable=not progress,
               dynamic_ncols=True)
    if n == 1:
        for s in specs:
            rendered += render_video(s, params)
            bar.update(s.frames)
    else:
        with ProcessPoolExecutor(n) as pool:
            for s, k in zip(specs, pool.map(_render_one, [(s, params) for s in specs], chunksize=2), strict=True):
                rendered += k
                bar.update(s.frames)
    bar.close()
    seconds = time.perf_counter() - t0
    return {"videos": len(specs), "frames_rendered": rendered, "seconds": seconds,
            "frames_per_second": rendered / seconds if seconds > 0 else 0.0, "workers": n}


# ---------------------------------------------------------------------------------------------- preview

PREVIEW_COLUMNS = [("neutral", {}), ("AU1+2", {"AU01": 2.5, "AU02": 2.0}), ("AU4+7", {"AU04": 2.5, "AU07": 1.5}),
                   ("AU6+12", {"AU06": 2.0, "AU12": 2.5}), ("AU15+17", {"AU15": 2.5, "AU17": 2.0}),
                   ("AU23+24", {"AU23": 2.5, "AU24": 2.0}), ("AU25+26", {"AU25": 2.0, "AU26": 2.5}),
                   ("AU43", {"AU43": 1.5})]


def preview(params: SynthParams, out: Path, n_identities: int = 6) -> Path:
    """Contact sheet: rows = labelled subjects (their resting face included), columns = AU examples."""
    from PIL import Image, ImageDraw

    subjects = [s for fold in read_folds(params.folds) for s in fold][:n_identities]
    size = params.size
    sheet = Image.new("RGB", (size * (len(PREVIEW_COLUMNS) + 0), size * len(subjects) + 18), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, (title, _) in enumerate(PREVIEW_COLUMNS):
        draw.text((c * size + 4, 3), title, fill=(0, 0, 0))
    for r, subject in enumerate(subjects):
        renderer = Renderer(_model(params), Identity.sample(_seed(params.seed, "labelled", subject)), size=size)
        for c, (_, aus) in enumerate(PREVIEW_COLUMNS):
            au = np.zeros(20)
            for name, v in aus.items():
                au[AU_INDEX[name]] = v
            sheet.paste(Image.fromarray(renderer.render(au, Pose(yaw=(c - 3.5) * 2.5))), (c * size, 18 + r * size))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
