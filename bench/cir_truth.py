"""Swap fidelity of a trained clp model's warp against the renderer's truth (issues 33, 41; src/clpau/eval/swap_fidelity.py).

    python bench/cir_truth.py [--ckpt models/checkpoints/last.ckpt] [--params params.yaml] [--pairs 300]
                              [--seed 0] [--out reports/cir_truth]

The model is rebuilt from --params' `pretrain` section and loaded from the Fabric checkpoint (which, unlike
encoder.pt, holds CIR's warp decoders). Pairs: a labelled frame x_A with some facial action (AU intensities summing
to ≥ 1) of a subject of the first fold, and another subject B's frame with the least action (y); ỹ* renders B with
A's AU intensities in B's head pose, aligned as `extract` aligns (for `swap_flow: motion`, B's own intensities
plus A's motion from A's resting frame x_ref to x_A). The self term: frames s, t of a first-fold video
as far apart as training pairs them (half a clip). The AU read-out is fitted on the frames of the other folds'
subjects. Writes summary.json, pairs.png (A, B, swap, truth, the AU flow) and a markdown table on stdout.
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
        compare,
        normalise,
        r2,
        render_truth,
        ridge_cv,
        ridge_predict,
        self_warps,
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
    motion = model.cir.motion
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
        # motion: B's own action plus A's motion from its resting frame (the renderer's range: 0-2)
        action = np.clip(au[j] + au[i] - au[rest[labelled.subject[i]]], 0, 2) if motion else au[i]
        y = render_truth(mesh, seed_of[labelled.video[j]], action, pose[j], synth.size, faces, template)
        if y is not None:
            a_idx.append(i), b_idx.append(j), truths.append(y)
    a_idx, b_idx = np.array(a_idx), np.array(b_idx)
    ref_idx = np.array([rest[s] for s in labelled.subject[a_idx]])
    side = p.image_size
    target = to_pixels(normalise(np.stack(truths), side))  # ỹ* through the encoder's resize, as x_A and y are
    x_a, y_b = normalise(crops[a_idx], side), normalise(crops[b_idx], side)
    out = swaps(model, x_a, y_b, normalise(crops[ref_idx], side))
    images = {"swap": to_pixels(out["swap"]), "y": to_pixels(y_b), "x_a": to_pixels(x_a)}
    scores = {k: compare(v, target) for k, v in images.items()}
    closer = {m: float(np.mean((scores["swap"][m] < scores["y"][m]) & (scores["swap"][m] < scores["x_a"][m]))
                       if m == "l1" else np.mean((scores["swap"][m] > scores["y"][m])
                                                 & (scores["swap"][m] > scores["x_a"][m])))
              for m in ("l1", "ssim")}

    # the self term: warp(x_s, φ_st) against x_t, beside x_s itself, for frames half a clip apart in one video
    gap = (p.clip_len // 2) * p.frame_stride
    at = {(v, f): i for i, (v, f) in enumerate(zip(labelled.video, labelled.frame, strict=True))}
    s_idx = np.array([i for i in np.flatnonzero(test) if (labelled.video[i], labelled.frame[i] + gap) in at])
    s_idx = rng.permutation(s_idx)[: args.pairs]
    t_idx = np.array([at[(labelled.video[i], labelled.frame[i] + gap)] for i in s_idx])
    x_s, x_t = normalise(crops[s_idx], side), normalise(crops[t_idx], side)
    truth_t = to_pixels(x_t)
    warped = compare(to_pixels(self_warps(model, x_s, x_t)), truth_t)["l1"]
    unmoved = compare(to_pixels(x_s), truth_t)["l1"]

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
    summary = {"ckpt": str(shown), "step": int(state.get("step", -1)), "method": p.method,
               "swap_flow": p.cir.swap_flow, "pairs": len(a_idx),
               "tried": tried, "side": side, "seconds": round(time.perf_counter() - t0, 1),
               **{f"{k}_{m}": float(v[m].mean()) for k, v in scores.items() for m in v},
               **{f"swap_closest_share_{m}": v for m, v in closer.items()},
               "self_pairs": len(s_idx), "self_gap_frames": gap, "self_warp_l1": float(warped.mean()),
               "self_unmoved_l1": float(unmoved.mean()), "self_closer_share": float(np.mean(warped < unmoved)),
               "readout_kept": carry["r2_a_swap"] / carry["r2_a_x_a"] if carry["r2_a_x_a"] > 0 else float("nan"),
               **carry}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    picture(args.out / "pairs.png", images["x_a"][:6], images["y"][:6], target[:6], images["swap"][:6],
            out["flow"][:6].numpy())

    print(f"| {p.method} step {summary['step']}, {len(a_idx)} pairs at {side} px | L1 to ỹ* ↓ | SSIM to ỹ* ↑ |")
    print("|---|---|---|")
    made = "W_au(a(x_ref), a(x_A))" if motion else "W_au(a(y), a(x_A))"
    for k, name in (("swap", f"swap ỹ = warp(y, {made})"), ("y", "y: B's frame unmoved"),
                    ("x_a", "x_A: A's frame")):
        print(f"| {name} | {summary[k + '_l1']:.4f} | {summary[k + '_ssim']:.4f} |")
    print(f"\nswap closer to ỹ* than both references: {closer['l1']:.0%} of pairs by L1, {closer['ssim']:.0%} by SSIM")
    print(f"self term ({len(s_idx)} pairs {gap} frames apart): warp(x_s) L1 to x_t {summary['self_warp_l1']:.4f}, "
          f"x_s unmoved {summary['self_unmoved_l1']:.4f}; warp closer on {summary['self_closer_share']:.0%}")
    print(f"AU read-out R² (20 renderer intensities): AU code a: from x_A {carry['r2_a_x_a']:.3f}, from ỹ "
          f"{carry['r2_a_swap']:.3f}; features f: from x_A {carry['r2_f_x_a']:.3f}, from ỹ {carry['r2_f_swap']:.3f}")
    print(f"written to {args.out}/ ({summary['seconds']} s)")


def picture(path: Path, a: np.ndarray, b: np.ndarray, truth: np.ndarray, swap: np.ndarray,
            flow: np.ndarray) -> None:
    """Rows of pairs: A's frame, B's resting frame, the swap, the truth ỹ*, and the AU flow (arrows on B's frame,
    in pixels, scaled ×3 to be seen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [("A: x_A", a), ("B: y", b), ("swap ỹ = warp(y, W_au)", swap), ("truth ỹ*: B with A's action", truth),
            ("AU flow on y (×3)", b)]
    fig, axes = plt.subplots(len(a), len(cols), figsize=(1.7 * len(cols), 1.7 * len(a)), squeeze=False)
    side = a.shape[1]
    for r in range(len(a)):
        for c, (title, images) in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(images[r], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
        g = flow.shape[-1]
        centres = (np.arange(g) + 0.5) * side / g - 0.5
        px = flow[r] * side / 2  # grid_sample units -> pixels; ỹ(p) = y(p + φ): skin moves by −φ
        axes[r][-1].quiver(*np.meshgrid(centres, centres), -3 * px[0], 3 * px[1], color="yellow", angles="xy",
                           scale_units="xy", scale=1, width=0.006)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
