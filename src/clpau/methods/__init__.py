"""Pretraining methods: one file each on a shared base (base.py), their shared blocks in heads.py, the backbones
in backbones.py. `METHODS` is the one list of them: params validation (`pretrain.method`), the CLI's help and the
loop read it. `SECTIONS` are the methods' params sections (`pretrain.<section>` in params.yaml).

    tcl         CLP's in-clip temporal contrast (tcl.py)               sections: tcl
    clp         TCL + cross-identity reconstruction (clp.py)           sections: tcl, cir
    cir         CIR alone, the ablation (cir.py)                       sections: cir
    simclr      NT-Xent on frames (simclr.py)                          sections: simclr
    moco        MoCo v2 on frames (moco.py)                            sections: moco
    supervised  AU labels of the training folds, the upper bound (supervised.py)
    random      the untrained encoder, the floor (random.py)
"""

from __future__ import annotations

from clpau.methods.base import Method
from clpau.methods.cir import CIROnly, CIRParams
from clpau.methods.clp import CLP
from clpau.methods.moco import MoCo, MoCoParams
from clpau.methods.random import Random
from clpau.methods.simclr import SimCLR, SimCLRParams
from clpau.methods.supervised import Supervised
from clpau.methods.tcl import TCL, TCLParams

METHODS: dict[str, type[Method]] = {m.name: m for m in (TCL, CLP, CIROnly, SimCLR, MoCo, Supervised, Random)}
SECTIONS = {"tcl": TCLParams, "cir": CIRParams, "moco": MoCoParams, "simclr": SimCLRParams}

__all__ = ["METHODS", "SECTIONS", "Method"]
