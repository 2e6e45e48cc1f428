"""What a checkpoint depends on: a resumed run continues only a run of the same parameters, code and data."""

from __future__ import annotations

import hashlib
import json

from clpau.core.fileio import hash_modules
from clpau.core.hardware import device_type, resolve_precision
from clpau.core.params import BenchmarkParams
from clpau.data.clips import clip_table
from clpau.data.jpeg_store import JpegStore, is_store
from clpau.methods import METHODS, SECTIONS
from clpau.train.params import PretrainParams

TRAINING_CODE = ("core", "data", "methods", "train")  # the stage's code deps (dvc.yaml)


def fingerprint(p: PretrainParams, bench: BenchmarkParams | None = None) -> str:
    """What a checkpoint depends on: the loop's parameters (but where and how often things are written, the loader's
    processes, where the colour jitter, the crop and a store's decoding run; `precision` as resolved on this
    machine), the sections the method reads (but whether the keys' forward is compiled), the training code and the
    data's clip tables — when any of them changes DVC reruns the stage, and an old checkpoint must not stand in for
    the new run."""
    unused = set(SECTIONS) - set(METHODS[p.method].sections)
    written = dict.fromkeys(["log_every", "ckpt_every", "out_dir", "live_dir", "store_cache", *unused], True)
    placed = {"compute": {"num_workers", "colour_on", "crop_on", "decode_on"}}
    relevant = p.model_dump(mode="json", exclude=written | placed)
    for section in METHODS[p.method].sections:
        relevant[section].pop("compile_keys", None)
    # the precision the run trains in, not the word `auto`: a finished fp32 run of an AVX2 machine must not stand in
    # for this machine's bf16 run (the checkpoint folder persists across `dvc repro --force`)
    relevant["compute"]["precision"] = resolve_precision(p.compute.precision, device_type(p.compute.accelerator))[0]
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
