"""The clip store: JPEG frames in LitData chunks, read from a folder or streamed, dealt by chunk to DDP processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clpau import cli
from clpau.data.clips import load_clips
from clpau.data.datasets import ClipDataset
from clpau.data.jpeg_store import is_store
from clpau.data.store import write_store
from clpau.train.sampling import batches_per_epoch, epoch_batches

HERE = Path(__file__).parent


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def test_a_store_holds_every_clip_in_a_tenth_of_the_bytes_at_38_db(synth_clips, synth_store):
    meta = json.loads((synth_store / "store.json").read_text())
    raw = load_clips([synth_clips], span=1)
    shards = {s: np.load(s, mmap_mode="r") for s in raw["shard_path"].unique()}
    assert meta["frames"] == sum(len(a) for a in shards.values()) and meta["clips"] == len(raw)
    assert meta["raw_bytes_per_frame"] / meta["bytes_per_frame"] >= 8  # the bar: 8x fewer bytes
    assert meta["chunks"] == 4 and is_store(synth_store) and not is_store(synth_clips)
    # the same clips, frame for frame, within JPEG's loss
    a = ClipDataset([synth_clips], clip_len=4, stride=2, size=32, augment=False)
    b = ClipDataset([synth_store], clip_len=4, stride=2, size=32, augment=False)
    assert len(a) == len(b) and (a.n_frames == b.n_frames).all() and (a.identity == b.identity).all()
    for i in range(len(a)):
        assert psnr(a.frames(i, 3), b.frames(i, 3)) > 35
    # landmarks as the shards' index gives them (float16: to 1e-3 of the crop side)
    assert np.abs(a.clip_landmarks(7, 2) - b.clip_landmarks(7, 2)).max() < 1e-3


def test_a_batch_from_the_store_is_the_shards_batch_within_jpeg_loss(synth_clips, synth_store):
    a = ClipDataset([synth_clips], clip_len=4, size=32, seed=3, frame_jitter=0.03)
    b = ClipDataset([synth_store], clip_len=4, size=32, seed=3, frame_jitter=0.03)
    x, y = a.__getitems__([0, 5, 11]), b.__getitems__([0, 5, 11])
    assert x["identity"].tolist() == y["identity"].tolist()
    # the same crops, offsets and colours were drawn: the views differ by the codec's error only
    err = (x["view_q"] - y["view_q"]).abs().mean().item()
    assert err < 0.05, err  # normalised units (std 0.25 of [0, 1]): under 1.3 grey levels on average


def test_a_store_older_than_its_sources_is_refused(synth_clips, synth_store, tmp_path):
    """A store is not a pipeline stage (nothing rewrites it when the training set changes): opened for training
    while its source, here, holds other clips, it stops with the command that writes it again."""
    import shutil

    source = tmp_path / "trainset"
    source.mkdir()
    clips = pd.read_parquet(synth_clips / "clips.parquet")
    clips.to_parquet(source / "clips.parquet")
    store = tmp_path / "store"
    shutil.copytree(synth_store, store)
    meta = json.loads((store / "store.json").read_text())
    (store / "store.json").write_text(json.dumps({**meta, "sources": [str(source)]}))
    assert len(load_clips([store], span=4)) > 0  # the same clips: fine
    grown = pd.concat([clips, clips.iloc[:1].assign(clip_id="new-batch-000000")])
    grown.to_parquet(source / "clips.parquet")
    with pytest.raises(ValueError, match=r"older than its sources .* 21 clips now, 20 in the store, 1 new.*clpau store"):
        ClipDataset([store], clip_len=4)


def test_an_interrupted_store_leaves_nothing_that_looks_like_one(synth_clips, tmp_path, monkeypatch):
    import clpau.data.store as store

    def fail(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "encode_shard", fail)
    with pytest.raises(KeyboardInterrupt):
        write_store([synth_clips], tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists() and list(tmp_path.iterdir()) == []


def test_the_same_crops_make_the_same_store_byte_for_byte(synth_clips, synth_store, tmp_path):
    # DVC hashes the store: a second write from the same crops must not look like a new corpus downstream
    again = tmp_path / "again"
    write_store([synth_clips], again, chunk_frames=48, progress=False)
    files = sorted(p.name for p in synth_store.iterdir())
    assert files == sorted(p.name for p in again.iterdir()) and "index.json" in files
    for name in files:
        assert (synth_store / name).read_bytes() == (again / name).read_bytes(), name


def test_the_store_command_reports_and_refuses_bad_input(synth_clips, synth_store, tmp_path, capsys):
    out = tmp_path / "s"
    assert cli.main(["store", str(synth_clips), "--out", str(out), "--quality", "85", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "as JPEG q85" in printed and "fewer than raw" in printed
    assert json.loads((out / "store.json").read_text())["quality"] == 85
    assert cli.main(["store", str(synth_store), "--out", str(tmp_path / "t"), "--quiet"]) == 3
    assert "is a store already" in capsys.readouterr().err
    assert cli.main(["store", str(tmp_path / "nowhere"), "--out", str(tmp_path / "u"), "--quiet"]) == 3
    assert "clips.parquet is missing" in capsys.readouterr().err


def test_a_remote_store_streams_only_the_chunks_a_batch_needs(synth_store, tmp_path):
    """`local:` makes LitData treat a folder as an object store (as s3://…): files come into the cache when asked."""
    url = f"local:{synth_store}"
    cache = tmp_path / "cache"
    ds = ClipDataset([url], clip_len=4, size=32, cache_dir=cache)
    assert len(ds) == 20
    chunk_files = lambda: sorted(p.name for p in cache.rglob("chunk-*.bin"))  # noqa: E731
    assert chunk_files() == []  # the clip table is here, no frames yet
    first = ds.chunks()[0]
    ds.__getitems__([0])
    assert chunk_files() == [f"chunk-0-{first}.bin"]  # only the chunk holding clip 0
    last = int(np.flatnonzero(ds.chunks() == 3)[0])
    ds.__getitems__([last])
    assert len(chunk_files()) == 2
    # the same pixels as from the folder
    local = ClipDataset([synth_store], clip_len=4, size=32)
    assert np.array_equal(local.frames(last), ds.frames(last))


def test_chunks_are_dealt_to_processes_and_one_process_keeps_the_plain_shuffle():
    chunks = np.repeat(np.arange(5), [6, 5, 7, 6, 4])  # 28 clips in 5 chunks
    single = epoch_batches(28, 4, seed=1, epoch=2)
    assert epoch_batches(28, 4, seed=1, epoch=2, chunks=chunks) == single
    two = [epoch_batches(28, 4, seed=1, epoch=2, rank=r, world_size=2, chunks=chunks) for r in range(2)]
    # rank 0: chunks 0, 2, 4 (17 clips); rank 1: chunks 1, 3 (11 clips) -> 2 full batches of 4 each
    assert [len(b) for b in two] == [2, 2] == [batches_per_epoch(28, 4, 2, chunks)] * 2
    for r, batches in enumerate(two):
        assert {int(chunks[i]) % 2 for b in batches for i in b} == {r}
    assert epoch_batches(28, 4, seed=1, epoch=3, rank=0, world_size=2, chunks=chunks) != two[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ddp_processes_read_disjoint_chunks_and_every_clip_once_an_epoch(synth_store, tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(HERE / "ddp_reader.py"), str(synth_store),
                               str(tmp_path / f"rank{r}.json"), "2", "2"],
                              env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    chunks = np.array(ranks[0]["clip_chunks"])
    assert len(chunks) == 20 and np.bincount(chunks).tolist() == [5, 5, 5, 5]
    for epoch in range(2):
        seen = ranks[0]["read"][epoch] + ranks[1]["read"][epoch]
        assert sorted(seen) == list(range(20)), f"epoch {epoch}: a clip read twice or never: {sorted(seen)}"
    assert ranks[0]["read"][0] != ranks[0]["read"][1]  # a new shuffle each epoch, over the same clips
    opened = [set(r["chunks_read"]) for r in ranks]
    assert opened[0] == {0, 2} and opened[1] == {1, 3}  # each process its own chunks
    assert ranks[0]["batches"] == [10, 10]  # clips each process read in epoch 0: as many steps for both


def test_frames_decoded_on_the_trainer_make_the_loaders_views(synth_store):
    """`decode_on: trainer` (nvjpeg on a GPU; here libjpeg-turbo in the training process): the loader sends JPEG
    bytes and crop boxes, and the views finished on the trainer are the ones it would have made from decoded frames."""
    from clpau.data.augment import finish_views

    kw = dict(clip_len=4, size=32, seed=5, frame_jitter=0.03, colour_on_host=False, crop_on_host=False)
    decoded = ClipDataset([synth_store], **kw).__getitems__([1, 8, 19])
    sent = ClipDataset([synth_store], decode_on_host=False, **kw).__getitems__([1, 8, 19])
    assert "frames" not in sent and sent["jpeg"].dtype == np.uint8 and len(sent["jpeg_lengths"]) == 3 * 4
    assert sent["jpeg"].nbytes * 8 < decoded["frames"].numel()  # what crosses to the trainer: 8x fewer bytes
    for a, b in zip(finish_views(decoded, 32), finish_views(sent, 32), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="needs the crop there too"):
        ClipDataset([synth_store], clip_len=4, decode_on_host=False)


def test_pretraining_decodes_a_stores_frames_on_the_trainer(synth_clips, synth_store, tmp_path, monkeypatch):
    """The GPU default (crop, colour and decoding on the trainer) run end to end on the CPU: Fabric passes the bytes
    through untouched, the step decodes them, and the views it trains on are the loader's views of the source clips
    (the shards the store was written from) within JPEG's loss."""
    import clpau.train.pretrain as pretrain
    from clpau.config import PretrainParams

    seen = []

    def spy(batch, size=None):
        views = pretrain_finish(batch, size)
        seen.append({"jpeg": "jpeg" in batch, "index": list(batch["index"]), "epoch": batch["epoch"],
                     "view_q": views[0].detach().clone()})
        return views

    pretrain_finish = pretrain.finish_views
    monkeypatch.setattr(pretrain, "finish_views", spy)
    p = PretrainParams(data=[synth_store], out_dir=tmp_path / "m", live_dir=tmp_path / "l", batch_clips=4, clip_len=4,
                       max_steps=3, log_every=1,
                       compute={"crop_on": "trainer", "colour_on": "trainer", "decode_on": "trainer"})
    assert pretrain.run_pretrain(p, progress=False, log=lambda *_: None)["steps"] == 3
    assert len(seen) == 3 and all(s["jpeg"] for s in seen)  # every step got bytes, not frames
    source = ClipDataset([synth_clips], clip_len=4, stride=p.frame_stride, size=p.image_size, seed=p.seed,
                         frame_jitter=p.frame_jitter)
    for s in seen:
        source.set_epoch(s["epoch"])
        err = (source.__getitems__(s["index"])["view_q"] - s["view_q"]).abs().mean().item()
        assert err < 0.05, err  # as test_a_batch_from_the_store_is_the_shards_batch_within_jpeg_loss
