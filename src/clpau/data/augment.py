"""The views' augmentations, on the host or batched on the trainer's device.

Augmentations keep facial action intact: scale/translation jitter, colour, blur, rare greyscale — no horizontal
flip (AUs can be asymmetric and the labels would have to flip too). One crop, colour and blur is drawn per view and
clip and applied to all its T frames; on top, each frame gets its own small shift (`frame_jitter`, a share of the
crop side). The shift matters: landmark-based alignment leaves each frame a slightly different sub-pixel position,
a per-frame signature that the temporal contrast (tell frame t from t' of the same clip) would otherwise learn in
place of facial action — with it off, `tcl` learned nothing a linear AU probe could use (README, results).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from clpau.data.jpeg_store import decode_batch

MEAN, STD = 0.5, 0.25


def augment_view(frames: np.ndarray, rng: np.random.Generator | None, size: int, augment: bool,
                 frame_jitter: float = 0.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """One augmentation for all of `frames` (N, S0, S0, 3) uint8 — the shards' layout; a memory map will do — ->
    (N, 3, size, size) normalised float (written into `out` when given): `crop_resize`, then `colour_jitter`."""
    x = crop_resize(frames, rng, size, augment, frame_jitter).to(torch.float32, memory_format=torch.contiguous_format)
    if augment:  # the normalisation is folded into the colour matrix: no passes of its own
        return colour_jitter(x, rng, scale=1 / 255, mean=MEAN, std=STD, out=out)
    return torch.mul(x, 1 / (255 * STD), out=x if out is None else out).sub_(MEAN / STD)


def draw_crop(rng: np.random.Generator | None, s0: int, n: int, augment: bool,
              frame_jitter: float = 0.0) -> np.ndarray:
    """The geometric half of an augmentation, drawn: one scale/translation crop of side 0.85–1 × S0 for all n
    frames, each frame moved by its own up to ±frame_jitter·S0 px -> (n, 3) float32 (top, left, side) in pixels
    of the S0 x S0 frame; the whole frames without augmentation (no draw)."""
    if not augment:
        return np.tile(np.array([0, 0, s0], np.float32), (n, 1))
    scale = rng.uniform(0.85, 1.0)
    side = max(8, int(round(s0 * scale)))
    top = int(rng.integers(0, s0 - side + 1))
    left = int(rng.integers(0, s0 - side + 1))
    j = int(round(frame_jitter * s0))
    if j and n > 1:
        dy = np.clip(top + rng.integers(-j, j + 1, n), 0, s0 - side)
        dx = np.clip(left + rng.integers(-j, j + 1, n), 0, s0 - side)
    else:
        dy, dx = np.full(n, top), np.full(n, left)
    return np.stack([dy, dx, np.full(n, side)], axis=1).astype(np.float32)


def crop_resize(frames: np.ndarray, rng: np.random.Generator | None, size: int, augment: bool,
                frame_jitter: float = 0.0) -> torch.Tensor:
    """The geometric half of an augmentation (`draw_crop`) applied to `frames` (N, S0, S0, 3) uint8 -> (N, 3, size,
    size) uint8 (channels_last), resized with antialiasing."""
    boxes = draw_crop(rng, frames.shape[1], len(frames), augment, frame_jitter).astype(int)
    side = boxes[0, 2]
    if (boxes[:, :2] != boxes[0, :2]).any():
        # cropped in numpy: a slice there costs a fraction of a torch call's overhead
        frames = np.stack([f[a: a + side, b: b + side] for f, (a, b, _) in zip(frames, boxes, strict=True)])
    else:
        top, left = boxes[0, :2]
        frames = frames[:, top: top + side, left: left + side]
    # (N, H, W, 3) seen as (N, 3, H, W) is the channels_last layout: the uint8 resize then takes torch's SIMD
    # antialiasing path, 5x faster than on floats. (A copy only where numpy must make one: a read-only memory map
    # is never handed to torch.)
    x = torch.from_numpy(np.require(frames, np.uint8, ["C", "W"])).permute(0, 3, 1, 2)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


LUMA = (0.299, 0.587, 0.114)  # they sum to 1
_TO_GREY = np.array([LUMA] * 3)  # each channel becomes the luma
_EYE = np.eye(3)


COLOUR_PARAMS = 14  # a view's colour jitter: its 3x3 matrix, 3 weights of the frame mean, an offset, the blur coin
COLOUR_KEYS = {"view_q": "colour_q", "view_k": "colour_k"}
CROP_KEYS = {"view_q": "crop_q", "view_k": "crop_k"}


def crop_on_device(frames: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """`crop_resize` on the trainer's device, for a batch: frames (B, T, S0, S0, 3) uint8 and each frame's box
    (B, T, 3) (top, left, side in pixels, `draw_crop`) -> (B, T, 3, size, size) float in 0–255, by bilinear sampling
    at F.interpolate's pixel centres (align_corners False). Where the crops shrink, they are sampled k times finer
    (k = ceil(S0 / size)) and averaged k x k, in place of interpolate's antialiasing."""
    b, t, s0 = frames.shape[:3]
    n, k = b * t, max(1, -(-s0 // size))
    x = frames.reshape(n, s0, s0, 3).permute(0, 3, 1, 2).float()
    boxes = boxes.reshape(n, 3).to(x.dtype)
    # output coordinate u in [-1, 1] -> input (2·(left + (u + 1)/2·side))/S0 − 1
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = boxes[:, 2] / s0
    theta[:, 0, 2] = (2 * boxes[:, 1] + boxes[:, 2]) / s0 - 1
    theta[:, 1, 2] = (2 * boxes[:, 0] + boxes[:, 2]) / s0 - 1
    grid = F.affine_grid(theta, [n, 3, k * size, k * size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if k > 1:
        out = F.avg_pool2d(out, k)
    return out.reshape(b, t, 3, size, size)


def colour_jitter(x: torch.Tensor, rng: np.random.Generator, scale: float = 1.0, mean: float = 0.0,
                  std: float = 1.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """Saturation, contrast, brightness (each ×0.7–1.3), greyscale (p 0.1), a 3x3 binomial blur (p 0.3), clipped to
    [0, 1], then normalised, (y − mean) / std; one draw for all frames of x (N, 3, S, S), whose values times `scale`
    lie in [0, 1] (uint8 values: 1/255). Written into `out` (N, 3, S, S) when given."""
    return apply_colour(x[None], draw_colour(rng, scale, mean, std), mean, std, None if out is None else out[None])[0]


def draw_colour(rng: np.random.Generator | None, scale: float = 1.0, mean: float = 0.0,
                std: float = 1.0) -> np.ndarray:
    """One view's colour jitter (`colour_jitter`) drawn, as COLOUR_PARAMS float32 numbers for `apply_colour`; no
    rng: the normalisation alone.

    Saturation, contrast, brightness and greyscale are each linear in a pixel's colour: together they are one 3x3
    matrix and an offset per frame, applied in one pass (1.4x faster loading than one pass each). The input's
    scale and the normalisation are affine too, so they are folded into the same matrix and offset, and the clip
    to [0, 1] becomes one to [−mean/std, (1 − mean)/std]."""
    if rng is None:
        return np.array([*(np.eye(3) * scale / std).ravel(), 0, 0, 0, -mean / std, 0], np.float32)
    b, c, s = rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)
    grey, blur = rng.random() < 0.1, rng.random() < 0.3
    # the 3x3 algebra in numpy: a dozen torch calls on 3x3 tensors cost more than the pass over the pixels
    sat = s * _EYE + (1 - s) * _TO_GREY  # x + (1 − s)·(grey − x)
    mix = b * c * scale * sat  # then x' = b·(c·(sat·x − frame_mean) + frame_mean)
    if grey:
        mix = _TO_GREY @ mix  # the offset stays: grey(offset, offset, offset) = offset
    gain, shift = b * (1 - c) / std, -mean / std  # offset' = (b·(1 − c)·frame_mean − mean) / std
    mix = mix / std
    if blur:  # the blur's weights sum to 16: its division folded in here too
        mix, gain, shift = mix / 16, gain / 16, shift / 16
    # per frame: the saturated image's mean, which contrast keeps: mean over channels of sat·(channel means)
    weights = sat.mean(0) * scale * gain
    return np.array([*mix.ravel(), *weights, shift, float(blur)], np.float32)


def apply_colour(x: torch.Tensor, params: torch.Tensor | np.ndarray, mean: float = 0.0, std: float = 1.0,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """Views x (B, V, 3, H, W) — uint8 crops or float — coloured by their draws `params` (B, COLOUR_PARAMS), one per
    view of V frames, on x's device -> float (B, V, 3, H, W) in [−mean/std, (1 − mean)/std] (into `out` when
    given). The loader's case, one view drawn on the host, takes the draw as numpy (COLOUR_PARAMS,): torch calls on
    14 numbers would cost more than the pass over the pixels. A batch reads nothing back from the device: on a
    GPU the blur is computed for every view and kept where drawn."""
    b, v, c, h, w = x.shape
    n = b * v
    x = x.reshape(n, c, h * w).float()  # a view when x is float and contiguous already
    means = x.mean(2)
    if isinstance(params, np.ndarray):
        mix = torch.from_numpy(params[:9].reshape(1, 3, 3)).expand(n, 3, 3)
        # each frame's offset: its channel means weighted, plus the view's shift
        offset = torch.mv(means, torch.from_numpy(params[9:12])).add_(float(params[12]))
        blurred = bool(params[13])
    else:
        params = params.to(torch.float32)
        mix = params[:, :9].view(b, 1, 3, 3).expand(b, v, 3, 3).reshape(n, 3, 3)
        offset = torch.baddbmm(params[:, 12, None, None], means.view(b, v, 3), params[:, 9:12, None])
        blurred = None  # per view
    out = torch.empty((b, v, c, h, w), device=x.device) if out is None else out
    coloured = out if blurred is False else torch.empty_like(out)
    torch.baddbmm(offset.view(n, 1, 1).expand(n, 3, 1), mix, x, out=coloured.view(n, 3, h * w))
    if blurred is None:
        smooth = _binomial_sum(coloured.view(n, c, h, w)).view(b, v, c, h, w)
        torch.where(params[:, 13].view(b, 1, 1, 1, 1) > 0, smooth, coloured, out=out)
    elif blurred:
        _binomial_sum(coloured.view(n, c, h, w), out=out.view(n, c, h, w))
    return out.clamp_(-mean / std, (1 - mean) / std)


def finish_views(batch: dict, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch's two views as normalised float: as they come when the loader coloured them, else
    coloured here, on the batch's device, from the loader's uint8 crops and colour draws (`colour_on_host`) — or
    first cropped here from the clip's frames (`crop_on_host` False; `size` the views' side), which a clip store's
    batch may bring as JPEG bytes to decode first (`decode_on_host` False)."""
    if "colour_q" not in batch:
        return batch["view_q"], batch["view_k"]
    if "jpeg" in batch:  # a store's frames as JPEG bytes: decoded here, on the batch's device
        frames = decode_batch(batch["jpeg"], batch["jpeg_lengths"], batch["crop_q"].device)
        batch = {**batch, "frames": frames.unflatten(0, batch["crop_q"].shape[:2])}
    if "frames" in batch:
        views = {key: crop_on_device(batch["frames"], batch[CROP_KEYS[key]], size or batch["frames"].shape[2])
                 for key in ("view_q", "view_k")}
    else:
        views = batch
    q, k = (apply_colour(views[key], batch[COLOUR_KEYS[key]], MEAN, STD) for key in ("view_q", "view_k"))
    return q, k


def _binomial_sum(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """16 × the 3x3 binomial blur ([1 2 1] in each direction, edges replicated), as two separable passes of shifted
    adds: a depthwise convolution of the same kernel was the loader's single largest cost."""
    x = F.pad(x, (1, 1, 0, 0), mode="replicate")
    x = torch.add(x[..., :-2], x[..., 2:]).add_(x[..., 1:-1], alpha=2)
    x = F.pad(x, (0, 0, 1, 1), mode="replicate")
    return torch.add(x[..., :-2, :], x[..., 2:, :], out=out).add_(x[..., 1:-1, :], alpha=2)
