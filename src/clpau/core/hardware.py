"""Choices that depend on the machine, made when a run starts and said in its log — never tuned into a default.

- Precision (`pretrain.compute.precision: auto`, and every other place that picks a dtype): bf16-mixed where the device runs
  bf16 natively — CPUs with AVX-512 BF16 or AMX (and PyTorch/oneDNN allowed to use them), CUDA devices that support
  bf16 —, 16-mixed on older CUDA devices, 32-true elsewhere. On a CPU without bf16 instructions every bf16 op is
  emulated: a `resnet_small` training step ran 3.4x slower in bf16 than in fp32 on an AVX2-only EPYC.
- torch.compile's kernel cache: one folder per instruction set (`isolate_compile_cache`).
- Cores: the CPUs this process may use (its affinity mask, capped by a cgroup CPU quota), not the host's count that
  `os.cpu_count()` reports inside a container.

`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` makes a richer CPU behave like an AVX2-only one (PyTorch's and
oneDNN's kernels stop at AVX2); the rule honours both, so `auto` picks what such a machine would.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

# what makes a richer CPU run an AVX2-only CPU's kernels (PyTorch's and oneDNN's), for benches and tests
AVX2_CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
PRECISIONS = ("auto", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "32-true", "64-true")
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# oneDNN's ISA ceiling names, weakest first (ONEDNN_MAX_CPU_ISA): from AVX512_CORE_BF16 on, bf16 runs natively
ONEDNN_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
               "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX", "AVX10_1_512_AMX",
               "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "DEFAULT", "ALL")


@dataclass(frozen=True)
class CpuInfo:
    """What decides whether bf16 is native: the CPU's flags and the ISA ceilings set for PyTorch and oneDNN."""
    flags: frozenset[str]
    aten_capability: str | None = None   # ATEN_CPU_CAPABILITY: default | avx2 | avx512 | ...
    onednn_max_isa: str | None = None    # ONEDNN_MAX_CPU_ISA

    @classmethod
    def current(cls, env: Mapping[str, str] = os.environ) -> CpuInfo:
        return cls(cpu_flags(), env.get("ATEN_CPU_CAPABILITY") or None, env.get("ONEDNN_MAX_CPU_ISA") or None)


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo); elsewhere what PyTorch itself detects of bf16."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    import torch

    found = set()
    if getattr(torch._C._cpu, "_is_avx512_bf16_supported", lambda: False)():
        found.add("avx512_bf16")
    if getattr(torch._C._cpu, "_is_amx_tile_supported", lambda: False)():
        found.add("amx_bf16")
    return frozenset(found)


def cpu_bf16(info: CpuInfo) -> tuple[bool, str]:
    """Whether bf16 runs natively on this CPU, and why (or why not)."""
    have = sorted(info.flags & BF16_FLAGS)
    if not have:
        return False, "the CPU has no bf16 instructions (no avx512_bf16 or amx_bf16 flag): bf16 would be emulated"
    aten = (info.aten_capability or "").lower()
    if aten in ("default", "avx2"):
        return False, f"ATEN_CPU_CAPABILITY={info.aten_capability} keeps PyTorch's kernels below AVX-512: bf16 " \
                      "would be emulated"
    isa = (info.onednn_max_isa or "").upper()
    if isa and isa in ONEDNN_ISAS and ONEDNN_ISAS.index(isa) < ONEDNN_ISAS.index("AVX512_CORE_BF16"):
        return False, f"ONEDNN_MAX_CPU_ISA={info.onednn_max_isa} keeps oneDNN below AVX512_CORE_BF16: bf16 would " \
                      "be emulated"
    return True, f"the CPU runs bf16 natively ({', '.join(have)})"


def device_type(accelerator: str) -> str:
    """The device a Fabric `accelerator` setting lands on: cuda, mps or cpu."""
    import torch

    if accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if accelerator == "mps" or (accelerator == "auto" and mps is not None and mps.is_available()):
        return "mps"
    return "cpu"


def resolve_precision(requested: str, device: str, cpu: CpuInfo | None = None,
                      cuda_bf16: bool | None = None) -> tuple[str, str]:
    """(precision, why) for Fabric: an explicit `requested` value is kept; `auto` follows the rule of this module."""
    if requested != "auto":
        return requested, "set explicitly"
    if device == "cuda":
        if cuda_bf16 is None:
            import torch

            cuda_bf16 = torch.cuda.is_bf16_supported()
        if cuda_bf16:
            return "bf16-mixed", "auto: the CUDA device supports bf16"
        return "16-mixed", "auto: the CUDA device has no bf16 (compute capability < 8.0): fp16 with loss scaling"
    if device == "cpu":
        native, why = cpu_bf16(cpu or CpuInfo.current())
        return ("bf16-mixed" if native else "32-true"), f"auto: {why}"
    return "32-true", f"auto: no mixed-precision rule for {device}"


def autocast_dtype(precision: str):
    """The autocast dtype a Fabric precision setting stands for (None: none, compute in the weights' dtype)."""
    import torch

    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2/v1 CPU quota (a container limited to
    2 CPUs on a 64-core host reports 64 to `os.cpu_count()`)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(n, quota) if quota else n)


def _cgroup_quota() -> int | None:
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return max(1, round(int(text[0]) / int(text[1])))
    except (OSError, ValueError, IndexError):
        pass
    try:
        q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if q > 0:
            return max(1, round(q / period))
    except (OSError, ValueError):
        pass
    return None


def isolate_compile_cache(env: MutableMapping[str, str] = os.environ) -> str | None:
    """Give torch.compile's kernel cache one folder per instruction set; returns the folder (None: the user set one).

    Inductor does not key its cached C++ kernels on the ISA ceiling or the CPU: a kernel built under
    `ATEN_CPU_CAPABILITY=avx2` and then loaded natively aborted the process (`Fatal Python error: Aborted`, seen here;
    a fresh cache ran). The same would hit machines of different CPUs sharing one home or /tmp. Sets
    TORCHINDUCTOR_CACHE_DIR to a folder named after PyTorch's CPU capability, the oneDNN ceiling and a digest of the
    CPU's flags, unless the user set one. Call it before torch.compile."""
    import getpass
    import hashlib
    import tempfile

    import torch
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # inductor writes its default into the environment the first time it looks: that one is not the user's choice
    if env.get("TORCHINDUCTOR_CACHE_DIR") not in (None, "", os.path.abspath(default_cache_dir())):
        return None

    flags = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:8]
    isa = f"{torch.backends.cpu.get_cpu_capability()}-{env.get('ONEDNN_MAX_CPU_ISA', 'all')}".lower()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    folder = Path(tempfile.gettempdir()) / f"torchinductor_{user}" / f"{isa}-{flags}"
    env["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    return str(folder)
