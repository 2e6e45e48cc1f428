"""Swap fidelity: does CIR put one person's facial action on another person's face? (issues 33 and 41)

Cross-identity reconstruction (methods/cir.py) warps a frame y of person B by the AU displacement decoded from the
codes of y and of A's frame x_A: ỹ = warp(y, W_au(a(y), a(x_A))), "person B making the facial action of A's frame"
in B's own pose. No real dataset holds that image; the synthetic benchmark can render it exactly:

    ỹ* = render(identity of B, AU intensities of A's frame, head pose of B's frame), aligned as `extract` aligns
         (dlib detection, 68 landmarks, the eye-centre similarity onto the crop template)

For pairs (x_A: a labelled frame of A with some action, y: the frame of another person B with the least), the swap
is compared with ỹ* at the warp's resolution (the encoder's input size), beside the two references that tell a
decoder that moved the right pixels from one that did not:

    y      B's frame itself: what a decoder that moves nothing gives
    x_A    A's frame: what a decoder that ignored B would have to paint

by L1 (pixels in [0, 1]) and SSIM (luma). For `swap_flow: motion` the swap moves y by A's motion from A's
resting frame x_ref to x_A, and ỹ* renders B with y's intensities plus that motion's (A's at x_A less A's at
x_ref, within the renderer's range). The warp does its job on a pair when ỹ is closer to ỹ* than both. The
self term likewise: for two frames s, t of one video (as far apart as training pairs them), is warp(x_s, φ_st)
closer to x_t than x_s itself? Whether the swap carries A's action: a ridge read-out of the renderer's 20 AU
intensities from a(x), fitted on the frames of the training subjects (its penalty chosen by leaving one training
fold out), scored by R² on a(x_A) and on a(ỹ) of the held-out pairs; the same from the encoder's features f (what
evaluation probes).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from clpau.data.augment import MEAN, STD, augment_view

LUMA = np.array([0.299, 0.587, 0.114])


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, sigma: float = 1.5, border: int = 5) -> float:
    """Mean SSIM of two RGB images (H, W, 3) on their luma (Wang et al. 2004: Gaussian window σ 1.5, K1 0.01,
    K2 0.03), `border` pixels at the edges left out."""
    x, y = (np.asarray(f, np.float64) @ LUMA for f in (a, b))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = gaussian_filter(x, sigma), gaussian_filter(y, sigma)
    sxx = gaussian_filter(x * x, sigma) - mx * mx
    syy = gaussian_filter(y * y, sigma) - my * my
    sxy = gaussian_filter(x * y, sigma) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s[border:-border, border:-border].mean())


def normalise(crops: np.ndarray, size: int) -> torch.Tensor:
    """(N, S, S, 3) uint8 aligned crops -> (N, 3, size, size), resized and normalised as evaluation feeds them."""
    return torch.stack([augment_view(c[None], None, size, augment=False)[0] for c in crops])


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """Normalised images (N, 3, H, W) -> (N, H, W, 3) float in [0, 1]."""
    return (x.detach().float() * STD + MEAN).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def compare(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per image L1 and SSIM of pred against truth, both (N, H, W, 3) in [0, 1]."""
    return {"l1": np.abs(pred - truth).mean(axis=(1, 2, 3)),
            "ssim": np.array([ssim(p, t, data_range=1.0) for p, t in zip(pred, truth, strict=True)])}


