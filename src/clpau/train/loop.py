"""The one training loop (Lightning Fabric), read top to bottom: warm-up + cosine lr, backward, dvclive, atomic
checkpoints and resume; and what every run uses around it (fused AdamW, malloc tuning)."""

from __future__ import annotations

import ctypes
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from clpau.core.params import ConfigError
from clpau.train.fingerprint import fingerprint
from clpau.train.params import PretrainParams
from clpau.train.sampling import batches_per_epoch, epoch_loader

LOGGED_TERMS = ("loss", "nce", "rank", "self", "swap", "cycle", "flow", "queue_fill")


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


def fit(fabric, model, dataset, batch: int, p: PretrainParams, ckpt_path: Path | None, desc: str,
           images_per_step: int, prepare, progress: bool, log, step_offset: int = 0,
           append_log: bool = False, fp: str | None = None, run_info: dict | None = None) -> tuple[int, bool]:
    """The loop: warm-up + cosine lr, Fabric backward, dvclive every log_every steps, atomic checkpoints every
    ckpt_every steps; resumes from `ckpt_path` when it exists (None: no checkpoints, and with `live_dir` None no
    dvclive: the fine-tune protocol's short per-fold runs inside `evaluate`). Returns (steps done, resumed). Several runs may log
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
    fp = fp or (fingerprint(p) if ckpt_path is not None else "")
    state = {"model": model, "optimizer": optimizer, "step": 0, "fingerprint": fp}
    resumed = ckpt_path is not None and ckpt_path.exists()
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
            if fabric.global_rank == 0 and p.live_dir is not None else None)
    if live is not None and run_info:
        live.summary["run"] = dict(run_info)
    bar = tqdm(total=p.max_steps, initial=step, desc=desc if ckpt_path is None else f"pretrain {desc}", unit="step",
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
            epoch_loader(dataset, batch, p.compute.num_workers, p.seed, epoch, skip, fabric.global_rank, fabric.world_size,
                         count=p.max_steps - step, chunks=chunks),
            use_distributed_sampler=False)  # the batches are dealt out to the processes already
        t_ready = time.perf_counter()  # the step is ready for its next batch
        for batch_data in loader:
            waited += time.perf_counter() - t_ready
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, p)
            out = model(prepare(batch_data) if prepare else batch_data)  # Method.step, through Fabric
            latest.update({k: out[k].detach() for k in LOGGED_TERMS if k in out})
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(out["loss"])
            optimizer.step()
            step += 1
            state["step"] = step
            bar.update(1)
            if live is not None and (step % p.log_every == 0 or step == p.max_steps):
                now = time.perf_counter()
                live.step = step_offset + step  # before logging: the values are this step's (next_step moves on)
                live.log_metric("img_per_s", images_per_step * (step - n_last) / max(now - t_last, 1e-9))
                # the share of the time spent waiting for batches: with num_workers 0 the loading itself; with
                # workers (a GPU machine) anything well above 0 means the trainer starves — add workers
                live.log_metric("loader_wait", waited / max(now - t_last, 1e-9))
                t_last, n_last, waited = now, step, 0.0
                live.log_metric("lr", lr_at(step - 1, p))
                for k, v in latest.items():
                    live.log_metric(f"train/{k}", float(v))
                live.next_step()
            if ckpt_path is not None and (step % p.ckpt_every == 0 or step == p.max_steps):
                tmp = ckpt_path.with_name(ckpt_path.name + ".tmp")
                fabric.save(tmp, state)
                if fabric.global_rank == 0:
                    os.replace(tmp, ckpt_path)
            t_ready = time.perf_counter()
    bar.close()
    if live is not None:
        _end_live(live)
    return step, resumed


def _end_live(live) -> None:
    """`Live.end`, tolerating a run beside this one in the same repo: dvclive signals VS Code through one file per
    repo (.dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED) and removes it as its last act with exists-then-remove, so two
    runs ending together (a retrain beside `dvc repro`, two test processes) race on it. Everything of the run's own
    is written by then."""
    try:
        live.end()
    except FileNotFoundError as err:
        if Path(err.filename or "").name != "DVCLIVE_STEP_COMPLETED":
            raise
