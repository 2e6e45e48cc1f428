"""`clpau predict VIDEO`: AU occurrence and probability for every frame of a video, as an OpenFace-style CSV.

The video goes through the same extraction as training data (dlib detection, tracking, alignment), the encoder
(`evaluate.encoder`) and the probe `clpau evaluate` fitted on every labelled subject (`evaluate.probe_out`).
Every decoded frame is a row; frames without a face keep their row with `face_detected` 0 and empty AU values.

Columns: `frame` (0-based decoded index), `timestamp` (s), `face_detected` (0/1), `confidence` (the face
detector's score squashed to 0-1 by a logistic: 0.5 = dlib's own threshold), `AU01_c` … (occurrence 0/1, at the
probe's threshold), `AU01_p` … (probability).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clpau.core.fileio import atomic_path
from clpau.video.params import ExtractParams


class PredictError(RuntimeError):
    """A video that could not be analysed at all (unreadable, no video stream, …)."""


SYNTHETIC_WARNING = ("warning: this AU detector was trained on the synthetic benchmark only (benchmark.dataset = "
                     "synth). Its outputs on real faces are a demonstration, not measurements: train the probe on "
                     "a labelled real dataset (BP4D, DISFA, GFT) before using them.")


def load_detector(encoder_path: Path, probe_path: Path) -> tuple[torch.nn.Module, dict]:
    from clpau.train.encoder import load_encoder

    for path, stage in ((encoder_path, "clpau pretrain"), (probe_path, "clpau evaluate")):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} is missing: run `{stage}` (or `dvc repro`) first")
    probe = torch.load(probe_path, map_location="cpu", weights_only=True)
    fold = probe["encoder_fold"] if probe["encoder_fold"] >= 0 else None
    net, meta = load_encoder(encoder_path, fold=fold)
    if meta["method"] != probe["method"]:
        raise ValueError(f"{probe_path} was fitted on a `{probe['method']}` encoder, {encoder_path} is "
                         f"`{meta['method']}`: rerun `clpau evaluate`")
    return net, probe


def run_predict(video: Path, encoder_path: Path, probe_path: Path, extract: ExtractParams,
                out_csv: Path, plot: Path | None = None, workers: int | None = None, progress: bool = True,
                log=print) -> pd.DataFrame:
    from clpau.eval.probe import encode, probe_proba
    from clpau.video.extract import SUCCESS, run_extract

    video = Path(video)
    net, probe = load_detector(encoder_path, probe_path)
    if probe["dataset"] == "synth":
        log(SYNTHETIC_WARNING)
    aus = [int(a) for a in probe["aus"]]
    # a short video still gets every frame analysed: clips are not needed here
    extract = extract.model_copy(update={"clip_len": 3, "clip_stride": 1})
    with tempfile.TemporaryDirectory(prefix="clpau-predict-") as work:
        summary = run_extract([video], Path(work), extract, workers=workers, progress=progress)
        row = summary.videos.iloc[0]
        if row["status"] not in SUCCESS and row["status"] not in ("no_face", "face_too_small"):
            raise PredictError(f"{video}: {row['status']}: {row['error']}")
        n = int(row["frames"])
        index_path = Path(work) / "frames" / row["key"] / "index.parquet"
        if index_path.exists():
            index = pd.read_parquet(index_path, columns=["frame", "timestamp", "face", "row", "det_score"])
            crops = np.load(Path(work) / "frames" / row["key"] / "faces.npy")
        else:  # no face anywhere: one empty row per decoded frame
            index = pd.DataFrame({"frame": np.arange(n), "timestamp": np.arange(n) / max(float(row["fps"]), 1e-9),
                                  "face": False, "row": -1, "det_score": np.nan})
            crops = np.zeros((0, extract.crop_size, extract.crop_size, 3), np.uint8)
    face = index["face"].to_numpy()
    proba = np.full((len(index), len(aus)), np.nan, np.float32)
    if face.any():
        feats = encode(net, crops[index["row"].to_numpy()[face]], probe["image_size"])
        proba[face] = probe_proba(probe, feats)
    table = pd.DataFrame({"frame": index["frame"].to_numpy(), "timestamp": index["timestamp"].round(4).to_numpy(),
                          "face_detected": face.astype(int),
                          "confidence": np.where(face, 1 / (1 + np.exp(-index["det_score"].fillna(-50))), 0.0)
                          .round(3)})
    threshold = float(probe["threshold"])
    for j, au in enumerate(aus):
        table[f"AU{au:02d}_c"] = pd.array(np.where(face, proba[:, j] >= threshold, 0), dtype="Int8")
        table.loc[~face, f"AU{au:02d}_c"] = pd.NA
    for j, au in enumerate(aus):
        table[f"AU{au:02d}_p"] = np.round(proba[:, j], 4)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, na_rep="")
    if plot is not None:
        from clpau.eval.plots import timeline_plot

        title = f"{video.name}: AU probabilities ({probe['method']} encoder, probe trained on {probe['dataset']})"
        timeline_plot(plot, table["timestamp"].to_numpy(), np.nan_to_num(proba), face, aus, title)
    return table
