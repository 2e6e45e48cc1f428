"""Hardware-dependent choices (hardware.py): `precision: auto` from the CPU's flags and the ISA ceilings, CPUs."""

import os

import pytest
import torch

from clpau.config import ConfigError, load_params
from clpau.core.hardware import (
    CpuInfo,
    autocast_dtype,
    cpu_flags,
    isolate_compile_cache,
    resolve_precision,
    usable_cpus,
)

# flags as /proc/cpuinfo lists them: an AVX2-only EPYC (Zen 2/3), an AVX-512 CPU without bf16 (Skylake-SP), Zen 4,
# Sapphire Rapids (AMX)
AVX2_ONLY = frozenset(["sse4_2", "avx", "fma", "avx2", "bmi2"])
AVX512_NO_BF16 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
ZEN4 = AVX512_NO_BF16 | {"avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_bf16", "amx_tile", "amx_int8"}


@pytest.mark.parametrize("flags", [AVX2_ONLY, AVX512_NO_BF16])
def test_auto_is_fp32_on_a_cpu_without_bf16(flags):
    precision, why = resolve_precision("auto", "cpu", CpuInfo(flags))
    assert precision == "32-true"
    assert "no bf16 instructions" in why


@pytest.mark.parametrize("flags", [ZEN4, SAPPHIRE_RAPIDS])
def test_auto_is_bf16_where_the_cpu_has_it(flags):
    precision, why = resolve_precision("auto", "cpu", CpuInfo(flags))
    assert precision == "bf16-mixed"
    assert "natively" in why


@pytest.mark.parametrize("aten, onednn", [("avx2", None), (None, "AVX2"), ("avx2", "AVX2"), (None, "AVX512_CORE")])
def test_auto_is_fp32_when_the_isa_is_capped_below_bf16(aten, onednn):
    """The emulation of an AVX2-only CPU (or any ceiling below bf16) on a bf16 CPU: auto picks what that CPU would."""
    precision, why = resolve_precision("auto", "cpu", CpuInfo(SAPPHIRE_RAPIDS, aten, onednn))
    assert precision == "32-true"
    assert ("ATEN_CPU_CAPABILITY" if aten else "ONEDNN_MAX_CPU_ISA") in why


def test_auto_keeps_bf16_under_a_ceiling_that_allows_it():
    assert resolve_precision("auto", "cpu", CpuInfo(ZEN4, "avx512", "AVX512_CORE_BF16"))[0] == "bf16-mixed"


@pytest.mark.parametrize("explicit", ["bf16-mixed", "32-true", "16-mixed"])
def test_an_explicit_precision_is_kept(explicit):
    for flags in (AVX2_ONLY, ZEN4):
        assert resolve_precision(explicit, "cpu", CpuInfo(flags)) == (explicit, "set explicitly")
    assert resolve_precision(explicit, "cuda", cuda_bf16=False)[0] == explicit


def test_auto_on_cuda_follows_bf16_support():
    assert resolve_precision("auto", "cuda", cuda_bf16=True)[0] == "bf16-mixed"
    assert resolve_precision("auto", "cuda", cuda_bf16=False)[0] == "16-mixed"


def test_the_current_environment_is_read(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    info = CpuInfo.current()
    assert (info.aten_capability, info.onednn_max_isa) == ("avx2", "AVX2")
    assert info.flags == cpu_flags()
    assert resolve_precision("auto", "cpu", info)[0] == "32-true"


def test_precision_is_validated_at_load(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("pretrain:\n  compute:\n    precision: bf16\n")
    with pytest.raises(ConfigError, match="pretrain.compute.precision"):
        load_params(path)
    path.write_text("pretrain: {}\n")
    assert load_params(path).pretrain.compute.precision == "auto"


def test_autocast_dtype():
    assert autocast_dtype("bf16-mixed") is torch.bfloat16
    assert autocast_dtype("16-mixed") is torch.float16
    assert autocast_dtype("32-true") is None


def test_usable_cpus_is_within_the_affinity_mask():
    n = usable_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def test_compiled_kernels_are_cached_apart_per_instruction_set(monkeypatch):
    """Inductor's cache is not keyed on the ISA ceiling: kernels built under the AVX2 caps, loaded natively, aborted
    the test process. Each ceiling gets its own folder; a folder the user chose is left alone."""
    native, capped = {}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    a, b = isolate_compile_cache(native), isolate_compile_cache(capped)
    assert a != b and native["TORCHINDUCTOR_CACHE_DIR"] == a and "avx2" in b
    assert isolate_compile_cache({"TORCHINDUCTOR_CACHE_DIR": "/mine"}) is None
    # inductor's own default, written into the environment by an earlier compile, is not a user's choice
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    assert isolate_compile_cache({"TORCHINDUCTOR_CACHE_DIR": os.path.abspath(default_cache_dir())}) == a
