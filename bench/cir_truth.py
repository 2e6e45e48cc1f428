"""Swap fidelity of a trained clp model against the renderer's truth (issue 33 §1; src/clpau/eval/swap_fidelity.py).

    python bench/cir_truth.py [--ckpt models/checkpoints/last.ckpt] [--params params.yaml] [--pairs 300]
                              [--seed 0] [--out reports/cir_truth]

The model is rebuilt from --params' `pretrain` section and loaded from the Fabric checkpoint (which, unlike
encoder.pt, holds CIR's identity encoder and decoder). Pairs: a labelled frame x_A with some facial action (AU
intensities summing to ≥ 1) of a subject of the first fold, and another subject B's frame with the least action
(y_B); ỹ* renders B with A's AU intensities and head pose, aligned as `extract` aligns. The AU read-out is fitted on
the frames of the other folds' subjects. Writes summary.json, pairs.png (A, B, swap, truth, references) and a
markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, default=ROOT / "models/checkpoints/last.ckpt")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "reports/cir_truth")
    args = ap.parse_args()

    from clpau.config import load_params
    from clpau.core.benchmarks import load_labelled, read_folds
    from clpau.eval.swap_fidelity import (
        at_side,
        compare,
        normalise,
        r2,
        render_truth,
        ridge_cv,
        ridge_predict,
        swaps,
        to_pixels,
    )
    from clpau.synth.benchmark import _model as mesh_model
    from clpau.train.pretrain import build_method
    from clpau.video.detect import FaceModels, Template

    t0 = time.perf_counter()
    params = load_params(args.params)
    p, bench, synth = params.pretrain, params.benchmark, params.synth
    model = build_method(p)
    if getattr(model, "cir", None) is None:
        raise SystemExit(f"pretrain.method {p.method!r} has no CIR networks: give the params of a clp or cir run")
    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    folds = read_folds(bench.folds)
    labelled = load_labelled(bench, [s for f in folds for s in f], log=lambda *_: None)
    truth = {v: np.load(synth.out_dir / "labelled" / f"{v}.npz") for v in np.unique(labelled.video)}
    au = np.stack([truth[v]["au"][f] for v, f in zip(labelled.video, labelled.frame, strict=True)])
    pose = np.stack([truth[v]["pose"][f] for v, f in zip(labelled.video, labelled.frame, strict=True)])
    seed_of = {v: int(truth[v]["identity_seed"]) for v in truth}
    crops = labelled.crops()

    test = np.isin(labelled.subject, folds[0])
    rest = {s: np.flatnonzero(labelled.subject == s)[np.argmin(au[labelled.subject == s].sum(1))]
            for s in np.unique(labelled.subject)}  # each subject's frame with the least action
    rng = np.random.default_rng(args.seed)
    candidates = np.flatnonzero(test & (au.sum(1) >= 1.0))
    faces, template, mesh = FaceModels(), Template.from_params(params.extract), mesh_model(synth)
    a_idx, b_idx, truths = [], [], []
    tried = 0
    for i in rng.permutation(candidates):
        if len(a_idx) == args.pairs:
            break
        others = [s for s in rest if s != labelled.subject[i]]
        j = rest[others[rng.integers(len(others))]]
        tried += 1
        y = render_truth(mesh, seed_of[labelled.video[j]], au[i], pose[i], synth.size, faces, template)
        if y is not None:
            a_idx.append(i), b_idx.append(j), truths.append(y)
    a_idx, b_idx = np.array(a_idx), np.array(b_idx)
    side = p.cir.decoder_size
    target = at_side(np.stack(truths), side)
    x_a, y_b = normalise(crops[a_idx], p.image_size), normalise(crops[b_idx], p.image_size)
    out = swaps(model, x_a, y_b)
    scores = {k: compare(to_pixels(out[k]), target) for k in ("swap", "ref_self", "ref_rest")}
    closer = {m: float(np.mean((scores["swap"][m] < scores["ref_self"][m]) & (scores["swap"][m] < scores["ref_rest"][m]))
                       if m == "l1" else np.mean((scores["swap"][m] > scores["ref_self"][m])
                                                 & (scores["swap"][m] > scores["ref_rest"][m])))
              for m in ("l1", "ssim")}

    # the AU read-out: fitted on a(x) of the other folds' frames, scored on the pairs
    train = np.flatnonzero(~test)
    with torch.no_grad():
        model.eval()
        f_train = torch.cat([model.encoder(normalise(crops[c], p.image_size))
                             for c in np.array_split(train, max(1, len(train) // 256))])
        a_train = model.projector(f_train)
    carry = {}
    fold_of = {s: k for k, f in enumerate(folds) for s in f}
    groups = np.array([fold_of[s] for s in labelled.subject[train]])
    for code, z in (("a", a_train), ("f", f_train)):
        readout, carry[f"alpha_{code}"] = ridge_cv(z.numpy(), au[train], groups)
        carry[f"r2_{code}_x_a"] = r2(ridge_predict(readout, out[f"{code}_x"].numpy()), au[a_idx])
        carry[f"r2_{code}_swap"] = r2(ridge_predict(readout, out[f"{code}_swap"].numpy()), au[a_idx])

    ckpt = args.ckpt.resolve()
    shown = ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else args.ckpt  # no machine paths in the record
    summary = {"ckpt": str(shown), "step": int(state.get("step", -1)), "method": p.method, "pairs": len(a_idx),
               "tried": tried, "decoder_size": side, "seconds": round(time.perf_counter() - t0, 1),
               **{f"{k}_{m}": float(v[m].mean()) for k, v in scores.items() for m in v},
               **{f"swap_closest_share_{m}": v for m, v in closer.items()}, **carry}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    picture(args.out / "pairs.png", crops[a_idx[:6]], crops[b_idx[:6]], np.stack(truths[:6]),
            {k: to_pixels(out[k][:6]) for k in ("swap", "ref_self", "ref_rest")})

    print(f"| {p.method} step {summary['step']}, {len(a_idx)} pairs | L1 to ỹ* ↓ | SSIM to ỹ* ↑ |")
    print("|---|---|---|")
    for k, name in (("swap", "swap D(a_A, u_B)"), ("ref_self", "A's own reconstruction D(a_A, u_A)"),
                    ("ref_rest", "B's resting face D(a_B, u_B)")):
        print(f"| {name} | {summary[k + '_l1']:.4f} | {summary[k + '_ssim']:.4f} |")
    print(f"\nswap closer to ỹ* than both references: {closer['l1']:.0%} of pairs by L1, {closer['ssim']:.0%} by SSIM")
    print(f"AU read-out R² (20 renderer intensities): AU code a: from x_A {carry['r2_a_x_a']:.3f}, from ỹ "
          f"{carry['r2_a_swap']:.3f}; features f: from x_A {carry['r2_f_x_a']:.3f}, from ỹ {carry['r2_f_swap']:.3f}")
    print(f"written to {args.out}/ ({summary['seconds']} s)")


def picture(path: Path, a: np.ndarray, b: np.ndarray, truth: np.ndarray, decoded: dict[str, np.ndarray]) -> None:
    """Rows of pairs: A's frame, B's resting frame, the swap, the truth ỹ*, and the two references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [("A: x_A", a / 255), ("B: y_B", b / 255), ("swap ỹ = D(a_A, u_B)", decoded["swap"]),
            ("truth ỹ*: B with A's action", truth / 255), ("D(a_A, u_A)", decoded["ref_self"]),
            ("D(a_B, u_B)", decoded["ref_rest"])]
    fig, axes = plt.subplots(len(a), len(cols), figsize=(1.7 * len(cols), 1.7 * len(a)), squeeze=False)
    for r in range(len(a)):
        for c, (title, images) in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(images[r], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
