"""Time to quality: a method's mean F1 and same_subject_nn against seconds of pretraining on this CPU.

    python bench/time_to_quality.py --tag after --budgets 300 600 900 1200            # params.yaml as it is
    python bench/time_to_quality.py --tag before --set lr=0.002 warmup_steps=20 ...   # other pretrain settings
    python bench/time_to_quality.py --tag after --budgets 900 --seeds 1 2             # the check seeds
    python bench/time_to_quality.py --isa avx2 --tag after-avx2 --budgets 900         # an AVX2-only CPU's kernels
    python bench/time_to_quality.py --plot docs/time_to_quality.png                   # figure + markdown table

Each (budget, seed) is one real `clpau pretrain` run (`run_pretrain`, params.yaml's `pretrain` section with
`max_steps` = the budget and the `--set` overrides; the cosine schedule spans the budget, as it would in a run of that
length) in a subprocess of its own (the ISA ceiling must be set before torch loads), timed from the call to the
written encoder, then probed with `clpau evaluate`'s protocol (folds, linear probe on all training frames,
person-independence figures). Results accumulate in reports/time_to_quality.json, one row per (tag, budget, seed),
a rerun replacing its row. Needs the pipeline's data (`dvc repro trainset`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from clpau.core.hardware import AVX2_CAPS
from clpau.eval.scores import spread

RESULTS = Path("reports/time_to_quality.json")

CHILD = """
import json, sys, time
from pathlib import Path
from clpau.config import load_params
from clpau.train.pretrain import run_pretrain
from clpau.eval.evaluate import run_evaluate
out, steps, seed, overrides = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
params = load_params()
base = params.pretrain.model_dump()
for k, v in overrides.items():  # a subsection's keys merge into it
    base[k] = {**base[k], **v} if isinstance(v, dict) else v
p = params.pretrain.model_validate({**base, "max_steps": steps, "seed": seed, "out_dir": out, "live_dir": out / "live",
                                    "ckpt_every": 10**6})
t = time.perf_counter()
run_pretrain(p, progress=False, log=lambda m: None)
seconds = time.perf_counter() - t
e = params.evaluate.model_copy(update={"encoder": out / "encoder.pt", "metrics": out / "eval.json",
                                       "plots_dir": out / "plots", "probe_out": out / "probe.pt",
                                       "label_fractions": [1.0]})
m = run_evaluate(params.benchmark, e, p.data, progress=False, log=lambda m: None)
print(json.dumps({"seconds": seconds, "method": p.method, **{k: m[k] for k in ("f1_mean", "f1_std", "same_subject_nn",
                                                           "cross_subject_knn_f1", "subject_variance_share")}}))
"""


def parse_set(items: list[str]) -> dict:
    """key=value pairs of the pretrain section (a dotted key for a subsection: tcl.tau=0.2), values read as YAML
    (numbers, booleans, lists)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        *sections, leaf = key.split(".")
        node = out
        for name in sections:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(value)
    return out


def run(budget: int, seed: int, overrides: dict, isa: str) -> dict:
    env = dict(os.environ, **(AVX2_CAPS if isa == "avx2" else {}))
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", CHILD, out, str(budget), str(seed), json.dumps(overrides)],
                              env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"time_to_quality: budget {budget} seed {seed} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def load() -> list[dict]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else []


def table(rows: list[dict]) -> str:
    """Mean ± std over seeds per (tag, budget); seeds listed."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["tag"], r["budget"]), []).append(r)
    lines = ["| settings | steps | seeds | pretraining s | mean F1 | same_subject_nn | cross_subject_knn_f1 |",
             "|---|---|---|---|---|---|---|"]

    def ms(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "n/a"
        return f"{statistics.mean(vals):.3f}" + (f" ± {spread(vals):.3f}" if len(vals) > 1 else "")

    for (tag, budget), rs in sorted(groups.items()):
        lines.append(f"| {tag} | {budget} | {', '.join(str(r['seed']) for r in sorted(rs, key=lambda r: r['seed']))} "
                     f"| {statistics.mean(r['seconds'] for r in rs):.0f} | {ms([r['f1_mean'] for r in rs])} | "
                     f"{ms([r['same_subject_nn'] for r in rs])} | {ms([r['cross_subject_knn_f1'] for r in rs])} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # CLP's readings (clp, tcl); the baselines stay in the table. Rows written before the method was recorded were clp
    rows = [r for r in rows if (r.get("method") or r["set"].get("method", "clp")) in {"clp", "tcl"}]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for tag in sorted({r["tag"] for r in rows}):
        mine = [r for r in rows if r["tag"] == tag]
        for ax, key in zip(axes, ("f1_mean", "same_subject_nn"), strict=True):
            ax.scatter([r["seconds"] for r in mine], [r[key] for r in mine], s=14, alpha=0.5)
            budgets = sorted({r["budget"] for r in mine})
            xs = [statistics.mean(r["seconds"] for r in mine if r["budget"] == b) for b in budgets]
            ys = [statistics.mean(r[key] for r in mine if r["budget"] == b) for b in budgets]
            ax.plot(xs, ys, marker="o", label=tag)
    axes[0].axhline(0.55, color="grey", ls=":", lw=1)
    axes[1].axhline(0.75, color="grey", ls=":", lw=1)
    axes[0].set(xlabel="seconds of pretraining", ylabel="mean F1 (linear probe, 3 folds)", title="AU detection ↑")
    axes[1].set(xlabel="seconds of pretraining", ylabel="same_subject_nn", title="person-bound neighbours ↓")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", default="params.yaml", help="name of these settings in the table and figure")
    ap.add_argument("--budgets", nargs="+", type=int, default=[300, 600, 900, 1200], help="pretraining steps")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="pretrain overrides")
    ap.add_argument("--isa", default="native", choices=["native", "avx2"])
    ap.add_argument("--plot", type=Path, help="only draw the figure (and print the table) from the results so far")
    args = ap.parse_args()
    if args.plot:
        rows = load()
        plot(rows, args.plot)
        print(table(rows))
        return 0
    overrides = parse_set(args.set)
    for seed in args.seeds:
        for budget in args.budgets:
            r = {"tag": args.tag, "budget": budget, "seed": seed, "isa": args.isa, "set": overrides,
                 **run(budget, seed, overrides, args.isa)}
            rows = [x for x in load() if (x["tag"], x["budget"], x["seed"]) != (args.tag, budget, seed)] + [r]
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(rows, indent=1))
            print(f"{args.tag} {budget} steps seed {seed}: {r['seconds']:.0f} s, F1 {r['f1_mean']:.3f}, "
                  f"same_subject_nn {r['same_subject_nn']:.3f}", flush=True)
    print(table([x for x in load() if x["tag"] == args.tag]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
