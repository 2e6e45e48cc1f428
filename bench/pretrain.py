"""Pretraining throughput: img/s of one training step for `clp`, `simclr` and `supervised` (same backbone, same
images per step), and the data loader's own frames/s (needs `make repro` for data/clips/synth_pretrain).

    python bench/pretrain.py [--steps 10] [--backbone resnet_small]
    python bench/pretrain.py --device cuda --backbone resnet18 --image-size 112 --batch-clips 64 --no-loader

Goal (issue 4): the clp step at >= 0.7x the supervised step's img/s; the loader >= 5x what the trainer needs.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from clpau.backbone import build_backbone
from clpau.config import load_params
from clpau.data import ClipDataset
from clpau.pretrain import Supervised, build_model


def step_rate(model, make_batch, run, steps: int, images: int, device: str = "cpu") -> float:
    model = model.to(device, memory_format=torch.channels_last)  # as the training loop does
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-3)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in make_batch().items()}
    for i in range(steps + 3):
        if i == 3:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = run(model, batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return images * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--batch-clips", type=int, default=None)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--no-loader", action="store_true", help="step rates only (no extracted data needed)")
    args = ap.parse_args()
    p = load_params().pretrain
    updates = {"backbone": args.backbone, "image_size": args.image_size, "batch_clips": args.batch_clips}
    p = p.model_copy(update={k: v for k, v in updates.items() if v is not None})
    torch.manual_seed(0)
    b, t, s = p.batch_clips, p.clip_len, p.image_size
    images = b * t
    print(f"backbone {p.backbone}, {images} images of {s}px per step ({b} clips x {t} frames), "
          f"{torch.get_num_threads()} threads, bf16 autocast")
    rates = {}
    clip = lambda: {"q": torch.randn(b, t, 3, s, s), "k": torch.randn(b, t, 3, s, s),  # noqa: E731
                    "ids": torch.arange(b), "other": torch.randn(b, 3, s, s)}
    frames = lambda: {"q": torch.randn(images, 1, 3, s, s), "k": torch.randn(images, 1, 3, s, s),  # noqa: E731
                      "ids": torch.arange(images), "other": None}
    for name, make in (("clp", clip), ("clp/4", clip), ("tcl", clip), ("cir", clip), ("simclr", frames),
                       ("moco", frames)):
        method, _, every = name.partition("/")  # clp/4: cross-identity reconstruction on every 4th step
        model = build_model(p.model_copy(update={"method": method, "cir_every": int(every or 1)})).train()
        rates[name] = step_rate(model, make, lambda m, x: m(x["q"], x["k"], x["ids"], x["other"]),
                                args.steps, images, args.device)
    n_aus = len(load_params().benchmark.au_list)
    sup = Supervised(build_backbone(p.backbone), n_aus).train()
    rates["supervised"] = step_rate(sup, lambda: {"x": torch.randn(images, 3, s, s),
                                                  "y": torch.randint(0, 2, (images, n_aus)).float()},
                                    lambda m, x: m(x["x"], x["y"]), args.steps, images, args.device)
    for k, v in rates.items():
        print(f"  {k:<11} {v:7.0f} img/s   ({v / rates['supervised']:.2f}x supervised)")
    if args.no_loader:
        return
    ds = ClipDataset(p.data, clip_len=t, size=s)
    loader = DataLoader(ds, batch_size=b, shuffle=True, num_workers=p.num_workers,
                        persistent_workers=p.num_workers > 0)
    n, t0 = 0, None
    for i, batch in enumerate(loader):
        if i == 2:
            t0, n = time.perf_counter(), 0
        n += batch["view_q"].shape[0] * t
        if i == 2 + 3 * args.steps:
            break
    loader_rate = n / (time.perf_counter() - t0)
    print(f"  loader ({p.num_workers} workers): {loader_rate:.0f} frames/s (each with 2 views) = "
          f"{loader_rate / rates['clp']:.1f}x what the clp step consumes")


if __name__ == "__main__":
    main()
