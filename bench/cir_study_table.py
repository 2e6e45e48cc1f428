"""The table of bench/cir_study.sh's runs: one row per setting and budget, mean ± std over the seeds it ran.

    python bench/cir_study_table.py [reports/cir_study]
    python bench/cir_study_table.py docs/cir_study          # the runs docs/results.md reports (their JSON kept)

Columns: mean F1, same_subject_nn, cross_subject_knn_f1 (metrics/evaluate.json), the swap's L1 to the rendered
truth beside its two references, the share of pairs where the swap is closer than both, the AU code's read-out R²
from x_A and from the swap (bench/cir_truth.py), the share of self pairs the warp brought closer (warp decoder
only), and the mean step time. Std: the sample std (n − 1). The references are the warp decoder's (B's frame y
unmoved, A's frame x_A) or, for the pixel decoder's runs kept in docs/cir_study, D(a_A, u_A) and D(a_B, u_B).
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from clpau.eval.scores import spread


def cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {spread(values):.{digits}f}"


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/cir_study")
    runs = defaultdict(list)
    for d in sorted(root.iterdir()):
        m = re.fullmatch(r"cir-(.+)-(\d+)-s(\d+)", d.name)
        if m and (d / "evaluate.json").exists():
            runs[(m[1], int(m[2]))].append(d)
    print("| setting | steps | seeds | mean F1 ↑ | same_subject_nn ↓ | cross_subject_knn_f1 ↑ | swap L1 to ỹ* "
          "(swap / reference 1 / reference 2) | swap closer than both (L1) | R² a(x_A) → a(ỹ) | self: warp closer "
          "| step ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (name, steps), dirs in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ev = [json.loads((d / "evaluate.json").read_text()) for d in dirs]
        st = [json.loads((d / "step.json").read_text()) for d in dirs]
        # truth/summary.json as bench/cir_truth.py writes it; truth.json in the copy kept in docs/cir_study
        tr = [json.loads(t.read_text()) for d in dirs for t in (d / "truth/summary.json", d / "truth.json") if t.exists()]
        seeds = ",".join(re.sub(r".*-s", "", d.name) for d in dirs)
        refs = ("swap", "y", "x_a") if tr and "y_l1" in tr[0] else ("swap", "ref_self", "ref_rest")
        l1 = " / ".join(cell([t[f"{k}_l1"] for t in tr]) for k in refs) if tr else "–"
        warp = [100 * t["self_closer_share"] for t in tr if "self_closer_share" in t]
        print(f"| {name} | {steps} | {seeds} | {cell([e['f1_mean'] for e in ev])} "
              f"| {cell([e['same_subject_nn'] for e in ev])} | {cell([e['cross_subject_knn_f1'] for e in ev])} "
              f"| {l1} | {cell([100 * t['swap_closest_share_l1'] for t in tr], 0) + ' %' if tr else '–'} "
              f"| {cell([t['r2_a_x_a'] for t in tr]) + ' → ' + cell([t['r2_a_swap'] for t in tr]) if tr else '–'} "
              f"| {cell(warp, 0) + ' %' if warp else '–'} | {cell([s['step_ms'] for s in st], 0)} |")


if __name__ == "__main__":
    main()
