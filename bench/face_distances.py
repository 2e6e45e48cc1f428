"""Face-descriptor distances that choose `benchmark.face_threshold` (docs/operations.md, "Who is in a video").

Same person: the real sample videos against copies a user might make — mirrored, re-encoded, darkened, cropped to
the face, trimmed to another part — and the 12 trims of the talking-face sample. Different people: the real
people of the samples and of the group photo against each other. Synthetic: the rendered benchmark's people
(`--synth-identities` of them, two videos each): same and different identity.

    python bench/face_distances.py --out docs/faces/distances.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import media  # noqa: E402

from clpau.config import AssetsParams, SynthParams, load_params  # noqa: E402
from clpau.core import faces  # noqa: E402
from clpau.synth.assets import fetch_assets  # noqa: E402
from clpau.synth.benchmark import run_synth  # noqa: E402
from clpau.video.extract import run_extract  # noqa: E402


def table(out: Path) -> dict[str, np.ndarray]:
    import pandas as pd

    v = pd.read_parquet(out / "videos.parquet")
    v = v[v["descriptor"].notna()]
    return {Path(n).stem: np.asarray(d, np.float32) for n, d in zip(v["video"], v["descriptor"], strict=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="write the distances here (JSON)")
    ap.add_argument("--synth-identities", type=int, default=12)
    ap.add_argument("--every", type=int, default=None, help="extract.descriptor_every (default: params.yaml's)")
    ap.add_argument("--samples", type=int, default=None, help="extract.descriptor_samples")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faces-"))
    assets = fetch_assets(AssetsParams(out_dir=work / "external", cache_dir=ROOT / "data" / "cache"),
                          log=lambda *_: None)
    real = work / "real"
    real.mkdir()
    groups = {"wolfgang": media.person_copies(assets.videos / "WolfgangLanger_Pexels.mp4", real, "wolfgang"),
              "single": media.person_copies(assets.videos / "single_face.mp4", real, "single")}
    talk = media.real_face_videos(assets.videos / "WolfgangLanger_Pexels.mp4", real, 12, prefix="talk")
    media.make_bad_inputs(work / "bad", assets.videos / "WolfgangLanger_Pexels.mp4",
                          assets.videos / "single_face.mp4", assets.multi_face_image)
    group = work / "bad" / "group.mp4"
    params = load_params(ROOT / "params.yaml")
    p, threshold = params.extract, params.trainset.face_threshold
    p = p.model_copy(update={k: v for k, v in (("descriptor_every", args.every), ("descriptor_samples", args.samples))
                             if v is not None})
    run_extract([real, group], work / "real_clips", p, workers=2, progress=False)
    d = table(work / "real_clips")
    import pandas as pd

    v = pd.read_parquet(work / "real_clips" / "videos.parquet")
    row = v[v["video"].str.endswith("group.mp4")].iloc[0]
    group_faces = [np.asarray(row["descriptor"], np.float32)] + [np.asarray(x, np.float32) for x in row["other_faces"]]

    same, diff = {}, {}
    for person, vids in groups.items():
        src = d[f"{person}_source"]
        for path in vids[1:]:
            same[path.stem] = float(np.linalg.norm(d[path.stem] - src))
    for a, b in itertools.combinations([t.stem for t in talk], 2):
        same[f"{a}~{b}"] = float(np.linalg.norm(d[a] - d[b]))
    people = {"wolfgang": d["wolfgang_source"], "single": d["single_source"]}
    people.update({f"group{i}": g for i, g in enumerate(group_faces)})
    for a, b in itertools.combinations(people, 2):
        diff[f"{a}~{b}"] = float(np.linalg.norm(people[a] - people[b]))

    sp = SynthParams(assets_dir=assets.root, out_dir=work / "synth", labels_dir=work / "labels",
                     pretrain={"identities": args.synth_identities, "videos_per_identity": 2, "frames": 40},
                     labelled={"tasks": 1, "frames": 16})
    run_synth(sp, workers=2, progress=False)
    run_extract([sp.out_dir / "pretrain"], work / "synth_clips", p, workers=2, identity_rule="prefix",
                progress=False)
    s = table(work / "synth_clips")
    names = sorted(s)
    synth_same, synth_diff = [], []
    for a, b in itertools.combinations(names, 2):
        dist = float(np.linalg.norm(s[a] - s[b]))
        (synth_same if a.split("_")[0] == b.split("_")[0] else synth_diff).append(dist)
    result = {
        "descriptor_every": p.descriptor_every, "descriptor_samples": p.descriptor_samples,
        "real_same_person": same, "real_different_people": diff,
        "group_video_faces": len(group_faces),
        "synth_same_identity": {"n": len(synth_same), "min": min(synth_same), "max": max(synth_same),
                                "mean": float(np.mean(synth_same))},
        "synth_different_identities": {"n": len(synth_diff), "min": min(synth_diff), "max": max(synth_diff),
                                       "mean": float(np.mean(synth_diff)),
                                       "below_threshold": int(np.sum(np.array(synth_diff) < threshold))},
        "face_threshold": threshold,
        "synth_persons_by_face": int(faces.cluster(faces.as_matrix([s[n] for n in names]), threshold).max() + 1),
        "synth_identities": args.synth_identities,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        plot(same, diff, synth_same, synth_diff, threshold, args.out.with_suffix(".png"))


def plot(same: dict, diff: dict, synth_same: list, synth_diff: list, threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    bins = np.linspace(0, 1, 41)
    axes[0].hist(list(same.values()), bins, alpha=0.7, label=f"same person ({len(same)} pairs: copies, trims)")
    axes[0].hist(list(diff.values()), bins, alpha=0.7, label=f"different people ({len(diff)} pairs)")
    axes[0].set_title("real faces (the sample videos, copies of them, the group photo)")
    axes[1].hist(synth_same, bins, alpha=0.7, label=f"same identity ({len(synth_same)} pairs)")
    axes[1].hist(synth_diff, bins, alpha=0.7, label=f"different identities ({len(synth_diff)} pairs)")
    axes[1].set_title("synthetic renders (the benchmark's people)")
    for ax in axes:
        ax.axvline(threshold, color="k", ls="--", lw=1)
        ax.legend(fontsize=8)
        ax.set_ylabel("pairs")
    axes[1].set_xlabel(f"dlib face-descriptor distance of two videos' medians (dashed: trainset.face_threshold "
                       f"{threshold})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
