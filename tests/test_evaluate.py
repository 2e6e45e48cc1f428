"""Evaluation: F1 against hand-computed cases, leak-proof splits, the probe, identity leakage, the whole stage."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from clpau.config import BenchmarkParams, EvaluateParams, PretrainParams
from clpau.core.benchmarks import LeakError, check_pretraining_disjoint, load_labelled, read_folds, split
from clpau.core.labels import read_occurrence_csv
from clpau.eval.evaluate import f1_per_au, run_evaluate
from clpau.eval.probe import fit_probe, identity_accuracy, probe_proba, subsample
from clpau.train.pretrain import run_pretrain


def test_f1_hand_computed():
    y = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 9, 0], [0, 1, 0, 0]], np.int8)
    pred = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]], np.int8)
    f1 = f1_per_au(y, pred)
    assert f1[0] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))  # TP row 0, FP row 2, FN row 1
    assert f1[1] == 0.0                                     # its one positive missed
    assert f1[2] == 0.0                                     # no positive, a false alarm (row 2 is unknown: ignored)
    assert np.isnan(f1[3])                                  # no positive, none predicted: undefined, not 0 or 1


def test_folds_and_splits_refuse_leaks(tmp_path):
    bad = tmp_path / "folds.yaml"
    bad.write_text("folds:\n  - [A, B]\n  - [C, A]\n")
    with pytest.raises(LeakError, match=r"\['A'\] are in more than one fold"):
        read_folds(bad)
    subjects = np.array(["A", "B", "C", "A"])
    with pytest.raises(LeakError, match="training and test"):
        split(subjects, [["A", "B"], ["C", "A"]], 0)
    train, test = split(subjects, [["A", "B"], ["C"]], 1)
    assert train.tolist() == [True, True, False, True] and test.tolist() == [False, False, True, False]
    with pytest.raises(LeakError, match="also identities of the pretraining data"):
        check_pretraining_disjoint({"S001", "S002"}, {"P0001", "S002"})


def test_probe_learns_a_separable_rule_and_ignores_unknown_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = np.stack([(x[:, 0] > 0.8), (x[:, 1] + x[:, 2] > 0)], 1).astype(np.int8)  # rare and balanced AUs
    noisy = y.copy()
    noisy[:100, 0] = 9  # unknown: these rows carry wrong-looking features but must not count
    probe = fit_probe(x[:300], noisy[:300], weight_decay=1e-4)
    f1 = f1_per_au(y[300:], (probe_proba(probe, x[300:]) >= 0.5).astype(np.int8))
    assert f1.min() > 0.9


def test_identity_accuracy_high_for_identity_features_and_chance_for_noise():
    rng = np.random.default_rng(0)
    subjects = np.repeat([f"S{i}" for i in range(8)], 40)
    order = np.tile(np.arange(40), 8)
    code = rng.normal(size=(8, 16))[np.repeat(np.arange(8), 40)]
    acc, chance = identity_accuracy((code + 0.3 * rng.normal(size=code.shape)).astype(np.float32), subjects, order)
    assert acc > 0.95 and chance == 1 / 8
    acc_noise, _ = identity_accuracy(rng.normal(size=(320, 16)).astype(np.float32), subjects, order)
    assert acc_noise < 0.35


def test_subsample_is_subject_balanced():
    subjects = np.repeat(["A", "B", "C"], [100, 50, 10])
    mask = subjects != "C"
    use = subsample(subjects, mask, 0.1, seed=1)
    assert (use & (subjects == "A")).sum() == 10 and (use & (subjects == "B")).sum() == 5
    assert not (use & ~mask).any()
    assert not np.array_equal(use, subsample(subjects, mask, 0.1, seed=2))


def _bench(synth_clips, **kw) -> BenchmarkParams:
    root = synth_clips.parent
    return BenchmarkParams(clips=root / "labelled_clips", labels_dir=root / "labels" / "labelled", **kw)


def _eval_params(tmp_path, encoder) -> EvaluateParams:
    return EvaluateParams(encoder=encoder, seeds=2, label_fractions=[0.25, 1.0], embedding_frames=100,
                          metrics=tmp_path / "metrics.json", plots_dir=tmp_path / "plots",
                          probe_out=tmp_path / "probe.pt", floor=tmp_path / "floor.json")


@pytest.mark.parametrize("method", ["random", "supervised"])
def test_evaluate_stage_writes_metrics_plots_and_probe(method, synth_clips, tmp_path):
    pre = PretrainParams(data=[synth_clips], method=method, out_dir=tmp_path / "models", live_dir=tmp_path / "live",
                         max_steps=2, batch_clips=4, clip_len=4)
    run_pretrain(pre, progress=False, log=lambda *_: None, bench=_bench(synth_clips))
    p = _eval_params(tmp_path, tmp_path / "models" / "encoder.pt").model_copy(
        update={"finetune_steps": 3, "finetune_batch": 16})
    encoder_bytes = p.encoder.read_bytes()
    m = run_evaluate(_bench(synth_clips), p, [synth_clips], progress=False, log=lambda *_: None)
    saved = json.loads(p.metrics.read_text())
    tuned = m["finetune"]  # the fine-tune protocol: per fold, whole network + head; the encoder file is untouched
    assert tuned["steps"] == 3 and list(tuned["f1_folds"]) == ["fold0", "fold1", "fold2"]
    assert all(0 <= v <= 1 for v in tuned["f1_folds"].values()) and len(tuned["f1"]) == 12
    assert p.encoder.read_bytes() == encoder_bytes
    assert saved == m and m["method"] == method and m["subjects"] == 24
    assert set(m) >= {"f1_mean", "f1_std", "f1", "f1_folds", "identity_acc", "identity_leakage", "label_efficiency"}
    assert list(m["f1_folds"]) == ["fold0", "fold1", "fold2"] and list(m["f1"]) == [f"AU{a}" for a in (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)]
    assert m["f1_mean"] == pytest.approx(np.mean(list(m["f1_folds"].values())), abs=1e-3)
    assert m["label_efficiency"]["0.25"]["runs"] == 3 * 2 and m["label_efficiency"]["1"]["runs"] == 3
    assert m["identity_chance"] == pytest.approx(1 / 8)
    # the person-independence figures (independence.py); one video per subject here: same_subject_nn undefined
    assert m["same_subject_nn"] is None
    assert 0 <= m["cross_subject_knn_f1"] <= 1 and 0 < m["subject_variance_share"] < 1
    for png in ("per_au_f1.png", "label_efficiency.png", "embedding.png"):
        assert (p.plots_dir / png).stat().st_size > 5000
    assert (p.plots_dir / "per_au.csv").read_text().startswith("au,f1_mean,f1_std,f1_fold0")
    probe = torch.load(p.probe_out, weights_only=True)
    assert probe["weight"].shape[1] == 12 and probe["dataset"] == "synth"
    assert probe["encoder_fold"] == (0 if method == "supervised" else -1)


def test_the_floor_is_the_random_init_encoder_and_stands_beside_the_result(synth_clips, tmp_path):
    from clpau.eval.floor import run_floor

    bench = _bench(synth_clips)
    pre = PretrainParams(data=[synth_clips], method="random", out_dir=tmp_path / "models", live_dir=tmp_path / "l",
                         seed=3)
    p = _eval_params(tmp_path, tmp_path / "models" / "encoder.pt")
    floor = run_floor(bench, p, pre, progress=False, log=lambda *_: None)
    assert json.loads(p.floor.read_text()) == floor
    assert floor["backbone"] == "resnet_small" and floor["image_size"] == 64 and floor["seed"] == 3
    # what `pretrain.method: random` writes with that seed, evaluated: the same figures
    run_pretrain(pre, progress=False, log=lambda *_: None)
    m = run_evaluate(bench, p, [synth_clips], progress=False, log=lambda *_: None)
    for name in ("f1_mean", "f1_std", "cross_subject_knn_f1", "subject_variance_share"):
        assert m[name] == floor[name] == m["random_init"][name], name
    # a floor of another architecture or input size is not shown beside this encoder
    p.floor.write_text(json.dumps({**floor, "image_size": 96}))
    notes = []
    assert "random_init" not in run_evaluate(bench, p, [synth_clips], progress=False, log=notes.append)
    assert any("rerun `clpau floor`" in n for n in notes)


def test_evaluate_refuses_subjects_seen_in_pretraining(synth_clips, tmp_path):
    pre = PretrainParams(data=[synth_clips], method="random", out_dir=tmp_path / "models", live_dir=tmp_path / "l")
    run_pretrain(pre, progress=False, log=lambda *_: None)
    bench = _bench(synth_clips)
    p = _eval_params(tmp_path, tmp_path / "models" / "encoder.pt")
    with pytest.raises(LeakError, match="also identities of the pretraining data"):
        run_evaluate(bench, p, [bench.clips], progress=False, log=lambda *_: None)  # pretraining on the test set
    assert not p.metrics.exists()


def test_disfa_layout_joins_the_same_frames_as_the_csv_layout(synth_clips, tmp_path):
    """The synthetic labels rewritten in DISFA's layout (per subject and AU, intensity 0-5, occurrence >= 2) must
    give exactly the labels of the BP4D-layout CSVs, frame for frame (DISFA numbers frames from 1)."""
    csv_bench = _bench(synth_clips)
    aus = csv_bench.au_list
    disfa = tmp_path / "disfa"
    for csv in sorted(csv_bench.labels_dir.glob("*.csv")):
        subject = csv.stem.split("_")[0]
        frames, labels = read_occurrence_csv(csv, aus)
        (disfa / subject).mkdir(parents=True)
        for j, au in enumerate(aus):
            intensity = np.where(labels[:, j] == 1, 3, 1)  # 1 is below DISFA's threshold of 2
            (disfa / subject / f"{subject}_au{au}.txt").write_text(
                "".join(f"{f + 1},{v}\n" for f, v in zip(frames, intensity, strict=True)))
    b = BenchmarkParams(dataset="disfa", clips=csv_bench.clips, labels_dir=disfa, aus=aus, first_frame=1,
                        subject_pattern=r"^(S\d+)_")
    a, d = load_labelled(csv_bench, log=lambda *_: None), load_labelled(b, log=lambda *_: None)
    assert len(a) == len(d) > 300
    np.testing.assert_array_equal(a.labels, d.labels)
    np.testing.assert_array_equal(a.frame, d.frame)


def test_compare_table_has_gap_closed_and_a_fine_tune_section_only_when_measured():
    from clpau.eval.compare import to_markdown

    def row(method, f1, finetune=None, seed=0):
        m = {"f1_mean": f1, "f1_std": 0.01, "f1": {"AU1": f1}, "identity_acc": 1.0, "identity_chance": 0.125}
        if finetune is not None:
            m["finetune"] = {"f1_mean": finetune, "f1_std": 0.02, "steps": 300}
        return {"method": method, "name": f"cmp-{method}-s{seed}", "seed": seed, "metrics": m, "experiment": True}

    text = to_markdown([row("random", 0.3), row("clp", 0.5), row("supervised", 0.7)])
    assert "- clp: 50 %" in text and "Fine-tune" not in text
    text = to_markdown([row("random", 0.3), row("clp", 0.5, finetune=0.62)])
    assert "| clp | 0 | 0.620 ± 0.020 | 0.500 | 300 |" in text


def test_compare_summarises_each_method_over_its_seeds_newest_run_first():
    from clpau.eval.compare import latest_per_seed, to_markdown

    def row(method, seed, f1, nn, experiment=True, name=None):
        m = {"f1_mean": f1, "f1_std": 0.05, "same_subject_nn": nn, "cross_subject_knn_f1": 0.2,
             "subject_variance_share": 0.5, "identity_leakage": 1.0, "f1": {"AU1": f1}, "encoder_step": 300}
        return {"method": method, "seed": seed, "name": name or f"cmp-{method}-s{seed}", "metrics": m,
                "experiment": experiment}

    rows = latest_per_seed([row("clp", 0, 0.30, 0.9), row("clp", 1, 0.40, 0.7), row("moco", 0, 0.5, 0.95),
                            row("clp", 0, 0.99, 0.0, experiment=False, name="workspace")])
    assert [(r["method"], r["seed"]) for r in rows] == [("moco", 0), ("clp", 0), ("clp", 1)]
    text = to_markdown(rows)
    # clp over seeds 0 and 1: F1 0.35 ± 0.071 (the sample std, 0.1 / √2; the population's would be 0.05),
    # same-subject NN 0.8 ± 0.141; the workspace's older evaluation of seed 0 is not counted
    assert "| clp | 0, 1 | 0.350 ± 0.071 | 0.800 ± 0.141 | 0.200 ± 0.000 | 0.500 ± 0.000 | 1.000 ± 0.000 |" in text
    assert "| moco | 0 | 0.500 ± 0.050 | 0.950 |" in text  # one seed: F1's std over folds
    assert "| clp | 0.350 |" in text  # per-AU F1, mean over seeds


def test_compare_keeps_readings_of_one_method_apart_by_run_name():
    from clpau.eval.compare import collect, latest_per_seed

    def state(name, method, seed, f1):
        return {"rev": "a" * 40, "name": name, "data": {
            "params": {"params.yaml": {"data": {"pretrain": {"method": method, "seed": seed}}}},
            "metrics": {"metrics/evaluate.json": {"data": {"f1_mean": f1}}}}}

    workspace = state(None, "clp", 0, 0.1)
    workspace["experiments"] = [{"revs": [state("cmp-clp-s0", "clp", 0, 0.4), state("cmp-clp-8x4-s0", "clp", 0, 0.5),
                                          state("cmp-clp-8x4-s1", "clp", 1, 0.6), state("mine", "moco", 0, 0.7)]},
                                {"executor": {"state": "running", "name": "tempdir"},  # shows its base's metrics
                                 "revs": [state("cmp-clp-8x4-s2", "clp", 2, 0.1)]}]
    rows = latest_per_seed(collect([workspace]))
    # clp and its 8x4 reading are two rows of the table, each over its own seeds; an experiment named otherwise is
    # grouped by its method
    assert [(r["method"], r["seed"], r["metrics"]["f1_mean"]) for r in rows] == [
        ("moco", 0, 0.7), ("clp", 0, 0.4), ("clp-8x4", 0, 0.5), ("clp-8x4", 1, 0.6)]
    # --only: those readings, in that order; a name without an evaluation says which there are
    from clpau.eval.compare import select

    assert [(r["method"], r["seed"]) for r in select(rows, ["clp-8x4", "moco"])] == [
        ("clp-8x4", 0), ("clp-8x4", 1), ("moco", 0)]
    assert select(rows, None) == rows
    with pytest.raises(RuntimeError, match=r"no evaluation of simclr \(there are: moco, clp, clp-8x4\)"):
        select(rows, ["simclr", "moco"])


def test_every_spread_is_the_sample_std_of_the_defined_entries():
    from clpau.eval.evaluate import summary_figures
    from clpau.eval.scores import nanstd, spread

    # three folds whose mean F1 over AUs is 0.5, 0.6, 0.7 (one AU undefined in fold 0): std 0.1 with n − 1
    full = np.array([[0.4, 0.6, np.nan], [0.6, 0.6, 0.6], [0.7, 0.7, 0.7]])
    assert summary_figures(full, [{"same_subject_nn": 0.5}] * 3)["f1_std"] == pytest.approx(0.1, abs=1e-4)
    assert spread([0.5, None, 0.7]) == pytest.approx(math.sqrt(0.02))
    assert spread([0.5]) is None and spread([None, 0.4]) is None
    assert np.isnan(nanstd(np.array([0.3, np.nan])))
