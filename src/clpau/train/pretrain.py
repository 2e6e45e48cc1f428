"""Stage `pretrain`: the method `pretrain.method` (clpau.methods.METHODS) trained by the one loop (loop.py).

`tcl` (the default: CLP's in-clip temporal contrast), `clp` (TCL + CIR), the ablation `cir`, the frame baselines
`simclr` and `moco`, `random` (an untrained encoder) and `supervised` (the upper bound: one backbone per fold, trained
with AU labels on the other folds' subjects). Each method says what it reads (`Method.inputs`); this module builds
that dataset, hands the method to the loop and writes the encoder.

Writes `out_dir/encoder.pt` (loadable with ``torch.load(..., weights_only=True)``), checkpoints every
`ckpt_every` steps to `out_dir/checkpoints/last.ckpt` (atomically), and dvclive metrics under `live_dir`. A rerun
resumes from the last checkpoint; a finished run is not redone.
"""

from __future__ import annotations

from pathlib import Path

import torch

from clpau.core.hardware import device_type, resolve_precision
from clpau.core.params import BenchmarkParams, ConfigError
from clpau.data.augment import finish_views
from clpau.data.datasets import ClipDataset
from clpau.methods import METHODS, Method
from clpau.methods.backbones import build_backbone
from clpau.train.encoder import save_encoder
from clpau.train.fingerprint import fingerprint
from clpau.train.loop import fit, reuse_freed_memory
from clpau.train.params import PretrainParams
from clpau.train.placement import colour_on_host, crop_on_host, decode_on_host


def build_method(p: PretrainParams, **context) -> Method:
    """`p.method` on a new `p.backbone`, from the params sections it reads (`context`: what `supervised` needs)."""
    cls = METHODS[p.method]
    return cls.build(build_backbone(p.backbone), **{name: getattr(p, name) for name in cls.sections}, **context)


def clip_dataset(p: PretrainParams, method: Method, device: str) -> ClipDataset:
    """What a clip or frame method reads: two augmented views of each clip (single frames for `inputs: frames`)."""
    frames = method.inputs == "frames"
    return ClipDataset(p.data, clip_len=1 if frames else p.clip_len, stride=p.frame_stride, cache_dir=p.store_cache,
                       size=p.image_size, seed=p.seed, frame_jitter=0.0 if frames else p.frame_jitter,
                       colour_on_host=colour_on_host(p.compute.colour_on, device, p.compute.crop_on),
                       crop_on_host=crop_on_host(p.compute.crop_on, device),
                       decode_on_host=decode_on_host(p.compute.decode_on, device, p.compute.crop_on),
                       motion=method.uses_motion and not frames)


def run_pretrain(p: PretrainParams, progress: bool = True, log=print, bench: BenchmarkParams | None = None) -> dict:
    """Train `p.method` and write the encoder; `bench` (the labelled benchmark) is used by `supervised` only."""
    from lightning_fabric import Fabric

    reuse_freed_memory()
    precision, why = resolve_precision(p.compute.precision, device_type(p.compute.accelerator))
    log(f"pretrain: precision {precision} ({why}); {torch.get_num_threads()} threads")
    run_info = {"device": device_type(p.compute.accelerator), "precision": precision, "precision_reason": why,
                "threads": torch.get_num_threads()}
    where = {"accelerator": p.compute.accelerator, "devices": p.compute.devices, "num_nodes": p.compute.num_nodes, "precision": precision}
    fabric = Fabric(**where, strategy=p.compute.strategy)
    if fabric.world_size > 1 and p.method == "clp" and p.cir.every > 1:
        # CIR's networks sit out the steps between CIR steps, and DDP must expect parameters without a gradient
        if p.compute.strategy not in ("auto", "ddp", "ddp_find_unused_parameters_true"):
            raise ConfigError(f"pretrain.compute.strategy: {p.compute.strategy!r} on {fabric.world_size} processes cannot train clp "
                             f"with cir.every {p.cir.every} (CIR's networks get no gradient between CIR steps); use "
                             "auto, ddp or ddp_find_unused_parameters_true, or cir.every: 1")
        fabric = Fabric(**where, strategy="ddp_find_unused_parameters_true")
    fabric.launch()
    fabric.seed_everything(p.seed)
    encoder_path = p.out_dir / "encoder.pt"
    (p.out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)

    if p.method == "supervised":
        return _run_supervised(fabric, p, bench or BenchmarkParams(), encoder_path, progress, log, run_info)
    method = build_method(p)
    if method.inputs == "none":  # random: the encoder as initialised
        if fabric.global_rank == 0:
            save_encoder(encoder_path, method.encoder, p, 0)
            from dvclive import Live

            with Live(str(p.live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
                live.log_metric("train/steps", 0)  # a fresh history, so no other run's metrics stand for this one
                live.summary["run"] = run_info
        return {"method": p.method, "steps": 0}
    # a momentum method's queue takes every process's keys
    method.gather = lambda t: fabric.all_gather(t).flatten(0, -2) if t.ndim > 1 else fabric.all_gather(t).flatten()
    dataset = clip_dataset(p, method, fabric.device.type)
    batch = p.batch_clips * p.clip_len if method.inputs == "frames" else p.batch_clips

    def prepare(b: dict) -> dict:
        b["view_q"], b["view_k"] = finish_views(b, p.image_size)  # cropped/coloured here when the loader left it
        # CIR's frames of other people, loaded only when the step runs CIR (clp: 1 in cir.every)
        b["others"] = lambda: fabric.to_device(dataset.others(b["index"], b["epoch"]))
        return b

    steps, resumed = fit(fabric, method, dataset, batch, p, p.out_dir / "checkpoints" / "last.ckpt", p.method,
                         p.batch_clips * p.clip_len, prepare, progress, log, run_info=run_info)
    if fabric.global_rank == 0:
        save_encoder(encoder_path, method.encoder, p, steps)
    return {"method": p.method, "steps": steps, "resumed": resumed, "precision": precision}


def _run_supervised(fabric, p: PretrainParams, bench: BenchmarkParams, encoder_path: Path, progress: bool,
                    log, run_info: dict) -> dict:
    """One model per fold, trained on the other folds' subjects; encoder.pt keeps all of them."""
    from clpau.core.benchmarks import load_labelled, read_folds, split
    from clpau.data.datasets import LabelledFrames

    folds = read_folds(bench.folds)
    labelled = load_labelled(bench, [s for f in folds for s in f], log=log)
    fp = fingerprint(p, bench)
    fold_states, steps = [], 0
    for k, test in enumerate(folds):
        train, _ = split(labelled.subject, folds, k)
        dataset = LabelledFrames(labelled.subset(train), size=p.image_size, seed=p.seed)
        fabric.seed_everything(p.seed + k)
        model = build_method(p, n_aus=len(bench.au_list))
        batch = p.batch_clips * p.clip_len
        # the folds log one after another into one history (steps k·max_steps + step)
        steps, _ = fit(fabric, model, dataset, batch, p, p.out_dir / "checkpoints" / f"fold{k}.ckpt",
                          f"supervised fold {k} (test {test[0]}…)", batch, None,
                          progress, log, step_offset=k * p.max_steps, append_log=k > 0, fp=fp, run_info=run_info)
        fold_states.append({n: v.detach().cpu() for n, v in model.encoder.state_dict().items()})
    if fabric.global_rank == 0:
        save_encoder(encoder_path, model.encoder, p, steps, fold_state_dicts=fold_states)
    return {"method": "supervised", "steps": steps, "folds": len(folds)}
