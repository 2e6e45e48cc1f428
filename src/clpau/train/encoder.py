"""The downstream artefact `encoder.pt`: backbone weights and what rebuilds them, plain tensors and strings
(`torch.load(..., weights_only=True)`); `supervised` holds one backbone per fold."""

from __future__ import annotations

from pathlib import Path

import torch

from clpau.core.fileio import save_torch
from clpau.methods.backbones import build_backbone
from clpau.train.params import PretrainParams


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
