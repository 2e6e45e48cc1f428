"""Stage `validate`: a Great Expectations 1.x quality gate over an `extract` output (`videos.parquet`,
`clips.parquet`), thresholds in `params.yaml: validate`.

Expectations (each named, so a failed gate says which one and why):
- videos: share of inputs that gave face clips, share of each usable video's frames with a face, frame rate,
  no duplicate video (same sha256);
- clips: at least one clip, detector score, face size, brightness (dark or blown-out video), sharpness (blur),
  landmark jitter (unstable tracking), clip length.
Writes a JSON summary (`success`, one reason per failed expectation; `per_video`, each video's own reasons naming
the file and the figure, from GX's unexpected rows; `batch_failed`, what fails the batch as a whole) and GX data
docs (HTML). The ingest flow decides per video from `per_video` (docs/operations.md, "Triage").
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from clpau.core.fileio import write_json
from clpau.ops.params import ValidateParams

SUCCESS_STATUSES = ["ok", "multiple_faces", "truncated"]


def video_table(videos: pd.DataFrame) -> pd.DataFrame:
    v = videos[["video", "status", "error", "frames", "face_frames", "fps", "sha256"]].copy()
    v["face_share"] = (v["face_frames"] / v["frames"].where(v["frames"] > 0)).fillna(0.0)
    return v


# Where a failed expectation lands: "batch" expectations judge the batch as a whole (a batch mostly failing, no clip
# at all); "video" ones are row checks of the videos table; "clip" ones are row checks of the clips table, judged per
# video by the share of its clips that fail (more than 1 - mostly fails the video).
def expectations(p: ValidateParams) -> dict[str, list[tuple[str, str, object]]]:
    """(description, scope, GX expectation) per table; the description is what a failed gate reports."""
    import great_expectations.expectations as gxe

    m = p.mostly
    return {
        "videos": [
            (f"at least {p.min_video_share:.0%} of the videos give face clips (status ok)", "batch",
             gxe.ExpectColumnValuesToBeInSet(column="status", value_set=SUCCESS_STATUSES, mostly=p.min_video_share)),
            (f"a face in at least {p.min_face_share:.0%} of a video's frames", "video",
             gxe.ExpectColumnValuesToBeBetween(column="face_share", min_value=p.min_face_share, max_value=1.0,
                                               mostly=p.min_video_share)),
            (f"frame rate in [{p.min_fps}, {p.max_fps}] frames/s", "video",
             gxe.ExpectColumnValuesToBeBetween(column="fps", min_value=p.min_fps, max_value=p.max_fps,
                                               mostly=p.min_video_share)),
            ("no duplicate video (same sha256)", "batch", gxe.ExpectColumnValuesToBeUnique(column="sha256")),
        ],
        "clips": [
            ("at least one face clip", "batch", gxe.ExpectTableRowCountToBeBetween(min_value=1)),
            (f"detector score >= {p.min_det_score} in {m:.0%} of clips", "clip",
             gxe.ExpectColumnValuesToBeBetween(column="det_score", min_value=p.min_det_score, mostly=m)),
            (f"face size >= {p.min_face_size} px in {m:.0%} of clips", "clip",
             gxe.ExpectColumnValuesToBeBetween(column="face_size", min_value=p.min_face_size, mostly=m)),
            (f"brightness in [{p.min_brightness}, {p.max_brightness}] in {m:.0%} of clips", "clip",
             gxe.ExpectColumnValuesToBeBetween(column="brightness", min_value=p.min_brightness,
                                               max_value=p.max_brightness, mostly=m)),
            (f"sharpness >= {p.min_sharpness} in {m:.0%} of clips", "clip",
             gxe.ExpectColumnValuesToBeBetween(column="sharpness", min_value=p.min_sharpness, mostly=m)),
            (f"landmark jitter <= {p.max_landmark_jitter} in {m:.0%} of clips", "clip",
             gxe.ExpectColumnValuesToBeBetween(column="landmark_jitter", max_value=p.max_landmark_jitter, mostly=m)),
            (f"clips of at least {p.min_clip_frames} frames", "clip",
             gxe.ExpectColumnValuesToBeBetween(column="n_frames", min_value=p.min_clip_frames)),
        ],
    }


def _fmt(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _reason(description: str, result) -> str:
    r = result.result or {}
    if "observed_value" in r:
        return f"{description}: observed {r['observed_value']}"
    pct = r.get("unexpected_percent")
    examples = r.get("partial_unexpected_list") or []
    shown = ", ".join(_fmt(x) for x in examples[:5])
    return f"{description}: {pct:.0f} % of rows fail (e.g. {shown})" if pct is not None else description


def _batch_reason(failure: dict, videos: pd.DataFrame, p: ValidateParams) -> str:
    if failure["column"] == "status":
        ok = int(videos["status"].isin(SUCCESS_STATUSES).sum())
        return (f"{ok} of {len(videos)} videos give face clips (gate: at least {p.min_video_share:.0%}): the batch is "
                f"mostly unusable, every video of it is held back")
    return failure["reason"]


def video_reasons(videos: pd.DataFrame, clips: pd.DataFrame, failing: dict[tuple[str, str], list],
                  p: ValidateParams, clip_checks: list[tuple[str, str, object]]) -> dict[str, list[str]]:
    """Each video's own reasons, naming the file and the figure. `failing`: (table, column) -> GX's unexpected
    rows ({"video": ..., column: value}) of every row check."""
    name = {v: Path(str(v)).name for v in videos["video"]}
    reasons: dict[str, list[str]] = {v: [] for v in videos["video"]}
    for row in videos.itertuples():
        if row.status not in SUCCESS_STATUSES:
            reasons[row.video].append(f"{name[row.video]}: no face clip ({row.status}"
                                      + (f": {row.error}" if isinstance(row.error, str) and row.error else "") + ")")
        elif row.face_share < p.min_face_share:
            reasons[row.video].append(f"{name[row.video]}: a face in {row.face_share:.0%} of frames "
                                      f"(gate: {p.min_face_share:.0%})")
        if row.status in SUCCESS_STATUSES and not p.min_fps <= row.fps <= p.max_fps:
            reasons[row.video].append(f"{name[row.video]}: {row.fps:.1f} frames/s (gate: {p.min_fps}-{p.max_fps})")
    first: dict[str, str] = {}
    for v, sha in zip(videos["video"], videos["sha256"], strict=True):
        if sha and sha in first:  # a batch check: the first copy is judged on its own, the others go
            reasons[v].append(f"{name[v]}: the same file as {name[first[sha]]} in this batch (sha256 {sha[:12]}…): "
                              f"duplicate, the first copy is kept")
        elif sha:
            first[sha] = v
    per_video = clips.groupby("video").size() if len(clips) else pd.Series(dtype=int)
    descriptions = {e.column: (d, 1.0 if getattr(e, "mostly", None) is None else e.mostly)
                    for d, scope, e in clip_checks if scope == "clip"}
    for (table, column), rows in failing.items():
        if table != "clips" or column not in descriptions:
            continue
        description, mostly = descriptions[column]
        bad = pd.DataFrame(rows)
        for v, group in bad.groupby("video"):
            n = int(per_video.get(v, 0))
            if v in reasons and n and len(group) / n > 1 - mostly + 1e-9:
                shown = ", ".join(_fmt(float(x)) for x in group[column].head(3))
                reasons[v].append(f"{name[v]}: {len(group)} of its {n} clips fail \"{description}\" (e.g. {shown})")
    return reasons


def run_validate(clips_dir: Path, p: ValidateParams, out_dir: Path, name: str | None = None) -> dict:
    """Validate one extract output; returns and writes {success, failed, batch_failed, per_video, checked, docs}."""
    clips_dir = Path(clips_dir)
    for t in ("videos.parquet", "clips.parquet"):
        if not (clips_dir / t).exists():
            raise FileNotFoundError(f"{clips_dir / t} is missing: run `clpau extract … --out {clips_dir}` first")
    return validate_tables(pd.read_parquet(clips_dir / "videos.parquet"), pd.read_parquet(clips_dir / "clips.parquet"),
                           p, out_dir, name or clips_dir.name, data=str(clips_dir))


def validate_tables(videos: pd.DataFrame, clips: pd.DataFrame, p: ValidateParams, out_dir: Path, name: str,
                    data: str) -> dict:
    """The gate over an extract output's two tables (e.g. several single-video outputs read together):
    `success` = every expectation holds over the whole table (what `dvc repro` stops on); `per_video` = each
    video's own reasons (empty: it passes), `batch_failed` = what fails the batch as a whole (ingest triage)."""
    import great_expectations as gx

    out_dir = Path(out_dir)
    tables = {"videos": video_table(videos), "clips": clips}
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    docs_root = out_dir / "gx"
    shutil.rmtree(docs_root, ignore_errors=True)  # data docs of this run only
    ctx = gx.get_context(mode="file", project_root_dir=str(out_dir))
    ctx.variables.progress_bars = {"globally": False}
    ctx.variables.save()
    source = ctx.data_sources.add_pandas(name)
    failed, checked, failing = [], 0, {}
    suites = expectations(p)
    for table, items in suites.items():
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{name}.{table}"))
        for _, _, e in items:
            suite.add_expectation(e)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{name}.{table}", data=batch,
                                                                    suite=suite))
        checkpoint = ctx.checkpoints.add(gx.Checkpoint(
            name=f"{name}.{table}", validation_definitions=[vd],
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["video"]},
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")]))
        result = checkpoint.run(batch_parameters={"dataframe": tables[table]})
        # results come back in the suite's order; match them by expectation type and column to be safe
        described = {(e.expectation_type, getattr(e, "column", None)): (d, scope) for d, scope, e in items}
        for run in result.run_results.values():
            for r in run.results:
                checked += 1
                cfg = r.expectation_config
                column = cfg.kwargs.get("column")
                d, scope = described.get((cfg.type, column), (cfg.type, "batch"))
                if (r.result or {}).get("unexpected_index_list"):
                    failing[(table, column)] = r.result["unexpected_index_list"]
                if not r.success:
                    failed.append({"table": table, "expectation": cfg.type, "column": column, "scope": scope,
                                   "reason": _reason(d, r)})
    docs = next(iter(out_dir.glob("gx/uncommitted/data_docs/*/index.html")), None)
    reasons = video_reasons(tables["videos"], tables["clips"], failing, p, suites["clips"])
    summary = {"data": data, "success": not failed, "checked": checked, "failed": failed,
               "batch_failed": [_batch_reason(f, tables["videos"], p) for f in failed
                                if f["scope"] == "batch" and f["column"] != "sha256"],
               "videos": int(len(tables["videos"])), "clips": int(len(tables["clips"])),
               "videos_passed": sum(not r for r in reasons.values()),
               "per_video": reasons,
               "docs": str(docs) if docs else None}
    write_json(out_dir / "validation.json", summary, sort_keys=False)
    return summary
