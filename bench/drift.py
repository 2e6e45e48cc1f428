"""False alarms of the drift check: split the training pool's videos at random into reference and current, 20 times,
and count how often `clpau drift`'s decision fires (it should almost never), then compare the pool with the real
sample videos (a different camera, lighting and population: it must fire).

    python bench/drift.py [--splits 20] [--pool data/clips/synth_pretrain] [--shifted data/clips/samples]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from clpau.config import load_params
from clpau.data import load_clips
from clpau.drift import detect_drift, drift_tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--pool", type=Path, default=Path("data/clips/synth_pretrain"))
    ap.add_argument("--shifted", type=Path, default=Path("data/clips/samples"))
    ap.add_argument("--batch-videos", type=int, default=12, help="videos in each simulated new batch")
    args = ap.parse_args()
    p = load_params().drift
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
