"""`clpau compare`: one table of the DVC experiments' evaluations, read from `dvc exp show --json`, written as markdown
(`reports/compare.md`) and as one picture beside it (`reports/compare.png`): per method, mean ± std over the pretraining seeds of F1 and of the person-independence
figures, identity leakage, label efficiency and per-AU F1. The newest evaluation of each (method, seed) counts."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
from pathlib import Path

from clpau.core.fileio import write_text
from clpau.eval.scores import spread

ORDER = ["random", "simclr", "moco", "tcl", "cir", "clp", "supervised"]
# `make compare`/`make study` name runs cmp-<label>-s<seed>: the label (a method, or a method's reading such as
# clp-8x4) is the table's row, so readings of one method are not pooled as if they were seeds
RUN_NAME = re.compile(r"^cmp-(.+)-s\d+$")
# (key in metrics/evaluate.json, column title): lower is more person-independent for ↓, higher for ↑
FIGURES = [("f1_mean", "mean F1"), ("same_subject_nn", "same-subject NN ↓"),
           ("cross_subject_knn_f1", "cross-subject kNN F1 ↑"), ("subject_variance_share", "subject variance ↓"),
           ("identity_leakage", "identity leakage")]


class CompareError(RuntimeError):
    """No experiments to compare, or `dvc exp show` failed."""


def collect(exp_show: list) -> list[dict]:
    """Rows {name, method, seed, metrics, experiment} of every state in `dvc exp show --json` output that has an
    evaluation."""
    rows = []

    def visit(state: dict, depth: int = 0) -> None:
        data = state.get("data") or {}
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        metrics = ((data.get("metrics") or {}).get("metrics/evaluate.json") or {}).get("data")
        if metrics and "f1_mean" in metrics:
            rev = state.get("rev", "")
            pretrain = params.get("pretrain") or {}
            name = state.get("name") or (rev[:7] if len(rev) == 40 else rev)
            method = pretrain.get("method", metrics.get("method"))
            label = m.group(1) if (m := RUN_NAME.match(name)) else method
            rows.append({"name": name, "method": label, "seed": pretrain.get("seed", 0), "metrics": metrics,
                         "experiment": depth > 0})
        for group in state.get("experiments") or []:
            if (group.get("executor") or {}).get("state") in ("queued", "running", "failed"):
                continue  # a running experiment shows its base commit's metrics until it finishes
            for rev in group.get("revs") or []:
                visit(rev, depth + 1)

    for state in exp_show:
        visit(state)
    return rows


def latest_per_seed(rows: list[dict]) -> list[dict]:
    """One row per (method, seed): experiments before commits and the workspace, newest first (`dvc exp show`'s
    order); sorted by method (ORDER), then seed."""
    seen, out = set(), []
    for row in sorted(rows, key=lambda r: not r["experiment"]):
        key = (row["method"], row["seed"])
        if key not in seen:
            seen.add(key)
            out.append(row)
    rank = {m: i for i, m in enumerate(ORDER)}
    return sorted(out, key=lambda r: (rank.get(str(r["method"]).split("-")[0], len(ORDER)), str(r["method"]),
                                      r["seed"]))


def summarise(rows: list[dict]) -> list[dict]:
    """Per method: {method, seeds, names, n, <figure>: (mean, std over seeds) ...}. With one seed the std is that
    run's std over folds for F1 and None for the rest."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        runs = [r for r in rows if r["method"] == method]
        s = {"method": method, "seeds": [r["seed"] for r in runs], "names": [r["name"] for r in runs],
             "steps": runs[0]["metrics"].get("encoder_step"), "runs": runs}
        for key, _ in FIGURES:
            values = [r["metrics"].get(key) for r in runs if r["metrics"].get(key) is not None]
            if not values:
                s[key] = (None, None)
            elif len(values) > 1:
                s[key] = (statistics.mean(values), spread(values))
            else:
                s[key] = (values[0], runs[0]["metrics"].get("f1_std") if key == "f1_mean" else None)
        for frac in ("0.01", "0.1"):
            values = [((r["metrics"].get("label_efficiency") or {}).get(frac) or {}).get("f1_mean") for r in runs]
            values = [v for v in values if v is not None]
            s[f"f1@{frac}"] = statistics.mean(values) if values else None
        out.append(s)
    return out


