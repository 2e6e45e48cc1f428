"""Pretraining runs for every method, writes a safe encoder and dvclive metrics, and resumes after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from clpau import cli
from clpau.config import BenchmarkParams, PretrainParams, load_params
from clpau.core.hardware import AVX2_CAPS, resolve_precision
from clpau.data.datasets import ClipDataset
from clpau.methods import METHODS
from clpau.train.encoder import load_encoder
from clpau.train.fingerprint import fingerprint
from clpau.train.pretrain import build_method, run_pretrain

SHIPPED = load_params(Path(__file__).resolve().parents[1] / "params.yaml").pretrain
FRAME_METHODS = sorted(name for name, m in METHODS.items() if m.inputs == "frames")


def _merge(base: dict, kw: dict) -> dict:
    return {**base, **{k: _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                       for k, v in kw.items()}}


def _with(p: PretrainParams, **kw) -> PretrainParams:
    return PretrainParams.model_validate(_merge(p.model_dump(), kw))


def _params(tmp_path, clips, **kw) -> PretrainParams:
    """params.yaml's pretraining — its method, keys, frame stride, every section — at a test's size (4 clips of 4
    frames, 3 steps); `kw` overrides (a section's keys as a dict: tcl={"key_encoder": "momentum"})."""
    size = {"data": [clips], "out_dir": tmp_path / "models", "live_dir": tmp_path / "live", "batch_clips": 4,
            "clip_len": 4, "max_steps": 3, "log_every": 1, "ckpt_every": 2}
    return _with(SHIPPED, **{**size, **kw})


@pytest.mark.parametrize("method", ["clp", "tcl", "cir", "simclr", "moco", "random"])
def test_every_method_trains_and_writes_a_safe_encoder(method, synth_clips, tmp_path):
    p = _params(tmp_path, synth_clips, method=method)
    result = run_pretrain(p, progress=False, log=lambda *_: None)
    assert result["steps"] == (0 if method == "random" else 3)
    blob = torch.load(p.out_dir / "encoder.pt", weights_only=True)  # plain tensors and strings only
    assert blob["method"] == method
    net, meta = load_encoder(p.out_dir / "encoder.pt")
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, meta["feat_dim"])
    metrics = json.loads((p.live_dir / "metrics.json").read_text())
    if method == "random":
        assert metrics["train"] == {"steps": 0}
    else:
        assert metrics["step"] == 3 and metrics["train"]["loss"] > 0 and metrics["img_per_s"] > 0
        assert 0 < metrics["loader_wait"] < 1  # loading in the training process: a share of every step
        if method in {"clp", "cir"}:
            assert {"self", "swap", "cycle"} <= set(metrics["train"])
    # what it ran on, for `dvc exp show`: auto resolved on this machine's CPU, with the reason
    assert metrics["run"]["precision"] == resolve_precision("auto", "cpu")[0]
    assert metrics["run"]["precision_reason"].startswith("auto: ") and metrics["run"]["device"] == "cpu"


@pytest.mark.parametrize("method", ["clp", "tcl", "cir", "simclr", "moco"])
def test_no_training_step_reads_a_value_back_from_the_device(method):
    # meta tensors have shapes but no values: a step that reads one back (int(), .item(), .any(), boolean
    # indexing) raises here; on a GPU each such read would stall the launched kernels, every step
    with torch.device("meta"):
        model = build_method(_with(SHIPPED, method=method, cir={"every": 2}))
        if hasattr(model, "_calls"):
            model._calls = 0  # its one read of the step counter, at the first step after construction or loading
        clips, frames = (8, 1) if method in FRAME_METHODS else (2, 4)  # the frame methods' loader: 1-frame clips
        view, other = torch.randn(clips, frames, 3, 64, 64), torch.randn(clips, 3, 64, 64)
        ids = torch.arange(clips)
        for _ in range(2):  # with cross-identity reconstruction and without
            batch = {"view_q": view, "view_k": view, "clip_id": ids, "identity": ids, "others": lambda: other}
            model(batch)["loss"].backward()


