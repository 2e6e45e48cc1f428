"""Benchmark and sanity probes of the synthetic AU benchmark (needs `make repro` or `dvc repro` first).

    python bench/synth.py [--frames 300] [--skip-probes]

1. Rendering speed: frames/s on one core at the default size, with and without H.264 encoding.
2. Face detection through `clpau extract`, per population, from data/clips/synth_*/videos.parquet.
3. Is the benchmark hard in the right way? Linear probes (per-AU logistic regression, class-balanced, F1 of the
   positive class, mean over the 12 AUs and the 3 subject-exclusive folds) on
   - raw pixels of the aligned crops, and on a random-init conv net's features: the floor;
   - the true AU geometry (the renderer's pose-free mesh of each frame, identity and resting face included);
   - the same features after per-subject neutral subtraction (subtract the subject's median feature);
   and an identity classifier on raw pixels (first half of each subject's frames to train, second half to test).
Figures go to stdout and reports/synth_probes.json.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clpau.config import load_params
from clpau.core.labels import read_occurrence_csv
from clpau.synth.assets import AssetPaths
from clpau.synth.benchmark import BP4D_AUS, _seed, read_folds
from clpau.synth.render import AU_NAMES, Identity, MeshModel, Pose, Renderer
from clpau.video.decode import write_h264


def render_speed(params, frames: int) -> tuple[float, float]:
    model = MeshModel(AssetPaths(params.assets_dir).au_to_mesh, AssetPaths(params.assets_dir).tessellation)
    r = Renderer(model, Identity.sample(1), size=params.size)
    rng = np.random.default_rng(0)
    aus = np.clip(rng.normal(0, 0.7, (frames, 20)), 0, 2)
    t0 = time.perf_counter()
    imgs = [r.render(a, Pose(yaw=5 * np.sin(i / 9))) for i, a in enumerate(aus)]
    render_only = frames / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    write_h264(io.BytesIO(), (r.render(a, Pose(yaw=5 * np.sin(i / 9))) for i, a in enumerate(aus)), params.fps,
               crf=params.crf)
    del imgs
    return render_only, frames / (time.perf_counter() - t0)


def load_labelled(clips_dir: Path, params):
    """Face frames of the labelled population: crops, labels, subject, true pose-free geometry."""
    v = pd.read_parquet(clips_dir / "videos.parquet")
    model = MeshModel(AssetPaths(params.assets_dir).au_to_mesh, AssetPaths(params.assets_dir).tessellation)
    crops, labels, subjects, geometry, order = [], [], [], [], []
    for _, row in v[v["status"] == "ok"].iterrows():
        stem = Path(row["video"]).stem
        subject = stem.split("_")[0]
        index = pd.read_parquet(clips_dir / "frames" / row["key"] / "index.parquet")
        faces = index[index["face"]]
        shard = np.load(clips_dir / "frames" / row["key"] / "faces.npy", mmap_mode="r")
        label_frames, label_rows = read_occurrence_csv(params.labels_dir / "labelled" / f"{stem}.csv", BP4D_AUS)
        lab = dict(zip(label_frames.tolist(), label_rows, strict=True))
        truth = np.load(params.out_dir / "labelled" / f"{stem}.npz")
        renderer = Renderer(model, Identity.sample(_seed(params.seed, "labelled", subject)), size=params.size)
        for frame, r in zip(faces["frame"], faces["row"], strict=True):
            crops.append(np.asarray(shard[r]))
            labels.append(lab[frame])
            subjects.append(subject)
            order.append(frame)
            geometry.append(renderer.vertices(truth["au"][frame].astype(float), Pose())[:468, :2].ravel())
    return (np.stack(crops), np.array(labels), np.array(subjects), np.array(geometry, np.float32),
            np.array(order))


def pixels(crops: np.ndarray, side: int = 24) -> np.ndarray:
    from PIL import Image

    gray = crops.mean(-1).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(g).resize((side, side), Image.BILINEAR)) for g in gray]) \
        .reshape(len(crops), -1).astype(np.float32)


def random_net(crops: np.ndarray) -> np.ndarray:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3, 2, 1), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), 512):
            x = torch.from_numpy(np.ascontiguousarray(crops[i:i + 512])).permute(0, 3, 1, 2).float() / 255
            out.append(net(x).numpy())
    return np.concatenate(out)


def neutralise(x: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    out = x.copy()
    for s in np.unique(subjects):
        m = subjects == s
        out[m] -= np.median(x[m], axis=0)
    return out


def au_probe(x: np.ndarray, y: np.ndarray, subjects: np.ndarray, folds: list[list[str]]) -> tuple[float, list]:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    per_fold = []
    for test in folds:
        te = np.isin(subjects, test)
        tr = ~te
        scaler = StandardScaler().fit(x[tr])
        xtr, xte = scaler.transform(x[tr]), scaler.transform(x[te])
        if x.shape[1] > 64:
            pca = PCA(64, random_state=0).fit(xtr)
            xtr, xte = pca.transform(xtr), pca.transform(xte)
        f1s = []
        for j in range(y.shape[1]):
            if y[tr, j].min() == y[tr, j].max():
                f1s.append(0.0)
                continue
            clf = LogisticRegression(class_weight="balanced", max_iter=1000).fit(xtr, y[tr, j])
            f1s.append(f1_score(y[te, j], clf.predict(xte), zero_division=0))
        per_fold.append(f1s)
    per_fold = np.array(per_fold)
    return float(per_fold.mean()), per_fold.mean(0).round(3).tolist()


def identity_probe(x: np.ndarray, subjects: np.ndarray, order: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train = np.zeros(len(x), bool)
    for s in np.unique(subjects):
        idx = np.nonzero(subjects == s)[0]
        train[idx[: len(idx) // 2]] = True
    scaler = StandardScaler().fit(x[train])
    clf = LogisticRegression(max_iter=2000, C=0.1).fit(scaler.transform(x[train]), subjects[train])
    return float((clf.predict(scaler.transform(x[~train])) == subjects[~train]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--skip-probes", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("reports/synth_probes.json"))
    args = ap.parse_args()
    params = load_params().synth
    report: dict = {}
    r, e = render_speed(params, args.frames)
    report["render_frames_per_s_per_core"] = {"render": round(r, 1), "render+encode": round(e, 1)}
    print(f"rendering at {params.size}px, one core: {r:.0f} frames/s, {e:.0f} frames/s with H.264 encoding")
    for pop in ("pretrain", "labelled"):
        f = Path(f"data/clips/synth_{pop}/videos.parquet")
        if f.exists():
            v = pd.read_parquet(f)
            rate = v["face_frames"].sum() / v["frames"].sum()
            report[f"face_rate_{pop}"] = round(float(rate), 4)
            print(f"{pop}: dlib finds a face in {100 * rate:.2f} % of {v['frames'].sum()} frames "
                  f"({len(v)} videos; lowest video {v['face_frames'].min()}/{v['frames'].iloc[0]})")
    if not args.skip_probes:
        crops, y, subjects, geometry, order = load_labelled(Path("data/clips/synth_labelled"), params)
        folds = read_folds(params.folds)
        print(f"probes on {len(crops)} labelled face frames, {len(np.unique(subjects))} subjects; base rates "
              + ", ".join(f"AU{a} {r:.2f}" for a, r in zip(BP4D_AUS, y.mean(0), strict=True)))
        feats = {"raw pixels": pixels(crops), "random-init conv net": random_net(crops), "true AU geometry": geometry}
        probes = {}
        for name, x in feats.items():
            for neutral in (False, True):
                key = name + (" - subject neutral" if neutral else "")
                f1, per_au = au_probe(neutralise(x, subjects) if neutral else x, y, subjects, folds)
                probes[key] = {"f1_mean": round(f1, 3), "f1_per_au": dict(zip(map(str, BP4D_AUS), per_au, strict=True))}
                print(f"  AU probe  {key:<40} mean F1 {f1:.3f}")
        acc = identity_probe(feats["raw pixels"], subjects, order)
        chance = 1 / len(np.unique(subjects))
        probes["identity accuracy, raw pixels"] = round(acc, 3)
        print(f"  identity probe on raw pixels: accuracy {acc:.3f} (chance {chance:.3f})")
        report["probes"] = probes
        report["au_names_rendered"] = AU_NAMES
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