def _f(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _pm(pair) -> str:
    mean, std = pair
    return _f(mean) if std is None else f"{_f(mean)} ± {_f(std)}"


def to_markdown(rows: list[dict]) -> str:
    if not rows:
        return "No experiment with an evaluation yet: run `make compare` (or `dvc exp run`).\n"
    summary = summarise(rows)
    by = {s["method"]: s for s in summary}
    lines = ["| method | seeds | " + " | ".join(title for _, title in FIGURES) + " | F1 @1 % / 10 % labels | steps |",
             "|---|---|" + "---|" * len(FIGURES) + "---|---|"]
    for s in summary:
        seeds = ", ".join(str(v) for v in s["seeds"])
        lines.append(f"| {s['method']} | {seeds} | " + " | ".join(_pm(s[key]) for key, _ in FIGURES)
                     + f" | {_f(s['f1@0.01'])} / {_f(s['f1@0.1'])} | {s['steps']} |")
    out = ["# Method comparison (linear probe, subject-exclusive folds)", "",
           "Mean ± sample std (n − 1) over pretraining seeds (with one seed: F1's over the folds). Person-independence figures "
           "(docs/results.md): same-subject NN and subject variance lower is better, cross-subject kNN F1 higher.",
           "", *lines, ""]
    if {"random", "supervised"} <= set(by):
        lo, hi = by["random"]["f1_mean"][0], by["supervised"]["f1_mean"][0]
        out.append(f"Share of the random → supervised gap ({_f(lo)} → {_f(hi)}) closed:")
        for s in summary:
            if s["method"] not in ("random", "supervised"):
                share = (s["f1_mean"][0] - lo) / (hi - lo) if hi != lo else float("nan")
                out.append(f"- {s['method']}: {100 * share:.0f} %")
        out.append("")
    tuned = [r for r in rows if (r["metrics"].get("finetune") or {}).get("f1_mean") is not None]
    if tuned:
        out += ["## Fine-tune protocol (whole network + linear head, per fold)", "",
                "| method | seed | mean F1 ± std | linear probe | steps |", "|---|---|---|---|---|"]
        for r in tuned:
            ft = r["metrics"]["finetune"]
            out.append(f"| {r['method']} | {r['seed']} | {_f(ft['f1_mean'])} ± {_f(ft.get('f1_std'))} | "
                       f"{_f(r['metrics']['f1_mean'])} | {ft.get('steps')} |")
        out.append("")
    aus = list(dict.fromkeys(a for r in rows for a in r["metrics"].get("f1", {})))
    out += ["## F1 per AU (mean over seeds)", "", "| method | " + " | ".join(aus) + " |",
            "|---|" + "---|" * len(aus)]
    for s in summary:
        cells = []
        for a in aus:
            values = [r["metrics"].get("f1", {}).get(a) for r in s["runs"]]
            values = [v for v in values if v is not None]
            cells.append(_f(statistics.mean(values)) if values else "–")
        out.append(f"| {s['method']} | " + " | ".join(cells) + " |")
    out += ["", "## Runs", "", "| method | seed | experiment | mean F1 ± std (folds) | F1 per fold |",
            "|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]
        out.append(f"| {r['method']} | {r['seed']} | {r['name']} | {_f(m['f1_mean'])} ± {_f(m.get('f1_std'))} | "
                   + ", ".join(_f(v) for v in (m.get("f1_folds") or {}).values()) + " |")
    return "\n".join(out) + "\n"


def select(rows: list[dict], only: list[str] | None) -> list[dict]:
    """The rows of the methods (or readings) named in `only`, in that order; all of them when None. A name with
    no evaluation is an error that lists the names there are."""
    if not only:
        return rows
    have = list(dict.fromkeys(r["method"] for r in rows))
    missing = [m for m in only if m not in have]
    if missing:
        raise CompareError(f"no evaluation of {', '.join(missing)} (there are: {', '.join(have) or 'none'})")
    return sorted((r for r in rows if r["method"] in only), key=lambda r: (only.index(r["method"]), r["seed"]))


def run_compare(out: Path, dvc: str = "dvc", only: list[str] | None = None) -> str:
    proc = subprocess.run([dvc, "exp", "show", "--json", "--all-commits"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompareError(f"`dvc exp show --json` failed: {proc.stderr.strip()[-500:]}")
    rows = select(latest_per_seed(collect(json.loads(proc.stdout))), only)
    text = to_markdown(rows)
    write_text(out, text)
    if rows:
        from clpau.eval.plots import compare_plot

        compare_plot(out.with_suffix(".png"), summarise(rows))
    return text
