"""Pictures of an evaluation and of a prediction (matplotlib, no display needed). Each writes a PNG atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clpau.core.fileio import atomic_path
from clpau.eval.scores import nanmean, nanstd


def _figure(*args, **kw):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(*args, **kw)


def _save(plt, fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def per_au_plot(path: Path, aus: list[int], per_fold: np.ndarray, metrics: dict) -> None:
    """Bars: F1 per AU, mean over folds, with the fold-to-fold spread."""
    plt, (fig, ax) = _figure(figsize=(max(5, 0.6 * len(aus) + 1.5), 3.4))

    mean, std = nanmean(per_fold, 0), nanstd(per_fold, 0)
    ax.bar([f"AU{a}" for a in aus], np.nan_to_num(mean), yerr=np.nan_to_num(std), capsize=3, color="#4c72b0")
    ax.axhline(metrics["f1_mean"] or 0, color="k", lw=1, ls="--", label=f"mean {metrics['f1_mean']:.3f}")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 (positive class)")
    ax.set_title(f"{metrics['method']} on {metrics['dataset']}: linear probe, {len(per_fold)} subject-exclusive folds")
    ax.legend(loc="upper right")
    _save(plt, fig, path)


def label_efficiency_plot(path: Path, efficiency: dict, method: str) -> None:
    plt, (fig, ax) = _figure(figsize=(4.5, 3.4))
    fr = np.array([float(k) for k in efficiency])
    m = np.array([v["f1_mean"] or 0 for v in efficiency.values()])
    s = np.array([v["f1_std"] or 0 for v in efficiency.values()])
    ax.errorbar(100 * fr, m, yerr=s, marker="o", capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("% of the training folds' labelled frames")
    ax.set_ylabel("mean F1")
    ax.set_ylim(0, 1)
    ax.set_title(f"label efficiency ({method})")
    _save(plt, fig, path)


def embedding_plot(path: Path, features: np.ndarray, data, n: int, method: str) -> None:
    """t-SNE of a frame sample, coloured by identity and by the two AUs closest to a 50 % base rate: a
    person-independent AU representation mixes identities and separates AU states."""
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(features), min(n, len(features)), replace=False))
    x = features[idx]
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    xy = TSNE(2, init="pca", perplexity=min(30, max(5, len(idx) // 4)), random_state=0).fit_transform(x)
    labels = data.labels[idx]
    known = labels != 9
    rate = np.where(known.any(0), (labels == 1).sum(0) / np.maximum(known.sum(0), 1), 0)
    picks = np.argsort(np.abs(rate - 0.5))[:2]
    plt, (fig, axes) = _figure(1, 3, figsize=(12, 4))
    _, who = np.unique(data.subject[idx], return_inverse=True)
    axes[0].scatter(xy[:, 0], xy[:, 1], c=who, cmap="tab20", s=4)
    axes[0].set_title(f"by identity ({who.max() + 1} subjects)")
    for ax, j in zip(axes[1:], picks, strict=True):
        c = np.where(labels[:, j] == 1, "#d62728", np.where(labels[:, j] == 0, "#bbbbbb", "#ffffff"))
        ax.scatter(xy[:, 0], xy[:, 1], c=c, s=4)
        ax.set_title(f"AU{data.aus[j]} present (red) / absent (grey)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{method}: t-SNE of {len(idx)} labelled frames' features")
    _save(plt, fig, path)


def timeline_plot(path: Path, timestamps: np.ndarray, proba: np.ndarray, face: np.ndarray, aus: list[int],
                  title: str) -> None:
    """AU probabilities over time as a heat map, with the frames where no face was found marked."""
    plt, (fig, (ax, ax_face)) = _figure(2, 1, figsize=(10, 0.32 * len(aus) + 1.6), sharex=True,
                                        gridspec_kw={"height_ratios": [len(aus), 1]})
    t = timestamps if len(timestamps) else np.zeros(1)
    extent = (float(t[0]), float(t[-1]) if len(t) > 1 else float(t[0]) + 1, len(aus) - 0.5, -0.5)
    im = ax.imshow(np.where(face[None, :], proba.T, np.nan), aspect="auto", extent=extent, vmin=0, vmax=1,
                   cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(aus)), [f"AU{a:02d}" for a in aus])
    ax.set_title(title)
    fig.colorbar(im, ax=[ax, ax_face], label="probability", fraction=0.03)
    ax_face.fill_between(t, 0, face.astype(float), step="mid", color="#2ca02c")
    ax_face.set_yticks([0, 1], ["no face", "face"])
    ax_face.set_xlabel("time (s)")
    _save(plt, fig, path)


def compare_plot(path: Path, summary: list[dict]) -> None:
    """The comparison at a glance: per method, mean F1 ± std over seeds; the person-independence figures; the
    label-efficiency curve. `summary`: compare.summarise's rows."""
    methods = [s["method"] for s in summary]
    many = len(methods) > 4  # long reading names: slanted, and a wider figure
    plt, (fig, axes) = _figure(1, 3, figsize=(13 + 0.6 * max(0, len(methods) - 4), 4.4 if many else 3.8))
    x = np.arange(len(methods))

    def pair(s, key):
        mean, std = s[key]
        return (np.nan if mean is None else mean), (0.0 if std is None else std)

    f1 = [pair(s, "f1_mean") for s in summary]
    axes[0].bar(x, [m for m, _ in f1], yerr=[e for _, e in f1], capsize=3, color="#4c72b0")
    for i, (m, e) in enumerate(f1):
        axes[0].text(i, (m if m == m else 0) + e + 0.02, f"{m:.3f}", ha="center", fontsize=8)
    seeds = max(len(s["seeds"]) for s in summary)
    axes[0].set(xticks=x, xticklabels=methods, ylim=(0, 1), ylabel="mean F1 (linear probe)",
                title=f"AU detection, mean ± std over {seeds} seed{'s' if seeds > 1 else ''}")
    width = 0.27
    for k, (key, label, colour) in enumerate([("same_subject_nn", "same-subject NN ↓", "#c44e52"),
                                               ("subject_variance_share", "subject variance ↓", "#dd8452"),
                                               ("cross_subject_knn_f1", "cross-subject kNN F1 ↑", "#55a868")]):
        vals = [pair(s, key) for s in summary]
        axes[1].bar(x + (k - 1) * width, [m for m, _ in vals], width, yerr=[e for _, e in vals], capsize=2,
                    label=label, color=colour)
    axes[1].set(xticks=x, xticklabels=methods, ylim=(0, 1.3), yticks=np.arange(0, 1.01, 0.2),
                title="person-independence (docs/results.md)")
    axes[1].legend(fontsize=7, loc="upper center", ncol=2)  # above the bars, which reach 1
    for s in summary:
        points = [(float(f), s["f1@" + f]) for f in ("0.01", "0.1") if s.get("f1@" + f) is not None]
        points.append((1.0, s["f1_mean"][0]))
        points = [(f, v) for f, v in points if v is not None]
        axes[2].plot([100 * f for f, _ in points], [v for _, v in points], marker="o", label=s["method"])
    axes[2].set(xscale="log", xlabel="% of the training folds' labelled frames", ylabel="mean F1", ylim=(0, 1),
                title="label efficiency")
    axes[2].legend(fontsize=7)
    if many:
        for ax in axes[:2]:
            plt.setp(ax.get_xticklabels(), rotation=35, ha="right", fontsize=8)
    fig.tight_layout()
    _save(plt, fig, path)
