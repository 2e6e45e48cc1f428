"""`clpau compare`: one table of the DVC experiments' evaluations (method × mean F1 ± std, identity leakage, label
efficiency, per-AU F1), read from `dvc exp show --json`; written as markdown (`reports/compare.md`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .fileio import write_text

ORDER = ["random", "simclr", "moco", "tcl", "cir", "clp", "supervised"]


def collect(exp_show: list) -> list[dict]:
    """Rows {name, method, metrics} of every state in `dvc exp show --json` output that has an evaluation."""
    rows = []

    def visit(state: dict, depth: int = 0) -> None:
        data = state.get("data") or {}
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        metrics = ((data.get("metrics") or {}).get("metrics/evaluate.json") or {}).get("data")
        if metrics and "f1_mean" in metrics:
            rev = state.get("rev", "")
            rows.append({"name": state.get("name") or (rev[:7] if len(rev) == 40 else rev),
                         "method": (params.get("pretrain") or {}).get("method", metrics.get("method")),
                         "metrics": metrics, "experiment": depth > 0})
        for group in state.get("experiments") or []:
            for rev in group.get("revs") or []:
                visit(rev, depth + 1)

    for state in exp_show:
        visit(state)
    return rows


def latest_per_method(rows: list[dict]) -> list[dict]:
    """One row per method: experiments before commits and the workspace, newest first (`dvc exp show`'s order)."""
    seen, out = set(), []
    for row in sorted(rows, key=lambda r: not r["experiment"]):
        if row["method"] not in seen:
            seen.add(row["method"])
            out.append(row)
    return sorted(out, key=lambda r: ORDER.index(r["method"]) if r["method"] in ORDER else len(ORDER))


def _f(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def to_markdown(rows: list[dict]) -> str:
    if not rows:
        return "No experiment with an evaluation yet: run `make compare` (or `dvc exp run`).\n"
    by = {r["method"]: r["metrics"] for r in rows}
    lines = ["| method | experiment | mean F1 ± std (folds) | F1 per fold | F1 @1 % / 10 % labels | identity acc "
             "(chance) | identity leakage | steps |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]
        eff = m.get("label_efficiency", {})
        low = " / ".join(_f((eff.get(k) or {}).get("f1_mean")) for k in ("0.01", "0.1"))
        lines.append(f"| {r['method']} | {r['name']} | {_f(m['f1_mean'])} ± {_f(m.get('f1_std'))} | "
                     + ", ".join(_f(v) for v in (m.get("f1_folds") or {}).values()) + f" | {low} | {_f(m.get('identity_acc'))} "
                     f"({_f(m.get('identity_chance'))}) | {_f(m.get('identity_leakage'))} | {m.get('encoder_step')} |")
    out = ["# Method comparison (linear probe, subject-exclusive folds)", "", *lines, ""]
    if {"random", "supervised"} <= set(by):
        lo, hi = by["random"]["f1_mean"], by["supervised"]["f1_mean"]
        out.append(f"Share of the random → supervised gap ({_f(lo)} → {_f(hi)}) closed:")
        for method in (r["method"] for r in rows if r["method"] not in ("random", "supervised")):
            share = (by[method]["f1_mean"] - lo) / (hi - lo) if hi != lo else float("nan")
            out.append(f"- {method}: {100 * share:.0f} %")
        out.append("")
    tuned = [r for r in rows if (r["metrics"].get("finetune") or {}).get("f1_mean") is not None]
    if tuned:
        out += ["## Fine-tune protocol (whole network + linear head, per fold)", "",
                "| method | mean F1 ± std | linear probe | steps |", "|---|---|---|---|"]
        for r in tuned:
            ft = r["metrics"]["finetune"]
            out.append(f"| {r['method']} | {_f(ft['f1_mean'])} ± {_f(ft.get('f1_std'))} | "
                       f"{_f(r['metrics']['f1_mean'])} | {ft.get('steps')} |")
        out.append("")
    aus = list(dict.fromkeys(a for r in rows for a in r["metrics"].get("f1", {})))
    out += ["## F1 per AU", "", "| method | " + " | ".join(aus) + " |", "|---|" + "---|" * len(aus)]
    for r in rows:
        out.append(f"| {r['method']} | " + " | ".join(_f(r["metrics"].get("f1", {}).get(a)) for a in aus) + " |")
    return "\n".join(out) + "\n"


def run_compare(out: Path, dvc: str = "dvc") -> str:
    proc = subprocess.run([dvc, "exp", "show", "--json", "--all-commits"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc exp show --json` failed: {proc.stderr.strip()[-500:]}")
    text = to_markdown(latest_per_method(collect(json.loads(proc.stdout))))
    write_text(out, text)
    return text
