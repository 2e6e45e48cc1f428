"""The digest of what each method trains in a few steps: for refactors that must not change training.

Trains every method (and three readings of tcl) for --steps steps through `clpau pretrain`, on params.yaml's data,
and prints the sha256 of the encoder's tensors (every fold's for `supervised`). Run it before and after a change to
the code: equal digests mean bit-identical training on this machine.

    python bench/weights_digest.py [--steps 20] [--only tcl clp]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

CASES = {  # name -> (method, overrides of its sections)
    "tcl": ("tcl", {}), "clp": ("clp", {"cir": {"every": 4}}), "cir": ("cir", {}), "simclr": ("simclr", {}),
    "moco": ("moco", {}), "random": ("random", {}), "supervised": ("supervised", {}),
    "tcl_momentum": ("tcl", {"tcl": {"key_encoder": "momentum"}}),
    "tcl_time_contrast": ("tcl", {"tcl": {"variant": "time_contrast"}}),
    "tcl_motion": ("tcl", {"tcl": {"margin_by": "motion"}}),
}


def digest(path: Path) -> str:
    blob = torch.load(path, weights_only=True)
    h = hashlib.sha256()
    for state in [blob["state_dict"], *(blob.get("fold_state_dicts") or [])]:
        for k in sorted(state):
            h.update(k.encode())
            h.update(state[k].float().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--steps", type=int, default=20, help="steps per method (supervised: a third of them per fold)")
    ap.add_argument("--only", nargs="+", choices=list(CASES), default=list(CASES))
    args = ap.parse_args()
    base = yaml.safe_load(args.params.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.only:
            method, sections = CASES[case]
            p = copy.deepcopy(base)
            pre = p["pretrain"]
            pre.update(method=method, max_steps=max(1, args.steps // 3) if method == "supervised" else args.steps,
                       ckpt_every=10**6, out_dir=f"{tmp}/{case}", live_dir=f"{tmp}/{case}/live")
            for name, values in sections.items():
                pre[name] = {**pre.get(name, {}), **values}
            params = Path(tmp) / f"{case}.yaml"
            params.write_text(yaml.safe_dump(p))
            run = subprocess.run([sys.executable, "-m", "clpau", "--params", str(params), "pretrain", "--quiet"],
                                 capture_output=True, text=True)
            print(f"{case:<18} " + (digest(Path(tmp) / case / "encoder.pt") if run.returncode == 0
                                    else f"failed: {run.stderr.strip().splitlines()[-1]}"), flush=True)


if __name__ == "__main__":
    main()
