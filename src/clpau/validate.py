"""Stage `validate`: a Great Expectations 1.x quality gate over an `extract` output (`videos.parquet`,
`clips.parquet`), thresholds in `params.yaml: validate`.

Expectations (each named, so a failed gate says which one and why):
- videos: share of inputs that gave face clips, share of each usable video's frames with a face, frame rate,
  no duplicate video (same sha256);
- clips: at least one clip, detector score, face size, brightness (dark or blown-out video), sharpness (blur),
  landmark jitter (unstable tracking), clip length.
Writes a JSON summary (`success`, one reason per failed expectation) and GX data docs (HTML).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from .config import ValidateParams
from .fileio import write_json

SUCCESS_STATUSES = ["ok", "multiple_faces", "truncated"]


def video_table(videos: pd.DataFrame) -> pd.DataFrame:
    v = videos[["video", "status", "frames", "face_frames", "fps", "sha256"]].copy()
    v["face_share"] = (v["face_frames"] / v["frames"].where(v["frames"] > 0)).fillna(0.0)
    return v


def expectations(p: ValidateParams) -> dict[str, list[tuple[str, object]]]:
    """(description, GX expectation) per table; the description is what a failed gate reports."""
    import great_expectations.expectations as gxe

    m = p.mostly
    return {
        "videos": [
            (f"at least {p.min_video_share:.0%} of the videos give face clips (status ok)",
             gxe.ExpectColumnValuesToBeInSet(column="status", value_set=SUCCESS_STATUSES, mostly=p.min_video_share)),
            (f"a face in at least {p.min_face_share:.0%} of a video's frames",
             gxe.ExpectColumnValuesToBeBetween(column="face_share", min_value=p.min_face_share, max_value=1.0,
                                               mostly=p.min_video_share)),
            (f"frame rate in [{p.min_fps}, {p.max_fps}] frames/s",
             gxe.ExpectColumnValuesToBeBetween(column="fps", min_value=p.min_fps, max_value=p.max_fps,
                                               mostly=p.min_video_share)),
            ("no duplicate video (same sha256)", gxe.ExpectColumnValuesToBeUnique(column="sha256")),
        ],
        "clips": [
            ("at least one face clip", gxe.ExpectTableRowCountToBeBetween(min_value=1)),
            (f"detector score >= {p.min_det_score} in {m:.0%} of clips",
             gxe.ExpectColumnValuesToBeBetween(column="det_score", min_value=p.min_det_score, mostly=m)),
            (f"face size >= {p.min_face_size} px in {m:.0%} of clips",
             gxe.ExpectColumnValuesToBeBetween(column="face_size", min_value=p.min_face_size, mostly=m)),
            (f"brightness in [{p.min_brightness}, {p.max_brightness}] in {m:.0%} of clips",
             gxe.ExpectColumnValuesToBeBetween(column="brightness", min_value=p.min_brightness,
                                               max_value=p.max_brightness, mostly=m)),
            (f"sharpness >= {p.min_sharpness} in {m:.0%} of clips",
             gxe.ExpectColumnValuesToBeBetween(column="sharpness", min_value=p.min_sharpness, mostly=m)),
            (f"landmark jitter <= {p.max_landmark_jitter} in {m:.0%} of clips",
             gxe.ExpectColumnValuesToBeBetween(column="landmark_jitter", max_value=p.max_landmark_jitter, mostly=m)),
            (f"clips of at least {p.min_clip_frames} frames",
             gxe.ExpectColumnValuesToBeBetween(column="n_frames", min_value=p.min_clip_frames)),
        ],
    }


def _reason(description: str, result) -> str:
    r = result.result or {}
    if "observed_value" in r:
        return f"{description}: observed {r['observed_value']}"
    pct = r.get("unexpected_percent")
    examples = r.get("partial_unexpected_list") or []
    shown = ", ".join(f"{x:.3g}" if isinstance(x, float) else str(x) for x in examples[:5])
    return f"{description}: {pct:.0f} % of rows fail (e.g. {shown})" if pct is not None else description


def run_validate(clips_dir: Path, p: ValidateParams, out_dir: Path, name: str | None = None) -> dict:
    """Validate one extract output; returns and writes {success, failed: [reasons], checked, docs}."""
    import great_expectations as gx

    clips_dir, out_dir = Path(clips_dir), Path(out_dir)
    name = name or clips_dir.name
    for t in ("videos.parquet", "clips.parquet"):
        if not (clips_dir / t).exists():
            raise FileNotFoundError(f"{clips_dir / t} is missing: run `clpau extract … --out {clips_dir}` first")
    tables = {"videos": video_table(pd.read_parquet(clips_dir / "videos.parquet")),
              "clips": pd.read_parquet(clips_dir / "clips.parquet")}
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    docs_root = out_dir / "gx"
    shutil.rmtree(docs_root, ignore_errors=True)  # data docs of this run only
    ctx = gx.get_context(mode="file", project_root_dir=str(out_dir))
    ctx.variables.progress_bars = {"globally": False}
    ctx.variables.save()
    source = ctx.data_sources.add_pandas(name)
    failed, checked = [], 0
    for table, items in expectations(p).items():
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{name}.{table}"))
        for _, e in items:
            suite.add_expectation(e)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{name}.{table}", data=batch,
                                                                    suite=suite))
        checkpoint = ctx.checkpoints.add(gx.Checkpoint(
            name=f"{name}.{table}", validation_definitions=[vd], result_format="SUMMARY",
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")]))
        result = checkpoint.run(batch_parameters={"dataframe": tables[table]})
        # results come back in the suite's order; match them by expectation type and column to be safe
        described = {(e.expectation_type, getattr(e, "column", None)): d for d, e in items}
        for run in result.run_results.values():
            for r in run.results:
                checked += 1
                cfg = r.expectation_config
                if not r.success:
                    d = described.get((cfg.type, cfg.kwargs.get("column")), cfg.type)
                    failed.append({"table": table, "expectation": cfg.type, "column": cfg.kwargs.get("column"),
                                   "reason": _reason(d, r)})
    docs = next(iter(out_dir.glob("gx/uncommitted/data_docs/*/index.html")), None)
    summary = {"data": str(clips_dir), "success": not failed, "checked": checked, "failed": failed,
               "videos": int(len(tables["videos"])), "clips": int(len(tables["clips"])),
               "docs": str(docs) if docs else None}
    write_json(out_dir / "validation.json", summary, sort_keys=False)
    return summary
