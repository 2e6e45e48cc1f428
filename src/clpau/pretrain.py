"""Stage `pretrain`: self-supervised pretraining with Lightning Fabric — one loop, read top to bottom.

Methods (`pretrain.method`): `tcl` (the default: CLP's in-clip temporal contrast, clp.py + tcl.py), `clp` (TCL +
CIR, cir.py), the ablation `cir`, the frame baselines `simclr` (NT-Xent, simclr.py) and `moco` (MoCo v2: the CLP
module with single frames — no in-clip negatives, no ranking, no CIR — is exactly a momentum encoder with a queue),
`random` (an untrained encoder) and `supervised` (the upper bound, supervised.py: one backbone per fold, trained
with AU labels on the other folds' subjects).

Writes `out_dir/encoder.pt` (loadable with ``torch.load(..., weights_only=True)``), checkpoints every
`ckpt_every` steps to `out_dir/checkpoints/last.ckpt` (atomically), and dvclive metrics under `live_dir`. A rerun
resumes from the last checkpoint; a finished run is not redone.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .backbone import build_backbone
from .clp import CLP
from .config import BenchmarkParams, ConfigError, PretrainParams
from .data import ClipDataset, JpegStore, clip_table, collate, finish_views, is_store
from .fileio import hash_modules, save_torch
from .hardware import device_type, resolve_precision
from .simclr import SimCLR
from .supervised import Supervised
from .tcl import tcl_loss
from .time_contrast import time_contrastive_loss

FRAME_METHODS = {"simclr", "moco"}


def build_model(p: PretrainParams, gather=None) -> torch.nn.Module:
    backbone = build_backbone(p.backbone)
    feat = backbone.out_dim
    if p.method == "simclr":
        return SimCLR(backbone, feat, p.dim, p.simclr_tau)
    if p.method == "moco":
        # MoCo v2 whatever clp's reading says: a momentum encoder and a queue, one-way, every queue key a negative
        # (with single frames the in-clip margins and the ranking have nothing to act on)
        return CLP(backbone, feat, dim=p.dim, queue_size=p.queue_size, momentum=p.momentum, use_tcl=True,
                   use_cir=False, online_keys=False, symmetric=False, same_person=False,
                   compile_keys=p.compile_keys, tcl={"tau": p.moco_tau}, gather=gather, tcl_fn=tcl_loss)
    if p.tcl_variant == "time_contrast":
        tcl_fn, tcl = time_contrastive_loss, {"tau": p.tau, "pos_window": p.pos_window, "neg_window": p.neg_window}
    else:
        tcl_fn, tcl = tcl_loss, {"tau": p.tau, "m_max": p.m_max, "delta_scale": p.delta_scale,
                                 "rank_margin": p.rank_margin, "rank_weight": p.rank_weight}
        if p.margin_by == "motion":
            tcl["motion_scale"] = p.motion_scale
    return CLP(backbone, feat, dim=p.dim, queue_size=p.queue_size, momentum=p.momentum,
               use_tcl=p.method in {"clp", "tcl"}, use_cir=p.method in {"clp", "cir"},
               decoder_size=p.decoder_size, cir_frames=p.cir_frames,
               cir_every=p.cir_every, same_person=p.negatives == "same_person",
               symmetric=p.symmetric, online_keys=p.key_encoder == "online", compile_keys=p.compile_keys, tcl=tcl,
               lambdas=(p.lambda_self, p.lambda_swap, p.lambda_cycle, p.lambda_id), gather=gather, tcl_fn=tcl_fn)


def epoch_batches(n: int, batch: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                  chunks: np.ndarray | None = None) -> list[list[int]]:
    """One epoch's batches for process `rank` of `world_size`: a shuffle of the n items drawn from (seed, epoch)
    alone, cut into full batches and dealt out in turn, as many to every process (DDP steps in lockstep). Nothing
    carries over from the epochs before, so a run resumed in the middle of epoch e draws e's batches exactly as the
    uninterrupted run did.

    Items of a clip store (`chunks`: each item's chunk) are dealt by chunk instead: process r reads the items of
    chunks r, r + world_size, … (the same chunks every epoch, so a streamed store fetches each chunk once, into one
    process's cache), in the epoch's shuffle order, as many full batches as the process with the fewest items has.
    With one process that is the shuffle above, batch for batch."""
    order = np.random.default_rng((seed, epoch)).permutation(n)
    if chunks is None or world_size == 1:
        dealt = batches_per_epoch(n, batch, world_size) * world_size
        return [order[b * batch: (b + 1) * batch].tolist() for b in range(rank, dealt, world_size)]
    mine = order[chunks[order] % world_size == rank]
    per = batches_per_epoch(n, batch, world_size, chunks)
    return [mine[b * batch: (b + 1) * batch].tolist() for b in range(per)]


def batches_per_epoch(n: int, batch: int, world_size: int = 1, chunks: np.ndarray | None = None) -> int:
    """Full batches of n items that each of `world_size` processes gets in an epoch (`epoch_batches`)."""
    if chunks is None or world_size == 1:
        return n // batch // world_size
    return int(np.bincount(chunks % world_size, minlength=world_size).min()) // batch


class EpochBatch(list):
    """A batch's indices and the epoch they were drawn for. A dataset's `__getitems__` augments them as that epoch
    says (ClipDataset), so one loader, and its worker processes, can serve many epochs: `set_epoch` reaches only
    the process it is called in."""

    def __init__(self, indices, epoch: int):
        super().__init__(indices)
        self.epoch = epoch

    def __reduce__(self):  # to the loader's workers, with its epoch
        return EpochBatch, (list(self), self.epoch)


class RunBatches:
    """The batch sampler of a run: `count` batches from batch `skip` of epoch `epoch` on, epoch after epoch
    (`epoch_batches`), each an EpochBatch."""

    def __init__(self, n: int, batch: int, seed: int, epoch: int, skip: int, count: int, rank: int = 0,
                 world_size: int = 1, chunks: np.ndarray | None = None):
        self.args, self.start, self.count = (n, batch, seed, rank, world_size, chunks), (epoch, skip), count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        n, batch, seed, rank, world_size, chunks = self.args
        epoch, skip = self.start
        left = self.count
        while left > 0:
            for indices in epoch_batches(n, batch, seed, epoch, rank, world_size, chunks)[skip:][:left]:
                yield EpochBatch(indices, epoch)
                left -= 1
            epoch, skip = epoch + 1, 0


def epoch_loader(dataset, batch: int, num_workers: int, seed: int, epoch: int = 0, skip: int = 0, rank: int = 0,
                 world_size: int = 1, count: int | None = None, chunks: np.ndarray | None = None) -> DataLoader:
    """Batches (`epoch_batches`) from batch `skip` of epoch `epoch` on: the rest of that epoch, or `count` batches
    across as many epochs as they take. One loader for a whole run: restarting the worker processes at every epoch
    cost the GPU loop up to a third of its time where an epoch is a few dozen batches. A dataset with
    `__getitems__` takes each batch's epoch from it (EpochBatch); one without augments as `set_epoch` says, so give
    it one epoch at a time (count None)."""
    per_epoch = batches_per_epoch(len(dataset), batch, world_size, chunks)
    batches = RunBatches(len(dataset), batch, seed, epoch, skip, per_epoch - skip if count is None else count,
                         rank, world_size, chunks)
    # pinned host memory: Fabric copies batches to a GPU with non_blocking=True, which only overlaps from pinned pages
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate,
                      pin_memory=torch.cuda.is_available())


LOGGED_TERMS = ("loss", "nce", "rank", "self", "swap", "cycle", "id", "queue_fill")
TRAINING_CODE = ("pretrain.py", "clp.py", "tcl.py", "cir.py", "simclr.py", "supervised.py", "time_contrast.py",
                 "data.py", "backbone.py")


def colour_on_host(colour_on: str, device_type: str, crop_on: str = "loader") -> bool:
    """Whether the loader applies the views' colour jitter (`colour_on`; auto: on a CPU, where the trainer's batched
    pass costs what it saves the loader) rather than the trainer's device; never where the crop is the trainer's."""
    if not crop_on_host(crop_on, device_type):
        return False
    return colour_on == "loader" or (colour_on == "auto" and device_type == "cpu")


def decode_on_host(decode_on: str, device_type: str, crop_on: str = "loader") -> bool:
    """Whether the loader decodes a clip store's JPEG frames (`decode_on`; auto: unless the trainer is a CUDA device
    with torchvision's nvjpeg decoder) rather than the trainer's device; never where the crop is the loader's."""
    if crop_on_host(crop_on, device_type):
        return True
    if decode_on == "auto":
        from .data import gpu_jpeg_decoder

        return not (device_type == "cuda" and gpu_jpeg_decoder() is not None)
    return decode_on == "loader"


def crop_on_host(crop_on: str, device_type: str) -> bool:
    """Whether the loader crops and resizes the views (`crop_on`; auto: on a CPU) rather than the trainer's device."""
    return crop_on == "loader" or (crop_on == "auto" and device_type == "cpu")


def fingerprint(p: PretrainParams, bench: BenchmarkParams | None = None) -> str:
    """What a checkpoint depends on: the parameters (but where and how often things are written, the loader's
    processes, where the colour jitter, the crop and a store's decoding run and whether the keys' forward is compiled; `precision` as resolved on
    this machine), the training code and the data's clip tables — when any of them changes DVC reruns the stage,
    and an old checkpoint must not stand in for the new run."""
    relevant = p.model_dump(mode="json", exclude={"num_workers", "log_every", "ckpt_every", "out_dir", "live_dir",
                                                  "compile_keys", "colour_on", "crop_on", "decode_on",
                                                  "store_cache"})
    # the precision the run trains in, not the word `auto`: a finished fp32 run of an AVX2 machine must not stand in
    # for this machine's bf16 run (the checkpoint folder persists across `dvc repro --force`)
    relevant["precision"] = resolve_precision(p.precision, device_type(p.accelerator))[0]
    if p.method == "supervised":
        relevant["benchmark"] = (bench or BenchmarkParams()).model_dump(mode="json")
    h = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode())
    hash_modules(h, TRAINING_CODE)
    tables = [clip_table(d, p.store_cache) for d in p.data]
    tables += [JpegStore(d, p.store_cache).file("store.json") for d in p.data if is_store(d)]  # its codec
    if p.method == "supervised":
        tables.append((bench or BenchmarkParams()).clips / "clips.parquet")
    for t in tables:
        h.update(t.read_bytes() if t.exists() else b"missing")
    return h.hexdigest()[:16]