def test_cir_terms_are_logged_when_no_logging_step_is_a_cir_step(synth_clips, tmp_path):
    # CIR on the first of 4 steps only (cir.every 4), logging after steps 2 and 4: its terms are still logged
    p = _params(tmp_path, synth_clips, method="clp", cir={"every": 4}, log_every=2, max_steps=4)
    run_pretrain(p, progress=False, log=lambda *_: None)
    logged = json.loads((p.live_dir / "metrics.json").read_text())["train"]
    assert {"self", "swap", "cycle", "nce"} <= set(logged)


@pytest.mark.parametrize("method", ["tcl", "clp"])
def test_ddp_on_two_cpu_processes(method, synth_clips, synth_store, tmp_path):
    """The same command under DDP, reading a clip store: Fabric starts a second process (gloo on CPU here, NCCL on
    GPUs) and each rank trains on the clips of its own chunks. `tcl`, the shipped default, gathers its online
    negatives from both ranks; `clp` with momentum keys gathers both ranks' keys into one queue, trains CIR on step
    1, leaves its networks without a gradient on step 2, and step 3 is where DDP would fail if it did not expect
    that."""
    momentum = {"tcl": {"key_encoder": "momentum", "queue_size": 64}, "cir": {"every": 2}} if method == "clp" else {}
    p = _params(tmp_path, synth_store, method=method, max_steps=3,
                compute={"accelerator": "cpu", "devices": 2, "strategy": "ddp"}, **momentum)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"pretrain": p.model_dump(mode="json")}))
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run([sys.executable, "-m", "clpau", "--params", str(params_file), "pretrain", "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((p.live_dir / "metrics.json").read_text())
    assert metrics["step"] == 3 and load_encoder(p.out_dir / "encoder.pt")[1]["step"] == 3
    if method == "clp":
        # 3 steps x 4 clips x 4 frames = 48 keys per rank: a 64-slot queue is full only if both ranks' keys are in it
        assert metrics["train"]["queue_fill"] == pytest.approx(1.0) and {"self", "swap"} <= set(metrics["train"])


def test_a_ddp_strategy_that_cannot_skip_parameters_is_refused_before_any_process_starts(synth_clips, tmp_path,
                                                                                          capsys):
    p = _params(tmp_path, synth_clips, method="clp", compute={"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"pretrain": p.model_dump(mode="json")}))
    assert cli.main(["--params", str(params_file), "pretrain", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "pretrain.compute.strategy: 'ddp_spawn'" in err and f"cir.every {p.cir.every}" in err
    assert not (p.out_dir / "checkpoints").exists()


def _pretrain_command(p: PretrainParams) -> list[str]:
    params_file = p.out_dir.parent / "params.yaml"
    params_file.parent.mkdir(parents=True, exist_ok=True)
    params_file.write_text(yaml.safe_dump({"pretrain": p.model_dump(mode="json")}))
    return [sys.executable, "-m", "clpau", "--params", str(params_file), "pretrain", "--quiet"]


def test_an_avx2_only_cpu_trains_in_fp32_and_says_so(synth_clips, tmp_path):
    """`precision: auto` under the AVX2 ceiling (what an AVX2-only CPU runs) trains in 32-true, logs why and records
    it in dvclive's summary; an explicit bf16-mixed is kept."""
    env = dict(os.environ, **AVX2_CAPS)
    for precision, expected in (("auto", "32-true"), ("bf16-mixed", "bf16-mixed")):
        p = _params(tmp_path / precision, synth_clips, compute={"precision": precision}, max_steps=2)
        run = subprocess.run(_pretrain_command(p), capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"precision {expected} (" in run.stdout
        recorded = json.loads((p.live_dir / "metrics.json").read_text())["run"]
        assert recorded["precision"] == expected
        if precision == "auto":
            assert "ATEN_CPU_CAPABILITY=avx2" in recorded["precision_reason"] or "no bf16" in recorded["precision_reason"]


def test_the_checkpoint_fingerprint_holds_the_resolved_precision(synth_clips, tmp_path):
    """`auto` is fingerprinted as what it resolves to here: a finished run in another precision (an AVX2 machine's
    fp32, say, in the persisted checkpoint folder) is not taken for this machine's run, an explicit twin is."""
    auto = _params(tmp_path, synth_clips, compute={"precision": "auto"})
    here = resolve_precision("auto", "cpu")[0]
    other = "32-true" if here == "bf16-mixed" else "bf16-mixed"
    assert fingerprint(auto) == fingerprint(_with(auto, compute={"precision": here}))
    assert fingerprint(auto) != fingerprint(_with(auto, compute={"precision": other}))


@pytest.mark.parametrize("source", ["shards", "store"])
def test_kill_and_resume_from_checkpoint_trains_what_an_uninterrupted_run_trains(source, synth_clips, synth_store,
                                                                                 tmp_path):
    # checkpoints every 3 steps, 5 batches an epoch (20 clips of 4): a kill lands mid-epoch, and the resumed run
    # must go on with the very batches, augmentations and CIR steps the uninterrupted run had next — reading
    # extract's shards or a clip store
    p = _params(tmp_path / "killed", synth_clips if source == "shards" else synth_store, max_steps=24, ckpt_every=3)
    assert p.method == "tcl"  # the shipped default, at its frame stride
    assert len(ClipDataset(p.data, clip_len=p.clip_len, stride=p.frame_stride)) == 20  # the 5 batches an epoch above
    cmd = _pretrain_command(p)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt = p.out_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and not ckpt.exists() and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), proc.stdout.read()
    saved = torch.load(ckpt, weights_only=True)["step"]
    assert 3 <= saved < 24
    assert not (p.out_dir / "encoder.pt").exists()  # nothing that looks finished

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming {p.method} from step {saved}" in again.stdout + again.stderr
    resumed, meta = load_encoder(p.out_dir / "encoder.pt")
    assert meta["step"] == 24
    # the same command run through once (a process like the others: the same threads, so the same arithmetic)
    whole = p.model_copy(update={"out_dir": tmp_path / "whole" / "models", "live_dir": tmp_path / "whole" / "live"})
    subprocess.run(_pretrain_command(whole), check=True, capture_output=True, timeout=600)
    uninterrupted, _ = load_encoder(whole.out_dir / "encoder.pt")
    for (name, a), b in zip(resumed.state_dict().items(), uninterrupted.state_dict().values(), strict=True):
        assert torch.equal(a, b), (name, saved)


def test_a_batch_larger_than_the_data_is_refused_instead_of_looping_forever(synth_clips, tmp_path):
    from clpau.config import ConfigError

    p = _params(tmp_path, synth_clips, batch_clips=21)  # 20 clips: not one full batch an epoch
    with pytest.raises(ConfigError, match="pretrain.batch_clips: 20 training items make no batch of 21"):
        run_pretrain(p, progress=False, log=lambda *_: None)
    assert not (p.out_dir / "encoder.pt").exists()


def test_every_process_gets_its_own_share_of_an_epoch_drawn_from_the_epoch_alone():
    from clpau.train.sampling import epoch_batches

    one = epoch_batches(23, 4, seed=0, epoch=3)
    assert len(one) == 5 and sorted(i for b in one for i in b) != list(range(23))  # full batches only
    assert one == epoch_batches(23, 4, seed=0, epoch=3) != epoch_batches(23, 4, seed=0, epoch=4)
    two = [epoch_batches(23, 4, seed=0, epoch=3, rank=r, world_size=2) for r in range(2)]
    assert [len(b) for b in two] == [2, 2]  # as many steps for each process: DDP steps in lockstep
    assert not {i for b in two[0] for i in b} & {i for b in two[1] for i in b}
    assert [two[0][0], two[1][0], two[0][1], two[1][1]] == one[:4]  # dealt out in turn from the same shuffle


def test_supervised_trains_one_encoder_per_fold(synth_clips, tmp_path):
    root = synth_clips.parent
    p = _params(tmp_path, synth_clips, method="supervised", max_steps=2)
    bench = BenchmarkParams(clips=root / "labelled_clips", labels_dir=root / "labels" / "labelled")
    result = run_pretrain(p, progress=False, log=lambda *_: None, bench=bench)
    assert result["folds"] == 3
    metrics = json.loads((p.live_dir / "metrics.json").read_text())
    assert metrics["step"] == 3 * 2 and metrics["train"]["loss"] > 0  # the three folds in one history
    assert len((p.live_dir / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()) == 1 + 3 * 2
    nets = [load_encoder(p.out_dir / "encoder.pt", fold=k)[0] for k in range(3)]
    w = [n.conv1.weight for n in nets]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    with pytest.raises(ValueError, match="one supervised encoder per fold"):
        load_encoder(p.out_dir / "encoder.pt")


def test_checkpoint_of_other_params_is_not_resumed(synth_clips, tmp_path):
    run_pretrain(_params(tmp_path, synth_clips, max_steps=2), progress=False, log=lambda *_: None)
    messages = []
    result = run_pretrain(_params(tmp_path, synth_clips, max_steps=2, tcl={"tau": 0.2}), progress=False,
                          log=messages.append)
    assert not result["resumed"] and any("other parameters" in m for m in messages)


def test_compiled_keys_train_in_the_loop_and_resume_an_uncompiled_run(synth_clips, tmp_path):
    import warnings

    eager = _params(tmp_path, synth_clips, max_steps=4, ckpt_every=2, tcl={"key_encoder": "momentum"})
    compiled = _with(eager, tcl={"compile_keys": True})
    assert fingerprint(eager) == fingerprint(compiled)
    run_pretrain(eager.model_copy(update={"max_steps": 2}), progress=False, log=lambda *_: None)
    ckpt = eager.out_dir / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    state["fingerprint"] = fingerprint(eager)  # as if the 4-step run had been stopped after its step-2 checkpoint
    torch.save(state, ckpt)
    messages = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to the uncompiled forward
        result = run_pretrain(compiled, progress=False, log=messages.append)
    assert result["resumed"] and any("from step 2" in m for m in messages)
    assert load_encoder(eager.out_dir / "encoder.pt")[1]["step"] == 4


def test_checkpoint_of_other_data_is_not_resumed(synth_clips, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "clips.parquet").write_bytes((synth_clips / "clips.parquet").read_bytes())
    for d in synth_clips.iterdir():
        if d.is_dir():
            (data / d.name).symlink_to(d)
    run_pretrain(_params(tmp_path, data, max_steps=2), progress=False, log=lambda *_: None)
    import pandas as pd

    clips = pd.read_parquet(data / "clips.parquet")
    clips.iloc[:-1].to_parquet(data / "clips.parquet", index=False)  # the data changed
    messages = []
    result = run_pretrain(_params(tmp_path, data, max_steps=2), progress=False, log=messages.append)
    assert not result["resumed"] and any("starting afresh" in m for m in messages)


def test_loader_workers_follow_the_epoch(synth_clips):
    """Each epoch brings new crops and frame offsets, with loader processes as without them, and with one loader
    across epochs as with one per epoch. (Persistent workers once kept their own copy of the dataset and replayed
    the first epoch forever: now each batch carries its epoch.)"""
    from clpau.train.sampling import epoch_loader

    def views(workers: int) -> list[dict[int, torch.Tensor]]:
        ds = ClipDataset([synth_clips], clip_len=4, size=32, seed=0)
        epochs = []
        for epoch in range(2):
            ds.set_epoch(epoch)
            loader = epoch_loader(ds, 4, workers, seed=0, epoch=epoch)
            epochs.append({int(i): v for b in loader for i, v in zip(b["clip_id"], b["view_q"], strict=True)})
        return epochs

    def one_loader(workers: int) -> list[dict[int, torch.Tensor]]:
        # as the training loop loads: one loader (and one set of workers) for the whole run, from mid-epoch 0 on,
        # each batch carrying its epoch; set_epoch is never called
        ds = ClipDataset([synth_clips], clip_len=4, size=32, seed=0)
        epochs = [{}, {}, {}]
        for b in epoch_loader(ds, 4, workers, seed=0, epoch=0, skip=1, count=2 * per_epoch - 1):
            epochs[b["epoch"]].update({int(i): v for i, v in zip(b["clip_id"], b["view_q"], strict=True)})
        return epochs[:2]

    inline, workers = views(0), views(2)
    for a, b in zip(inline, workers, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[i], b[i]) for i in a)
    first, second = workers
    assert not any(torch.equal(first[i], second[i]) for i in first.keys() & second.keys())
    per_epoch = len(first) // 4
    run = one_loader(2)
    assert run[1].keys() == second.keys() and all(torch.equal(run[1][i], second[i]) for i in second)
    assert run[0].keys() < first.keys() and all(torch.equal(run[0][i], first[i]) for i in run[0])  # skipped one


class _RecordingClips:
    """A dataset's batches, and whether their view tensors were in shared memory as the dataset made them (at module
    level: loader workers receive it pickled)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]) -> dict:
        batch = self.dataset.__getitems__(indices)
        return {**batch, "born_shared": torch.tensor([batch[k].is_shared() for k in ("view_q", "view_k")])}


def test_a_worker_writes_its_batch_straight_into_shared_memory(synth_clips):
    # sending a batch from a loader process otherwise copies it into shared memory first (2 workers: 7125 -> 8237
    # frames/s when the batch is made there: README); in the training process it stays in plain memory
    from clpau.train.sampling import epoch_loader

    clips = _RecordingClips(ClipDataset([synth_clips], clip_len=4, size=32, seed=0))
    assert next(iter(epoch_loader(clips, 4, 1, seed=0)))["born_shared"].all()
    assert not next(iter(epoch_loader(clips, 4, 0, seed=0)))["born_shared"].any()


_ALLOCATION_ROUNDS = """
import ctypes, resource, sys, torch
from clpau.train.loop import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
else:  # glibc's starting mmap threshold (128 KiB), pinned: its adaptive rise is what makes the default vary by run
    assert ctypes.CDLL("libc.so.6").mallopt(-3, 128 << 10)
def step():  # a training step's activations: allocated, written, all freed at its end
    blocks = [torch.empty(2 << 20).fill_(1.0) for _ in range(6)]
    del blocks
for _ in range(3):  # the heap's first growth (the blocks of the first steps need not fit where freed ones were)
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings: Linux only")
def test_freed_step_memory_is_reused_instead_of_faulted_back_in():
    def page_faults(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", _ALLOCATION_ROUNDS, mode], capture_output=True, text=True,
                             check=True)
        return int(run.stdout.split()[-1])

    # the 10 rounds write 10 x 6 x 8 MB: 122,880 pages of 4 KB, all faulted in again when freed memory goes back to
    # the system (measured: 122,560 with the threshold pinned where glibc starts it; glibc's own adaptive threshold
    # gave 0 in 10 processes of 32 and 122,560 in the others), 0 with the reuse settings (32 of 32, 4 at a time).
    # One warm-up step was too few: 6,144 in 4 of 15 (the CI once saw 12,289)
    touched = 10 * 6 * (2 << 20) * 4 // 4096
    returned, reused = page_faults("returned"), page_faults("reuse")
    assert returned > 0.9 * touched, returned  # the measurement sees memory going back and faulting in
    assert reused < touched / 20, (reused, touched)


def test_views_coloured_on_the_trainer_train_like_views_coloured_by_the_loader(synth_clips, tmp_path):
    # colour_on: trainer (a GPU's default) on this CPU: the same steps on views equal up to float rounding, and a
    # checkpoint of one resumes in the other (where the colour is applied is not part of what a run depends on)
    # crop_on: trainer too: views close to the loader's (test_data), so the same run within a looser bound
    from lightning_fabric.utilities.seed import seed_everything

    runs, losses = {}, {}
    for where, crop in (("loader", "loader"), ("trainer", "loader"), ("crop", "trainer")):
        p = _params(tmp_path / where, synth_clips, method="tcl",
                    compute={"colour_on": "auto" if crop == "trainer" else where, "crop_on": crop})
        assert fingerprint(p) == fingerprint(_with(p, compute={"colour_on": "auto", "crop_on": "auto"}))
        run_pretrain(p, progress=False, log=lambda *_: None)
        runs[where] = load_encoder(p.out_dir / "encoder.pt")[0].state_dict()
        losses[where] = json.loads((p.live_dir / "metrics.json").read_text())["train"]["loss"]
    seed_everything(p.seed)  # what run_pretrain does before it builds the method: the weights the 3 steps start from
    start = build_method(p).encoder.state_dict()
    trained = [n for n, w in start.items() if w.is_floating_point() and "running" not in n]

    def update(where):  # what 3 steps changed, every trained tensor in one vector
        return torch.cat([(runs[where][n].float() - start[n].float()).flatten() for n in trained])

    loader, trainer, crop = update("loader"), update("trainer"), update("crop")
    assert loader.abs().gt(0).float().mean() > 0.9  # the steps moved (nearly) every weight ...
    assert (trainer - loader).norm() <= 1e-4 * loader.norm()  # ... and colouring on the trainer moved them alike
    assert losses["loader"] == pytest.approx(losses["trainer"], rel=1e-4)
    # crops cut on the trainer differ from the loader's by interpolation: updates that point the same way (cosine
    # 0.72 measured; twice the frame jitter, a run on other views, gives 0.24) and the loss within 5 %
    assert torch.nn.functional.cosine_similarity(loader, crop, dim=0) > 0.5
    assert losses["loader"] == pytest.approx(losses["crop"], rel=5e-2)
    with pytest.raises(ValueError, match="crop_on: trainer needs colour_on"):
        _params(tmp_path / "bad", synth_clips, method="tcl", compute={"colour_on": "loader", "crop_on": "trainer"})


def test_the_same_encoder_is_written_as_the_same_bytes(tmp_path):
    # DVC hashes encoder.pt: a rerun that trains the same weights must not look like a new model (torch.save to a
    # path names the archive's folder after the file, which was a random temporary name)
    from clpau.methods.backbones import build_backbone
    from clpau.train.encoder import save_encoder

    torch.manual_seed(0)
    net, p = build_backbone("resnet_small"), PretrainParams()
    for name in ("a.pt", "b.pt"):
        save_encoder(tmp_path / name, net, p, 3)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left behind
    assert load_encoder(tmp_path / "a.pt")[1]["step"] == 3


# every setting of the sections clp reads (and of the clip loop), each moved away from its default: none of them may
# change a baseline
CLP_READING = {"tcl": {"key_encoder": "momentum", "symmetric": True, "negatives": "same_person", "tau": 0.3,
                       "m_max": 0.7, "delta_scale": 2.0, "rank_margin": 0.2, "rank_weight": 2.0, "margin_by": "motion",
                       "motion_scale": 0.1, "dim": 32, "queue_size": 128},
               "cir": {"lambda_self": 3.0, "lambda_swap": 2.0, "lambda_cycle": 2.0, "lambda_flow": 1.0,
                       "swap_loss": "contrast", "grid": 8, "pose_grid": 2, "max_flow": 0.5, "frames": 4, "every": 1},
               "frame_stride": 2, "frame_jitter": 0.1}


@pytest.mark.parametrize("method", FRAME_METHODS)
def test_a_baseline_trains_the_same_weights_whatever_clps_reading_says(method, synth_clips, tmp_path):
    def weights(folder, **reading):
        p = _params(tmp_path / folder, synth_clips, method=method, **reading)
        run_pretrain(p, progress=False, log=lambda *_: None)
        return load_encoder(p.out_dir / "encoder.pt")[0].state_dict()

    default, moved = weights("default"), weights("moved", **CLP_READING)
    assert default.keys() == moved.keys()
    assert all(torch.equal(default[k], moved[k]) for k in default), f"a clp parameter changed what {method} trains"
    # and its time-contrastive reading too
    other = weights("time_contrast", tcl={"variant": "time_contrast", "pos_window": 1, "neg_window": 2})
    assert all(torch.equal(default[k], other[k]) for k in default)


def test_moco_is_its_own_momentum_encoder_and_queue():
    model = build_method(_with(SHIPPED, method="moco"))
    assert model.tau == SHIPPED.moco.tau and len(model.queue) == SHIPPED.moco.queue_size
    assert not any(name.startswith("cir") for name, _ in model.named_modules())
    view = torch.randn(8, 1, 3, 64, 64)
    out = model({"view_q": view, "view_k": view, "clip_id": torch.arange(8)})
    assert out["queue_fill"] == pytest.approx(8 / SHIPPED.moco.queue_size)  # the step's keys went into the queue
    # the first step's queue holds no key yet: every negative is masked, the positive is the only finite logit
    assert torch.isinf(out["logits"][:, 1:]).all() and torch.isfinite(out["logits"][:, 0]).all()


def _global_batch(tmp_path, world: int, *flags: str) -> dict:
    """tests/ddp_global_batch.py on `world` gloo processes: the loss and encoder gradient of one global batch."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / f"w{world}{''.join(flags)}.pt"
    script = Path(__file__).with_name("ddp_global_batch.py")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world)}
    procs = [subprocess.Popen([sys.executable, str(script), str(out), *flags], env={**env, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(world)]
    for proc in procs:
        assert proc.wait(timeout=180) == 0, proc.stdout.read()
    return torch.load(out, weights_only=True)


def test_online_negatives_make_one_global_batch_whatever_the_number_of_processes(tmp_path):
    # tcl's negatives are the other clips of the global batch, gathered from every process with their gradient:
    # 4 clips on one process or 2 + 2 on two give the same loss and, averaged as DDP averages it, the same gradient
    one, two = _global_batch(tmp_path, 1), _global_batch(tmp_path, 2)
    torch.testing.assert_close(two["loss"], one["loss"], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(two["grad"], one["grad"], rtol=1e-7, atol=1e-10)
    # with each process's own clips as its only negatives (no gather), the two runs train different things
    alone = _global_batch(tmp_path, 2, "no-gather")
    assert abs(alone["loss"] - one["loss"]) > 1e-3


def test_a_run_ends_when_a_run_beside_it_removed_dvclives_signal_file_first(tmp_path, monkeypatch):
    # dvclive removes its per-repo VS Code signal file with exists-then-remove; the CI once lost a test to a second
    # process removing it in between. Here the file "exists" when checked and is gone when removed, as in that race
    import dvclive.vscode
    from dvclive import Live

    from clpau.train.loop import _end_live

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # inside the project's DVC repo: where the signal file lives
    live = Live(str(tmp_path / "live"), dvcyaml=False, save_dvc_exp=False, report=None)
    live.log_metric("loss", 1.0)
    live.next_step()
    signal = Path(dvclive.vscode._dvclive_step_completed_signal_file(dvclive.vscode._find_non_queue_root()))
    signal.unlink(missing_ok=True)
    real_exists = os.path.exists
    monkeypatch.setattr(dvclive.vscode.os.path, "exists", lambda f: f == str(signal) or real_exists(f))
    with pytest.raises(FileNotFoundError):
        Live.end(live)  # what the loop called before
    _end_live(live)
    assert (tmp_path / "live" / "metrics.json").exists()
