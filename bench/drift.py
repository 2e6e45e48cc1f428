"""The drift check's false alarms and power.

False alarms: split the training pool's videos at random into reference and current, 20 times, and count how often
`clpau drift`'s decision fires (it should almost never); then compare the pool with the real sample videos.

Power (--power): how many videos a batch needs before a shift is flagged. For each batch size, 20 random draws of
a new batch against the training pool (`data/clips/synth_pretrain`, run `dvc repro` first) of
- none: pool videos held out of the reference (every flag is a false alarm);
- brightness 45 %: pool videos re-rendered at 45 % brightness (their originals held out of the reference);
- real vs synthetic: real-face videos (trims and mirror images of the real sample videos, re-encoded);
the same per-video QC features and encoder-embedding components `clpau drift` tests (each video's embedding: the
mean of ~16 sampled frames, computed once per video rather than resampled per draw). Shifted videos are made and
extracted once into --work. Writes reports/drift_power.json and docs/drift_power.png.

    python bench/drift.py [--splits 20] [--pool data/clips/synth_pretrain] [--shifted data/clips/samples]
    python bench/drift.py --power [--draws 20] [--sizes 2 3 4 6 8 12 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clpau.config import DriftParams, ExtractParams, load_params
from clpau.data.clips import load_clips
from clpau.ops.drift import detect_drift, drift_tables, project, video_embeddings
from clpau.video.extract import run_extract

ROOT = Path(__file__).resolve().parents[1]


def shifted_sets(pool: pd.DataFrame, work: Path, n_dark: int, n_real: int) -> dict[str, pd.DataFrame]:
    """The clips of pool videos re-rendered at 45 % brightness and of real-face videos (made and extracted once)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import media  # the tests' real-media helpers (PyAV)

    from clpau.config import AssetsParams

    videos = Path(AssetsParams().out_dir) / "videos"
    out = {}
    for name in ("dark", "real"):
        raw, clips = work / name, work / f"{name}_clips"
        if not (clips / "videos.parquet").exists():
            if name == "dark":
                raw.mkdir(parents=True, exist_ok=True)
                for v in sorted(pool["video"].unique())[:n_dark]:
                    frames = media.read_frames(Path(v), 10_000)
                    media.write_video(raw / Path(v).name, [(f * 0.45).astype(np.uint8) for f in frames], fps=25)
            else:
                media.real_face_videos(videos / "WolfgangLanger_Pexels.mp4", raw, n_real - 1)
                media.write_video(raw / "single.mp4", media.read_frames(videos / "single_face.mp4", 72))
            run_extract([raw], clips, ExtractParams(), progress=True)
        out[name] = load_clips([clips], span=1)
    return out


