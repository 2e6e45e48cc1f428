"""`clpau drift REF CUR`: does a new batch (CUR, an `extract` output) differ from the training pool (REF)?

An Evidently 0.7 data-drift report over
- clip-level QC features (`drift.features`: detector score, face size, brightness, sharpness, landmark jitter), and
- the encoder's embeddings of a frame sample from each side, reduced to `drift.embedding_components` principal
  components fitted on the reference (new lighting, new kinds of faces or a new camera move the embeddings);
each aggregated per video (the mean over its clips / sampled frames). Per video, because clips of one video share
their person, light and camera: tested clip by clip, any new batch of a few people looks "drifted" (measured: 5 of
5 random splits of the training pool flagged), while the videos are the independent samples. One statistical test
per column (Evidently's default for the sample size: K-S p-value), a column drifts below
`drift.stattest_threshold`, and the batch is flagged when at least `drift.threshold` of the columns drift, or when
one QC feature drifts at p < `drift.feature_threshold` (a lighting change moves brightness and sharpness, 2 of 13
columns: measured, the share rule alone flagged 2 of 140 such batches; docs/operations.md, "Drift policy"). Writes
an HTML report and a JSON summary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clpau.core.fileio import atomic_path, write_json
from clpau.ops.params import DriftParams


def sample_frames(clips: pd.DataFrame, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(≤ n, S, S, 3) uint8 middle frames of randomly drawn clips, and their videos."""
    rng = np.random.default_rng(seed)
    pick = clips.iloc[np.sort(rng.choice(len(clips), min(n, len(clips)), replace=False))]
    maps: dict[str, np.ndarray] = {}
    out = []
    for path, start, length in zip(pick["shard_path"], pick["start_row"], pick["n_frames"], strict=True):
        if path not in maps:
            maps[path] = np.load(path, mmap_mode="r")
        out.append(np.asarray(maps[path][start + length // 2]))
    return np.stack(out), pick["video"].to_numpy()


def video_embeddings(clips: pd.DataFrame, p: DriftParams, seed: int, net=None, meta=None) -> pd.DataFrame:
    """Per video: the mean encoder embedding of `p.embedding_frames` frames sampled from its clips."""
    from clpau.eval.probe import encode
    from clpau.train.encoder import encoder_folds, load_encoder

    if net is None:
        net, meta = load_encoder(p.encoder, fold=0 if encoder_folds(p.encoder) else None)
    frames, videos = sample_frames(clips, p.embedding_frames, seed)
    return pd.DataFrame(encode(net, frames, meta["image_size"])).groupby(videos).mean()


def project(ref: pd.DataFrame, cur: pd.DataFrame, components: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both sides' per-video embeddings on the reference's first principal components."""
    mean = ref.to_numpy().mean(0)
    _, _, vt = np.linalg.svd(ref.to_numpy() - mean, full_matrices=False)
    basis = vt[:components].T
    cols = [f"emb_pc{i}" for i in range(basis.shape[1])]
    return (pd.DataFrame((ref.to_numpy() - mean) @ basis, columns=cols, index=ref.index),
            pd.DataFrame((cur.to_numpy() - mean) @ basis, columns=cols, index=cur.index))


def embedding_columns(ref_clips: pd.DataFrame, cur_clips: pd.DataFrame, p: DriftParams
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per video: the mean encoder embedding of its sampled frames, projected on the reference's principal
    components."""
    from clpau.train.encoder import encoder_folds, load_encoder

    net, meta = load_encoder(p.encoder, fold=0 if encoder_folds(p.encoder) else None)
    ref = video_embeddings(ref_clips, p, p.seed, net, meta)
    cur = video_embeddings(cur_clips, p, p.seed + 1, net, meta)
    return project(ref, cur, p.embedding_components)


def drift_tables(ref_clips: pd.DataFrame, cur_clips: pd.DataFrame, p: DriftParams
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current tables: one row per video, its clips' mean QC features and embedding components."""
    ref = ref_clips.groupby("video")[p.features].mean().astype(float)
    cur = cur_clips.groupby("video")[p.features].mean().astype(float)
    if p.embedding_components and Path(p.encoder).exists():
        er, ec = embedding_columns(ref_clips, cur_clips, p)
        ref, cur = ref.join(er), cur.join(ec)
    return ref.reset_index(drop=True), cur.reset_index(drop=True)


def detect_drift(ref: pd.DataFrame, cur: pd.DataFrame, p: DriftParams, html: Path | None = None) -> dict:
    """Evidently's column tests + our decision; optional HTML report."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    report = Report([DataDriftPreset(drift_share=p.threshold, threshold=p.stattest_threshold)])
    snapshot = report.run(cur, ref)
    columns = {}
    for m in snapshot.dict()["metrics"]:
        cfg = m.get("config") or {}
        if cfg.get("type", "").endswith("ValueDrift") or m["metric_name"].startswith("ValueDrift("):
            col = cfg.get("column") or m["metric_name"].split("column=")[1].split(",")[0]
            method = cfg.get("method") or m["metric_name"].split("method=")[1].split(",")[0]
            threshold = float(cfg.get("threshold", p.stattest_threshold))
            value = float(m["value"])
            # p-value tests drift below the threshold, distance tests above it
            drifted = value < threshold if "p_value" in method else value > threshold
            columns[col] = {"method": method, "value": round(value, 6), "threshold": threshold, "drift": drifted}
    if html is not None:
        with atomic_path(html) as tmp:
            snapshot.save_html(str(tmp))
    share = float(np.mean([c["drift"] for c in columns.values()])) if columns else 0.0
    # one QC feature far off (a new camera, a dark room) is drift however few columns move with it
    alarms = [c for c, v in columns.items() if c in p.features and "p_value" in v["method"]
              and v["value"] < p.feature_threshold]
    return {"drift": share >= p.threshold or bool(alarms), "drifted_share": round(share, 4), "threshold": p.threshold,
            "share_alarm": share >= p.threshold, "feature_alarms": alarms,
            "columns": columns, "drifted_columns": [k for k, c in columns.items() if c["drift"]],
            "reference_rows": len(ref), "current_rows": len(cur)}


def run_drift(reference: Path, current: Path | list[Path], p: DriftParams, out_dir: Path) -> dict:
    """`current`: one extract output, or several read as one (the single-video outputs of an ingest batch)."""
    from clpau.data.clips import load_clips

    ref_clips = load_clips([reference], span=1)
    currents = list(current) if isinstance(current, (list, tuple)) else [current]
    try:
        cur_clips = load_clips(currents, span=1)
    except ValueError:
        raise ValueError(f"{', '.join(map(str, currents))}: no face clip, nothing to compare (the quality gate "
                         f"fails it first)") from None
    ref, cur = drift_tables(ref_clips, cur_clips, p)
    out_dir = Path(out_dir)
    summary = {"reference": str(reference), "current": ", ".join(map(str, currents)), "videos": len(cur),
               **detect_drift(ref, cur, p, out_dir / "drift.html")}
    write_json(out_dir / "drift.json", summary, sort_keys=False)
    return summary