def adamw(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, fused: one kernel over all tensors instead of a loop of about a dozen
    per tensor (clp's 72 tensors: 5.5 → 0.8 ms per step on this CPU; bench/pretrain.py). The same update to 1e-7."""
    params = [q for q in params if q.requires_grad]
    fused = all(q.device.type in ("cpu", "cuda") for q in params) or None  # elsewhere: torch's default
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


def reuse_freed_memory() -> bool:
    """Have glibc's malloc keep the memory a training step frees for the next step, rather than hand it back to the
    kernel and fault it in again page by page. Returns whether the setting took (glibc on Linux only).

    A step allocates and frees megabytes of activations. By default glibc hands the free top of its heap back to the
    kernel once it exceeds twice the mmap threshold (which follows the largest block freed, up to 32 MiB), and the
    next step's first writes fault it back in: 4,600-8,800 page faults and 9-14 ms of kernel time per tcl step on this
    2-core CPU, 3,200-3,700 per supervised step. Fixed thresholds (blocks up to 32 MiB from the heap, trim only
    above 1 GiB free) bring both to under 200 (`clpau pretrain`, 200 steps: 1439 / 1447 -> 1525 / 1496 img/s). The
    process keeps its peak heap for its lifetime, which a training run reaches every step anyway."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, say): leave its allocator alone
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def lr_at(step: int, p: PretrainParams) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < p.warmup_steps:
        return p.lr * (step + 1) / p.warmup_steps
    progress = (step - p.warmup_steps) / max(1, p.max_steps - p.warmup_steps)
    return p.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def save_encoder(path: Path, backbone: torch.nn.Module, p: PretrainParams, step: int,
                 fold_state_dicts: list[dict] | None = None) -> None:
    """The downstream artefact: backbone weights + what is needed to rebuild it; plain tensors and strings.
    `supervised` also stores one backbone per fold (trained without that fold's subjects)."""
    state = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
    blob = {"state_dict": state, "backbone": p.backbone, "method": p.method, "image_size": p.image_size,
            "feat_dim": backbone.out_dim, "step": step}
    if fold_state_dicts is not None:
        blob["fold_state_dicts"] = fold_state_dicts
    save_torch(blob, path)


def encoder_folds(path: Path | str) -> int:
    """How many per-fold backbones `path` holds (`supervised`); 0 for one shared backbone."""
    return len(torch.load(path, map_location="cpu", weights_only=True).get("fold_state_dicts") or [])


def load_encoder(path: Path | str, fold: int | None = None) -> tuple[torch.nn.Module, dict]:
    """The backbone (for `supervised`, the one that never saw fold `fold`'s subjects) and its metadata."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    net = build_backbone(blob["backbone"])
    folds = blob.get("fold_state_dicts")
    if folds is not None and fold is None:
        raise ValueError(f"{path} holds one supervised encoder per fold: pass fold=0..{len(folds) - 1}")
    net.load_state_dict(folds[fold] if folds is not None else blob["state_dict"])
    meta = {k: v for k, v in blob.items() if k not in ("state_dict", "fold_state_dicts")}
    meta["folds"] = len(folds) if folds is not None else 0
    return net.eval(), meta


def _train(fabric, model, dataset, batch: int, p: PretrainParams, ckpt_path: Path, desc: str,
           images_per_step: int, step_fn, progress: bool, log, step_offset: int = 0,
           append_log: bool = False, fp: str | None = None, run_info: dict | None = None) -> tuple[int, bool]:
    """The loop: warm-up + cosine lr, Fabric backward, dvclive every log_every steps, atomic checkpoints every
    ckpt_every steps; resumes from `ckpt_path` when it exists. Returns (steps done, resumed). Several runs may log
    into one dvclive history one after another (`step_offset`, `append_log`: the supervised folds). `run_info`
    (device, precision and why, threads) goes into the dvclive summary, so `dvc exp show` shows what each run ran
    on."""
    from dvclive import Live
    from tqdm import tqdm

    if fabric.world_size > 1 and fabric.device.type == "cuda":
        # momentum encoders must not see per-GPU batch statistics (MoCo's BN leak); torch's SyncBN is GPU-only,
        # so CPU processes (gloo: tests, debugging) keep per-process statistics
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(memory_format=torch.channels_last)  # 1.6x on this CPU in bf16 (backbone.py), and for GPUs
    # a clip store's chunks, dealt to the processes (epoch_batches); None: extract's shards, any clip to any process
    chunks = dataset.chunks() if fabric.world_size > 1 and hasattr(dataset, "chunks") else None
    per_epoch = batches_per_epoch(len(dataset), batch, fabric.world_size, chunks)
    if per_epoch == 0:  # not one step an epoch: the loop would never end
        if chunks is not None and len(np.unique(chunks)) < fabric.world_size:
            raise ConfigError(f"pretrain.data: the store's {len(np.unique(chunks))} chunks cannot give each of "
                              f"{fabric.world_size} processes its own; write it with a smaller store.chunk_mb")
        raise ConfigError(f"pretrain.batch_clips: {len(dataset)} training items make no batch of {batch}"
                          + (f" for each of {fabric.world_size} processes" if fabric.world_size > 1 else "")
                          + "; lower batch_clips or add data")
    optimizer = adamw(model.parameters(), p.lr, p.weight_decay)
    model, optimizer = fabric.setup(model, optimizer)
    fp = fp or fingerprint(p)
    state = {"model": model, "optimizer": optimizer, "step": 0, "fingerprint": fp}
    resumed = ckpt_path.exists()
    if resumed:
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True).get("fingerprint")
        if saved != fp:  # a checkpoint of other settings (kept by DVC's persist): not ours to continue
            log(f"pretrain: {ckpt_path} was written with other parameters or code; starting afresh")
            ckpt_path.unlink()
            resumed = False
    if resumed:
        fabric.load(ckpt_path, state, weights_only=True)
        log(f"pretrain: resuming {desc} from step {state['step']} ({ckpt_path})")
    step = state["step"]
    # dvcyaml=False: the stage declares its own metrics and plots; save_dvc_exp=False: never touch git itself
    live = (Live(str(p.live_dir), dvcyaml=False, save_dvc_exp=False, resume=resumed or append_log, report=None)
            if fabric.global_rank == 0 else None)
    if live is not None and run_info:
        live.summary["run"] = dict(run_info)
    bar = tqdm(total=p.max_steps, initial=step, desc=f"pretrain {desc}", unit="step",
               disable=not progress or fabric.global_rank != 0)
    t_last, n_last = time.perf_counter(), step
    waited = 0.0  # seconds this logging window spent waiting for the loader
    # the latest value of each loss term: CIR's terms exist only on every cir_every-th step, which need not be a
    # logging step (cir_every 16, log_every 10: every 80th step only)
    latest: dict[str, torch.Tensor] = {}
    if step < p.max_steps:
        # where the step count says: a resumed run goes on with the batch the killed one would have drawn next
        epoch, skip = divmod(step, per_epoch)  # each batch carries its epoch to the dataset (EpochBatch)
        loader = fabric.setup_dataloaders(
            epoch_loader(dataset, batch, p.num_workers, p.seed, epoch, skip, fabric.global_rank, fabric.world_size,
                         count=p.max_steps - step, chunks=chunks),
            use_distributed_sampler=False)  # the batches are dealt out to the processes already
        t_ready = time.perf_counter()  # the step is ready for its next batch
        for batch_data in loader:
            waited += time.perf_counter() - t_ready
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, p)
            out = step_fn(model, batch_data)
            latest.update({k: out[k].detach() for k in LOGGED_TERMS if k in out})
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(out["loss"])
            optimizer.step()
            step += 1
            state["step"] = step
            bar.update(1)
            if live is not None and (step % p.log_every == 0 or step == p.max_steps):
                now = time.perf_counter()
                live.log_metric("img_per_s", images_per_step * (step - n_last) / max(now - t_last, 1e-9))
                # the share of the time spent waiting for batches: with num_workers 0 the loading itself; with
                # workers (a GPU machine) anything well above 0 means the trainer starves — add workers
                live.log_metric("loader_wait", waited / max(now - t_last, 1e-9))
                t_last, n_last, waited = now, step, 0.0
                live.log_metric("lr", lr_at(step - 1, p))
                for k, v in latest.items():
                    live.log_metric(f"train/{k}", float(v))
                live.step = step_offset + step
                live.next_step()
            if step % p.ckpt_every == 0 or step == p.max_steps:
                tmp = ckpt_path.with_name(ckpt_path.name + ".tmp")
                fabric.save(tmp, state)
                if fabric.global_rank == 0:
                    os.replace(tmp, ckpt_path)
            t_ready = time.perf_counter()
    bar.close()
    if live is not None:
        live.end()
    return step, resumed


def run_pretrain(p: PretrainParams, progress: bool = True, log=print, bench: BenchmarkParams | None = None) -> dict:
    """Train `p.method` and write the encoder; `bench` (the labelled benchmark) is used by `supervised` only."""
    from lightning_fabric import Fabric

    reuse_freed_memory()
    precision, why = resolve_precision(p.precision, device_type(p.accelerator))
    log(f"pretrain: precision {precision} ({why}); {torch.get_num_threads()} threads")
    run_info = {"device": device_type(p.accelerator), "precision": precision, "precision_reason": why,
                "threads": torch.get_num_threads()}
    where = {"accelerator": p.accelerator, "devices": p.devices, "num_nodes": p.num_nodes, "precision": precision}
    fabric = Fabric(**where, strategy=p.strategy)
    if fabric.world_size > 1 and p.method == "clp" and p.cir_every > 1:
        # CIR's networks sit out the steps between CIR steps, and DDP must expect parameters without a gradient
        if p.strategy not in ("auto", "ddp", "ddp_find_unused_parameters_true"):
            raise ConfigError(f"pretrain.strategy: {p.strategy!r} on {fabric.world_size} processes cannot train clp "
                             f"with cir_every {p.cir_every} (CIR's networks get no gradient between CIR steps); use "
                             "auto, ddp or ddp_find_unused_parameters_true, or cir_every: 1")
        fabric = Fabric(**where, strategy="ddp_find_unused_parameters_true")
    fabric.launch()
    fabric.seed_everything(p.seed)
    encoder_path = p.out_dir / "encoder.pt"
    (p.out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)

    if p.method == "supervised":
        return _run_supervised(fabric, p, bench or BenchmarkParams(), encoder_path, progress, log, run_info)
    model = build_model(p, gather=lambda t: fabric.all_gather(t).flatten(0, -2) if t.ndim > 1
                        else fabric.all_gather(t).flatten())
    if p.method == "random":
        if fabric.global_rank == 0:
            save_encoder(encoder_path, model.encoder, p, 0)
            from dvclive import Live

            with Live(str(p.live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
                live.log_metric("train/steps", 0)  # a fresh history, so no other run's metrics stand for this one
                live.summary["run"] = run_info
        return {"method": "random", "steps": 0}
    frame_method = p.method in FRAME_METHODS
    dataset = ClipDataset(p.data, clip_len=1 if frame_method else p.clip_len, stride=p.frame_stride,
                          cache_dir=p.store_cache,
                          size=p.image_size, seed=p.seed, frame_jitter=0.0 if frame_method else p.frame_jitter,
                          colour_on_host=colour_on_host(p.colour_on, fabric.device.type, p.crop_on),
                          crop_on_host=crop_on_host(p.crop_on, fabric.device.type),
                          decode_on_host=decode_on_host(p.decode_on, fabric.device.type, p.crop_on),
                          motion=p.margin_by == "motion" and not frame_method)
    batch = p.batch_clips * p.clip_len if frame_method else p.batch_clips

    def step_fn(m, b):
        # CIR's frames of other people, loaded only when the step runs CIR (clp: 1 in cir_every)
        def others():
            return fabric.to_device(dataset.others(b["index"], b["epoch"]))
        view_q, view_k = finish_views(b, p.image_size)  # cropped/coloured here when the loader left it
        extra = {"motion": b["motion"]} if "motion" in b else {}
        return m(view_q, view_k, b["clip_id"], others, b["identity"], **extra)

    steps, resumed = _train(fabric, model, dataset, batch, p, p.out_dir / "checkpoints" / "last.ckpt", p.method,
                            p.batch_clips * p.clip_len, step_fn, progress, log, run_info=run_info)
    if fabric.global_rank == 0:
        save_encoder(encoder_path, model.encoder, p, steps)
    return {"method": p.method, "steps": steps, "resumed": resumed, "precision": precision}


def _run_supervised(fabric, p: PretrainParams, bench: BenchmarkParams, encoder_path: Path, progress: bool,
                    log, run_info: dict) -> dict:
    """One model per fold, trained on the other folds' subjects; encoder.pt keeps all of them."""
    from .benchmarks import load_labelled, read_folds, split
    from .data import LabelledFrames

    folds = read_folds(bench.folds)
    labelled = load_labelled(bench, [s for f in folds for s in f], log=log)
    fp = fingerprint(p, bench)
    fold_states, steps = [], 0
    for k, test in enumerate(folds):
        train, _ = split(labelled.subject, folds, k)
        dataset = LabelledFrames(labelled.subset(train), size=p.image_size, seed=p.seed)
        fabric.seed_everything(p.seed + k)
        model = Supervised(build_backbone(p.backbone), len(bench.au_list))
        batch = p.batch_clips * p.clip_len
        # the folds log one after another into one history (steps k·max_steps + step)
        steps, _ = _train(fabric, model, dataset, batch, p, p.out_dir / "checkpoints" / f"fold{k}.ckpt",
                          f"supervised fold {k} (test {test[0]}…)", batch, lambda m, b: m(b["image"], b["labels"]),
                          progress, log, step_offset=k * p.max_steps, append_log=k > 0, fp=fp, run_info=run_info)
        fold_states.append({n: v.detach().cpu() for n, v in model.encoder.state_dict().items()})
    if fabric.global_rank == 0:
        save_encoder(encoder_path, model.encoder, p, steps, fold_state_dicts=fold_states)
    return {"method": "supervised", "steps": steps, "folds": len(folds)}