def power(args, p: DriftParams) -> None:
    from clpau.train.encoder import load_encoder

    pool = load_clips([args.pool], span=1)
    sets = {"none": pool, **shifted_sets(pool, args.work, args.dark_videos, args.real_videos)}
    net, meta = load_encoder(p.encoder)
    tables = {}
    for name, clips in sets.items():  # per video, once: QC means and the mean embedding of ~16 frames
        sample = p.model_copy(update={"embedding_frames": 16 * clips["video"].nunique()})
        tables[name] = (clips.groupby("video")[p.features].mean().astype(float),
                        video_embeddings(clips, sample, p.seed, net, meta))
    pool_videos = np.array(sorted(tables["none"][0].index))
    results, t0, checks = {}, time.perf_counter(), 0
    for name, label in (("none", "none (false alarms)"), ("dark", "brightness 45 %"), ("real", "real vs synthetic")):
        qc, emb = tables[name]
        candidates = np.array(sorted(qc.index))
        results[label] = {}
        for n in args.sizes:
            if n > len(candidates) or (name == "none" and n > len(pool_videos) // 2):
                continue
            flags, by_share, shares = 0, 0, []
            for i in range(args.draws):
                rng = np.random.default_rng(10_000 * n + i + 1_000 * args.seed)
                cur = rng.choice(candidates, n, replace=False)
                # the drawn videos (or the originals of re-rendered ones) are never in the reference
                held = {Path(v).name for v in cur}
                ref = [v for v in pool_videos if Path(v).name not in held]
                e_ref, e_cur = project(tables["none"][1].loc[ref], emb.loc[cur], p.embedding_components)
                ref_t = tables["none"][0].loc[ref].join(e_ref).reset_index(drop=True)
                cur_t = qc.loc[cur].join(e_cur).reset_index(drop=True)
                r = detect_drift(ref_t, cur_t, p)
                flags += r["drift"]
                by_share += r["share_alarm"]
                shares.append(r["drifted_share"])
                checks += 1
            results[label][n] = {"flagged": flags, "flagged_by_share": by_share, "draws": args.draws,
                                 "median_share": float(np.median(shares))}
            print(f"{label:22s} n={n:2d}: flagged {flags:2d}/{args.draws}, by the share of columns alone "
                  f"{by_share:2d} (median drifted share {np.median(shares):.2f})", flush=True)
    out = {"pool": str(args.pool), "pool_videos": len(pool_videos), "draws": args.draws, "seed": args.seed,
           "threshold": p.threshold, "stattest_threshold": p.stattest_threshold,
           "feature_threshold": p.feature_threshold, "encoder": str(p.encoder),
           "seconds_per_check": round((time.perf_counter() - t0) / max(checks, 1), 3), "results": results}
    Path("reports").mkdir(exist_ok=True)
    Path("reports/drift_power.json").write_text(json.dumps(out, indent=1) + "\n")
    plot_power(out, Path(args.plot))
    print(f"written: reports/drift_power.json, {args.plot}")


def plot_power(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (label, by_n), color in zip(out["results"].items(), ("tab:gray", "tab:orange", "tab:blue"), strict=False):
        ns = sorted(int(n) for n in by_n)
        row = [by_n[n if n in by_n else str(n)] for n in ns]
        ax.plot(ns, [r["flagged"] / out["draws"] for r in row], marker="o", color=color, label=label)
        ax.plot(ns, [r["flagged_by_share"] / out["draws"] for r in row], ls=":", color=color)
    ax.set_xlabel("videos in the new batch")
    ax.set_ylabel(f"share of {out['draws']} draws flagged")
    ax.set_title(f"drift check against {out['pool_videos']} training videos (dotted: share of columns alone)",
                 fontsize=9)
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--pool", type=Path, default=Path("data/clips/synth_pretrain"))
    ap.add_argument("--shifted", type=Path, default=Path("data/clips/samples"))
    ap.add_argument("--batch-videos", type=int, default=12, help="videos in each simulated new batch")
    ap.add_argument("--power", action="store_true", help="measure the power against batch size instead")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0, help="another seed draws other batches")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 3, 4, 6, 8, 12, 16])
    ap.add_argument("--dark-videos", type=int, default=40, help="pool videos re-rendered at 45 %% brightness")
    ap.add_argument("--real-videos", type=int, default=20, help="real-face videos made from the samples")
    ap.add_argument("--work", type=Path, default=Path("reports/drift_power"), help="shifted videos and clips")
    ap.add_argument("--plot", default="docs/drift_power.png")
    args = ap.parse_args()
    p = load_params().drift
    if args.power:
        power(args, p)
        return
    pool = load_clips([args.pool], span=1)
    videos = np.array(sorted(pool["video"].unique()))
    alarms, shares, t0 = 0, [], time.perf_counter()
    for i in range(args.splits):
        rng = np.random.default_rng(1000 + i)
        cur_videos = rng.choice(videos, args.batch_videos, replace=False)
        is_cur = pool["video"].isin(cur_videos)
        ref, cur = drift_tables(pool[~is_cur], pool[is_cur], p.model_copy(update={"seed": i}))
        r = detect_drift(ref, cur, p)
        alarms += r["drift"]
        shares.append(r["drifted_share"])
        print(f"split {i:2d}: drifted share {r['drifted_share']:.2f} {r['drifted_columns']}")
    print(f"false alarms: {alarms} of {args.splits} random splits of {args.pool} ({len(videos)} videos; "
          f"{args.batch_videos} per batch); drifted share median {np.median(shares):.2f}, max {max(shares):.2f}; "
          f"{(time.perf_counter() - t0) / args.splits:.1f} s per check")
    if args.shifted.exists():
        ref, cur = drift_tables(pool, load_clips([args.shifted], span=1), p)
        r = detect_drift(ref, cur, p)
        print(f"{args.shifted} against the pool: drift {r['drift']} (share {r['drifted_share']:.2f}: "
              f"{r['drifted_columns']})")


if __name__ == "__main__":
    main()