@torch.no_grad()
def swaps(model, x_a: torch.Tensor, y: torch.Tensor, x_ref: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The swap ỹ and its flow (module docstring) for normalised inputs x_a, y (N, 3, S, S) of a model with CIR's
    networks (`model.cir`); and for the read-out, the AU codes a = g(f(·)) and the encoder's features f(·) — what
    evaluation probes — of x_A and of ỹ. A model trained with `swap_flow: motion` moves y by A's motion from
    x_ref (a frame of A's, required then) to x_A: ỹ = warp(y, W_au(a(x_ref), a(x_A)))."""
    model.eval()
    f_x, f_y = model.encoder(x_a), model.encoder(y)
    a_x, a_y = model.projector(f_x), model.projector(f_y)
    if model.cir.motion:
        if x_ref is None:
            raise ValueError("a model trained with swap_flow: motion swaps A's motion: give A's reference frame x_ref")
        a_y = model.projector(model.encoder(x_ref))
    swap, flow = model.cir.swap(y, a_y, a_x)
    f_swap = model.encoder(swap)
    return {"swap": swap, "flow": flow, "a_x": a_x, "a_swap": model.projector(f_swap), "f_x": f_x,
            "f_swap": f_swap}


@torch.no_grad()
def self_warps(model, x_s: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
    """warp(x_s, φ_st): frame s moved to look like frame t of the same video (normalised inputs (N, 3, S, S))."""
    model.eval()
    a_s, a_t = model.projector(model.encoder(x_s)), model.projector(model.encoder(x_t))
    return model.cir.reconstruct(x_s, x_t, a_s, a_t)[0]


def ridge_fit(z: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression of targets y (N, k) on features z (N, d), the features standardised: (weights, mean, std)."""
    mu, sd = z.mean(0), z.std(0) + 1e-6
    zs = (z - mu) / sd
    zs1 = np.hstack([zs, np.ones((len(zs), 1))])
    reg = alpha * np.eye(zs1.shape[1])
    reg[-1, -1] = 0  # no penalty on the intercept
    w = np.linalg.solve(zs1.T @ zs1 + reg, zs1.T @ y)
    return w, mu, sd


ALPHAS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def ridge_cv(z: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas=ALPHAS):
    """`ridge_fit` with the penalty chosen by leaving one group (a fold of training subjects) out at a time: a
    read-out that must work on people it was not fitted on. Returns (the fit on all of z, the chosen alpha)."""
    def held_out(alpha: float) -> float:
        return float(np.mean([r2(ridge_predict(ridge_fit(z[groups != g], y[groups != g], alpha), z[groups == g]),
                                 y[groups == g]) for g in np.unique(groups)]))
    best = max(alphas, key=held_out)
    return ridge_fit(z, y, best), best


def ridge_predict(model: tuple[np.ndarray, np.ndarray, np.ndarray], z: np.ndarray) -> np.ndarray:
    w, mu, sd = model
    return np.hstack([(z - mu) / sd, np.ones((len(z), 1))]) @ w


def r2(pred: np.ndarray, y: np.ndarray) -> float:
    """R² over all targets together (variance-weighted), 1 = perfect, 0 = the mean."""
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def align_rendered(rgb: np.ndarray, faces, template) -> np.ndarray | None:
    """A rendered frame aligned as `extract` aligns a video frame: the largest dlib detection, its 68 landmarks, the
    eye-centre similarity onto `template` -> (S, S, 3) uint8 crop; None without a detection."""
    from clpau.video.detect import align, detect, landmarks

    gray = np.ascontiguousarray(np.clip(np.rint(rgb @ LUMA), 0, 255).astype(np.uint8))
    found = detect(faces, gray, 1.0, 0.0)
    if not found:
        return None
    box = max(found, key=lambda d: d[0][2] - d[0][0])[0]
    return align(rgb, landmarks(faces, gray, box), template)[0]


def render_truth(mesh, identity_seed: int, au: np.ndarray, pose: np.ndarray, size: int, faces,
                 template) -> np.ndarray | None:
    """ỹ*: the person of `identity_seed` making the facial action `au` (20 intensities) in head pose `pose` (6),
    rendered at `size` px as synth renders its videos, then aligned (`align_rendered`)."""
    from clpau.synth.render import Identity, Pose, Renderer

    rgb = Renderer(mesh, Identity.sample(identity_seed), size=size).render(au, Pose(*pose))
    return align_rendered(rgb, faces, template)
