"""Pretraining throughput: img/s of one training step for `clp`, `simclr` and `supervised` (same backbone, same
images per step), and the data loader's own frames/s (needs `make repro` for data/clips/synth_pretrain).

    python bench/pretrain.py [--steps 16] [--rounds 7] [--backbone resnet_small]
    python bench/pretrain.py --device cuda --backbone resnet18 --image-size 112 --batch-clips 64 --workers 8
    python bench/pretrain.py --no-loader --profile clp      # and where the clp step's time goes, by operator

Goal (issue 4): the clp step at >= 0.7x the supervised step's img/s; the loader >= 5x what the trainer needs. Each row
also gives what the method adds to a supervised step in ms, which moves less than the ratio when the machine's speed
does. The `forward-only` row is the cost of a second view without gradients (MoCo's and TCL's keys), and with it the
ceiling no two-view method can pass on this device.

Methods take turns step by step, so the steps compared run within a second of each other: on a shared machine the
speed drifts by tens of percent within a minute, and timing one method after another turned that drift into ratios
that moved by ±0.1 between runs. A round is `--steps` steps of every method; img/s is the median round, a ratio the
median over rounds of the method's rate over the supervised step's rate in the same round, with the rounds' range.
The loader (the training run's dataset, augmentations and all, and on every cir_every-th batch the frames of other
people that CIR swaps in) is paired the same way with clp steps: a round is `--steps` clp steps, then `--steps` batches.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from clpau.config import PretrainParams, load_params
from clpau.core.hardware import autocast_dtype, resolve_precision
from clpau.data.augment import finish_views
from clpau.data.datasets import ClipDataset
from clpau.methods.backbones import build_backbone
from clpau.methods.supervised import Supervised
from clpau.train.loop import adamw, reuse_freed_memory
from clpau.train.placement import colour_on_host, crop_on_host
from clpau.train.pretrain import build_method
from clpau.train.sampling import epoch_loader


def training_step(model, batch: dict, run: Callable, device: str, dtype=None) -> Callable[[], None]:
    model = model.to(device, memory_format=torch.channels_last)  # as the training loop does
    opt = adamw(model.parameters(), 1e-3, 1e-4)  # as the training loop's
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def step() -> None:
        with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = run(model, batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def forward_step(backbone, images: int, size: int, device: str, dtype=None) -> Callable[[], None]:
    backbone = backbone.to(device, memory_format=torch.channels_last)
    x = torch.randn(images, 3, size, size, device=device)

    @torch.no_grad()
    def step() -> None:
        with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            backbone(x)
    return step


def warm_up(step: Callable[[], None]) -> None:
    for _ in range(2):  # allocator, oneDNN/cuDNN kernel choice, torch.compile
        step()


def seconds(step: Callable[[], None], steps: int, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def profile(step: Callable[[], None], device: str, rows: int = 15) -> None:
    """Where a step's time goes, by operator (forward and backward): which kernels dominate, and on a GPU how much
    is launches and host syncs rather than compute."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(3):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=16,
                    help="timed steps per method and round; rounded up to a multiple of cir_every, so that every "
                         "round of clp holds its share of CIR steps exactly")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the median is reported")
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--batch-clips", type=int, default=None)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--no-loader", action="store_true", help="step rates only (no extracted data needed)")
    ap.add_argument("--data", nargs="+", type=Path, default=None,
                    help="extract outputs the loader reads (default: params.yaml's pretrain.data)")
    ap.add_argument("--colour-on", choices=["loader", "trainer"], default=None,
                    help="where the loader's views get their colour jitter (params' colour_on; default as its auto: "
                         "the trainer with --device cuda, else the loader)")
    ap.add_argument("--crop-on", choices=["loader", "trainer"], default=None,
                    help="where the views are cropped and resized (params' crop_on; default as its auto: the trainer "
                         "with --device cuda, else the loader); trainer takes the colour jitter there too")
    ap.add_argument("--workers", type=int, default=2, help="loader processes for the loader's second figure")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16-mixed", "16-mixed", "32-true"],
                    help="autocast of the steps (default auto: as `clpau pretrain` picks it on this device)")
    ap.add_argument("--profile", metavar="METHOD", default=None,
                    help="also print the torch profiler's top operators of 3 steps of METHOD (e.g. clp, supervised)")
    args = ap.parse_args()
    reuse_freed_memory()  # as `clpau pretrain` does
    p = load_params().pretrain
    updates = {"backbone": args.backbone, "image_size": args.image_size, "batch_clips": args.batch_clips,
               "data": args.data}
    p = p.model_copy(update={k: v for k, v in updates.items() if v is not None})
    args.steps = -(-args.steps // p.cir.every) * p.cir.every
    precision, why = resolve_precision(args.precision, args.device)
    dtype = autocast_dtype(precision)
    torch.manual_seed(0)
    b, t, s = p.batch_clips, p.clip_len, p.image_size
    images = b * t
    print(f"backbone {p.backbone}, {images} images of {s}px per step ({b} clips x {t} frames), "
          f"{torch.get_num_threads()} threads, {precision} ({why}), median of {args.rounds} rounds x {args.steps} steps")
    clip = {"q": torch.randn(b, t, 3, s, s), "k": torch.randn(b, t, 3, s, s), "ids": torch.arange(b),
            "other": torch.randn(b, 3, s, s)}
    frames = {"q": torch.randn(images, 1, 3, s, s), "k": torch.randn(images, 1, 3, s, s),
              "ids": torch.arange(images), "other": None}
    schedules = [n for n in (2, 4, 8, 16) if n != p.cir.every]
    print(f"  (clp: params.yaml's CIR schedule, cir.every {p.cir.every}, cir.frames {p.cir.frames}; "
          f"clp-everyN: CIR on every Nth step instead; clp-full: CIR on every step, on 2 frames per clip; "
          f"clp-compiled: with compile_keys; clp-8x1-4096: the defaults up to f1fbef8: CIR on every 8th step "
          f"on 1 frame per clip, a queue of 4096)")
    steps = {}
    momentum = {"key_encoder": "momentum"}
    variants = [("clp", clip, {}), ("clp-compiled", clip, {"tcl": {**momentum, "compile_keys": True}})]
    variants += [(f"clp-every{n}", clip, {"cir": {"every": n}}) for n in schedules]
    variants.append(("clp-8x1-4096", clip, {"cir": {"every": 8, "frames": 1},
                                            "tcl": {**momentum, "queue_size": 4096}}))
    for name, batch, update in (*variants, ("clp-full", clip, {"cir": {"every": 1, "frames": 2}}),
                                ("tcl", clip, {}), ("cir", clip, {}), ("simclr", frames, {}), ("moco", frames, {})):
        dumped = p.model_dump()
        sections = {k: {**dumped[k], **v} for k, v in update.items()}
        model = build_method(PretrainParams.model_validate({**dumped, **sections, "method": name.split("-")[0]})).train()
        steps[name] = training_step(model, batch, lambda m, x: m({"view_q": x["q"], "view_k": x["k"], "clip_id": x["ids"],
                                                                  "others": lambda: x["other"]}),
                                    args.device, dtype)
    n_aus = len(load_params().benchmark.au_list)
    steps["supervised"] = training_step(
        Supervised(build_backbone(p.backbone), n_aus).train(),
        {"x": torch.randn(images, 3, s, s), "y": torch.randint(0, 2, (images, n_aus)).float()},
        lambda m, x: m({"image": x["x"], "labels": x["y"]}), args.device, dtype)
    # what a second view costs: one gradient-free forward of the same images (MoCo's and TCL's keys)
    steps["forward-only"] = forward_step(build_backbone(p.backbone).train(), images, s, args.device, dtype)
    for step in steps.values():
        warm_up(step)
    if args.profile:
        profile(steps[args.profile], args.device)
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        spent = dict.fromkeys(steps, 0.0)
        for _ in range(args.steps):  # one step of each method in turn: the steps compared run within a second
            for name, step in steps.items():
                spent[name] += seconds(step, 1, args.device)
        for name, total in spent.items():
            times[name].append(total / args.steps)
    rates = {name: images / statistics.median(ts) for name, ts in times.items()}
    # each ratio from the same round's supervised time, seconds apart: the machine's drift cancels in the pair
    sup = times["supervised"]
    ratios = {name: sorted(s / t for s, t in zip(sup, ts, strict=True)) for name, ts in times.items()}
    # what each method adds to a supervised step, in ms: steadier than the ratio when the machine's speed moves
    extra = {name: statistics.median(1e3 * (t - s) for s, t in zip(sup, ts, strict=True)) for name, ts in times.items()}
    for name, v in rates.items():
        spread = f"{images / max(times[name]):.0f}-{images / min(times[name]):.0f}"
        r = ratios[name]
        print(f"  {name:<12} {v:7.0f} img/s  (rounds {spread})  {statistics.median(r):.2f}x supervised "
              f"(rounds {r[0]:.2f}-{r[-1]:.2f}), {extra[name]:+6.1f} ms a step")
    ceiling = statistics.median(s / (s + f) for f, s in zip(times["forward-only"], sup, strict=True))
    print(f"  ceiling for a method with a gradient-free second view (supervised step + one forward): "
          f"{ceiling:.2f}x supervised")
    # what clp adds moves little with the machine's speed, the supervised step a lot: say at which speed of the
    # supervised step clp's ratio reaches 0.7 (S / (S + E) >= 0.7 where S >= 7E/3)
    need_ms = extra["clp"] * 7 / 3
    print(f"  clp adds {extra['clp']:.1f} ms a step: 0.7x holds while the supervised step takes >= {need_ms:.1f} ms "
          f"(<= {images / need_ms * 1e3:.0f} img/s); in this run it took {1e3 * statistics.median(sup):.1f} ms")
    if args.no_loader:
        return
    # the training run's dataset: same frame stride, per-frame jitter and seed
    crop_host = crop_on_host(args.crop_on or "auto", args.device)
    host = colour_on_host(args.colour_on or "auto", args.device, "loader" if crop_host else "trainer")
    colour_on = "loader" if host else "trainer"
    ds = ClipDataset(p.data, clip_len=t, stride=p.frame_stride, size=s, seed=p.seed, frame_jitter=p.frame_jitter,
                     colour_on_host=host, crop_on_host=crop_host)
    batches = endless(ds, b, 0, p.cir.every)
    warm_up(lambda: next(batches))
    views = {k: v.to(args.device) for k, v in next(batches).items() if isinstance(v, torch.Tensor)}
    crop_on = "loader" if crop_host else "trainer"
    sent = ("view_q", "view_k") if crop_host else ("frames", "crop_q", "crop_k")
    print(f"  crop on the {crop_on}, colour jitter on the {colour_on}: a batch as the loader sends it "
          f"{sum(views[k].nbytes for k in sent) / 2**20:.1f} MiB")
    if colour_on == "trainer":  # what the training step then does first, on its device
        finishes = {"eager": lambda: finish_views(views, s)}
        if args.device == "cuda":  # what fusing its elementwise passes would be worth
            compiled = torch.compile(finish_views, dynamic=False)
            finishes["compiled"] = lambda: compiled(views, s)
        for how, finish in finishes.items():
            try:
                warm_up(finish)
                took = seconds(finish, args.steps, args.device)
            except Exception as e:  # a compiler missing on the machine: report, and go on
                print(f"  {how} finish: failed ({type(e).__name__}: {str(e)[:200]})")
                continue
            print(f"  {'crop and ' if not crop_host else ''}colour on the trainer ({args.device}, {how}): "
                  f"{1e3 * took:.2f} ms a batch, {took * rates['clp'] / images:.0%} of a clp step")
    # in the training process (the CPU default): in each round, --steps clp steps and then --steps batches, so that
    # the two rates compared are taken seconds apart
    paired = []
    clp = steps["clp"] if colour_on == "loader" else lambda: (finish_views(views, s), steps["clp"]())
    for _ in range(args.rounds):
        step = seconds(clp, args.steps, args.device)
        paired.append((step, seconds(lambda: next(batches), args.steps, "cpu")))
    loader_rate = images / statistics.median(load for _, load in paired)
    r = sorted(step / load for step, load in paired)
    print(f"  loader (in the training process): {loader_rate:.0f} frames/s (each with 2 views) = "
          f"{statistics.median(r):.1f}x what the clp step consumes (rounds {r[0]:.1f}-{r[-1]:.1f})")
    # loader processes: they load while the clock waits, so they are timed alone (the first batches start them)
    batches = endless(ds, b, args.workers, p.cir.every)
    warm_up(lambda: next(batches))
    loader_rate = images / seconds(lambda: next(batches), 3 * args.steps, "cpu")
    print(f"  loader ({args.workers} worker processes, alone): {loader_rate:.0f} frames/s = "
          f"{loader_rate / rates['clp']:.1f}x the clp step's median rate")


def endless(dataset: ClipDataset, batch: int, workers: int, cir_every: int):
    """Training batches as the training loop draws them, from one loader across epochs: every `cir_every`-th with
    the frames of other people that a CIR step loads in the training process."""
    for n, views in enumerate(epoch_loader(dataset, batch, workers, seed=0, count=10**9)):
        if n % cir_every == 0:
            views["other"] = dataset.others(views["index"], views["epoch"])
        yield views


if __name__ == "__main__":
    main()
