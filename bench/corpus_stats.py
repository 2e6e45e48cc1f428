"""What the synthetic corpora give temporal contrast to learn from, from the renderer's exact ground truth.

    python bench/corpus_stats.py [--spans 8x1 8x2 8x4 16x2 16x4] [--out reports/corpus_stats.json]

For the unlabelled pretraining corpus and the labelled benchmark (data/raw/synth/{pretrain,labelled}/*.npz, written
by `clpau synth`), per evaluated AU (occurrence = intensity >= synth.occurrence_threshold):
- base rate: the share of frames where the AU is present;
- events per minute: onsets (an absent frame followed by a present one, or a video starting present) per minute;
- event duration: median and mean length in seconds of a run of present frames;
and for clip spans LENxSTRIDE (frames per clip x frames between them; pretraining's own is pretrain.clip_len x
pretrain.frame_stride), the share of in-clip frame pairs whose evaluated AU occurrence vectors differ — the pairs
on which an in-clip negative separates different facial actions rather than the same action at another moment —
and the same share for the speech-only AUs 25/26 (mouth motion of talking, not evaluated).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from clpau.config import load_params
from clpau.synth.benchmark import BP4D_AUS
from clpau.synth.render import AU_INDEX


def runs(present: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], present.astype(np.int8), [0]]))
    return (np.nonzero(edges == -1)[0] - np.nonzero(edges == 1)[0]).tolist()


def pair_difference(occ: list[np.ndarray], clip_len: int, stride: int) -> float:
    """Share of frame pairs inside clips (every start) whose occurrence rows differ, pooled over videos."""
    differ = total = 0
    span = (clip_len - 1) * stride + 1
    for o in occ:
        for s in range(0, len(o) - span + 1):
            clip = o[s: s + span: stride]
            same = (clip[:, None, :] == clip[None, :, :]).all(-1)
            iu = np.triu_indices(clip_len, 1)
            differ += int((~same[iu]).sum())
            total += len(iu[0])
    return differ / total if total else float("nan")


def population(folder: Path, threshold: float, fps: float, spans: list[tuple[int, int]]) -> dict:
    aus = [AU_INDEX[f"AU{a:02d}"] for a in BP4D_AUS]
    speech = [AU_INDEX["AU25"], AU_INDEX["AU26"]]
    occ, occ_speech, frames = [], [], 0
    for npz in sorted(folder.glob("*.npz")):
        au = np.load(npz)["au"]
        occ.append(au[:, aus] >= threshold)
        occ_speech.append(au[:, speech] >= threshold)
        frames += len(au)
    if not occ:
        raise SystemExit(f"corpus_stats: no ground truth in {folder}: run `dvc repro synth` first")
    minutes = frames / fps / 60
    per_au = {}
    for j, a in enumerate(BP4D_AUS):
        lengths = [n for o in occ for n in runs(o[:, j])]
        per_au[f"AU{a}"] = {
            "base_rate": round(float(np.mean(np.concatenate([o[:, j] for o in occ]))), 4),
            "events_per_min": round(len(lengths) / minutes, 2),
            "duration_median_s": round(float(np.median(lengths)) / fps, 2) if lengths else None,
            "duration_mean_s": round(float(np.mean(lengths)) / fps, 2) if lengths else None,
        }
    any_au = np.concatenate([o.any(1) for o in occ])
    return {"videos": len(occ), "frames": frames, "minutes": round(minutes, 2),
            "share_of_frames_with_any_au": round(float(any_au.mean()), 4), "per_au": per_au,
            "in_clip_pairs_differ": {f"{n}x{s}": round(pair_difference(occ, n, s), 4) for n, s in spans},
            "in_clip_pairs_differ_speech_au25_26": {f"{n}x{s}": round(pair_difference(occ_speech, n, s), 4)
                                                    for n, s in spans}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", nargs="+", default=None, help="clip spans LENxSTRIDE (default: pretraining's own, "
                                                             "then 8x2 8x4 16x2 16x4)")
    ap.add_argument("--out", type=Path, default=Path("reports/corpus_stats.json"))
    args = ap.parse_args()
    params = load_params()
    own = f"{params.pretrain.clip_len}x{params.pretrain.frame_stride}"
    spans = [tuple(int(v) for v in s.split("x")) for s in (args.spans or dict.fromkeys([own, "8x2", "8x4", "16x2",
                                                                                           "16x4"]))]
    s = params.synth
    result = {"pretraining_span": own, "occurrence_threshold": s.occurrence_threshold, "fps": s.fps,
              **{name: population(s.out_dir / name, s.occurrence_threshold, s.fps, spans)
                 for name in ("pretrain", "labelled")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name in ("pretrain", "labelled"):
        r = result[name]
        print(f"{name}: {r['videos']} videos, {r['minutes']} min, frames with any evaluated AU "
              f"{r['share_of_frames_with_any_au']:.1%}")
        print("  AU    base rate  events/min  duration median/mean (s)")
        for au, v in r["per_au"].items():
            print(f"  {au:<5} {v['base_rate']:9.3f}  {v['events_per_min']:10.2f}  {v['duration_median_s']} / "
                  f"{v['duration_mean_s']}")
        print("  in-clip pairs whose evaluated AUs differ: " + ", ".join(
            f"{k} {v:.1%}" for k, v in r["in_clip_pairs_differ"].items()))
        print("  ... whose speech AUs 25/26 differ:        " + ", ".join(
            f"{k} {v:.1%}" for k, v in r["in_clip_pairs_differ_speech_au25_26"].items()))


if __name__ == "__main__":
    main()
