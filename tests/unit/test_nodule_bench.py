"""The nodule benchmark's pooling, paired patient bootstrap, post-hoc ensemble and report
(benchmarks/ is not a package: the module is loaded from its file)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from abyssal.solutions.nodule.evaluation import auroc

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import nodule

        yield nodule
    finally:
        sys.path.remove(str(BENCHMARKS))


def _run(ids, patients, labels, scores, youden=0.5, sens95=0.3):
    return {
        "ids": list(ids),
        "patients": list(patients),
        "labels": list(labels),
        "scores": list(scores),
        "metrics": {"threshold_youden": youden, "threshold_sens95": sens95, "test_auroc": 0.0},
    }


def _folds(seed: int = 0, n: int = 40, count: int = 2):
    rng = np.random.default_rng(seed)
    folds = []
    for k in range(count):
        ids = [f"n{k}_{i}" for i in range(n)]
        patients = [f"p{k}_{i // 2}" for i in range(n)]  # two nodules per patient
        labels = (np.arange(n) % 3 == 0).astype(int)
        good = np.clip(labels * 0.5 + rng.uniform(0, 0.6, n), 0, 1)
        poor = rng.uniform(0, 1, n)
        folds.append(
            {
                "fold": k,
                "runs": {
                    "full": _run(ids, patients, labels, good),
                    "no_ssl": _run(ids, patients, labels, poor),
                },
            }
        )
    return folds


def test_pooled_auroc_is_that_of_the_concatenated_out_of_fold_scores(bench):
    folds = _folds()
    p = bench.pooled(folds, "full")
    labels = np.concatenate([f["runs"]["full"]["labels"] for f in folds])
    scores = np.concatenate([f["runs"]["full"]["scores"] for f in folds])
    assert p["auroc"] == pytest.approx(auroc(labels, scores))
    assert p["folds"] == 2 and p["nodules"] == 80 and p["malignant"] == int(labels.sum())
    assert len(p["fold_aurocs"]) == 2
    # each fold's Youden threshold (0.5) calls the nodules
    called = scores >= 0.5
    assert p["sensitivity_youden"] == pytest.approx(called[labels == 1].mean())
    assert p["specificity_youden"] == pytest.approx((~called[labels == 0]).mean())
    assert bench.pooled(folds, "no_kg") is None


def test_paired_bootstrap_brackets_the_estimates_and_a_copy_differs_by_zero(bench):
    folds = _folds()
    for f in folds:  # a variant identical to full: every paired difference is 0
        f["runs"]["copy"] = dict(f["runs"]["full"])
    arrays = {}
    for name in ("full", "no_ssl", "copy"):
        p = bench.pooled(folds, name)
        arrays[name] = p.pop("_arrays")
    out = bench.patient_bootstrap(arrays, "full", resamples=200)
    for name in ("full", "no_ssl"):
        point = auroc(arrays[name][2], arrays[name][3])
        assert out[name]["auroc_low"] <= point <= out[name]["auroc_high"]
    assert out["copy"]["delta_low"] == out["copy"]["delta_high"] == 0.0
    assert out["no_ssl"]["delta_low"] > 0  # the informative scores beat noise on every resample


def test_ensemble_averages_logits_and_thresholds(bench):
    fold = {
        "fold": 0,
        "runs": {
            "a": _run(["x", "y"], ["p", "q"], [0, 1], [0.2, 0.9], youden=0.4),
            "b": _run(["x", "y"], ["p", "q"], [0, 1], [0.4, 0.6], youden=0.6),
        },
    }
    run = bench.ensemble_run(fold)

    def logit(p):
        return np.log(p / (1 - p))

    expected = 1 / (1 + np.exp(-(logit(np.array([0.2, 0.4])).mean())))
    assert run["scores"][0] == pytest.approx(expected)
    assert run["metrics"]["threshold_youden"] == pytest.approx(0.5)
    fold["runs"]["b"]["ids"] = ["y", "x"]  # not the same nodules: no ensemble
    assert bench.ensemble_run(fold) is None


def test_summary_and_report_name_the_target_and_every_variant(bench):
    env = {
        "date": "2026-01-01",
        "machine": {"cpu": "cpu", "cores": 2, "platform": "linux", "gpu": None},
        "versions": {"torch": "2"},
        "git_commit": "abc",
    }
    result = {"folds": _folds(), "timing": {}, "environment": env, "command": "x"}
    bench.summarise(result)
    assert set(result["summary"]) == {"full", "no_ssl", "ensemble"}
    assert result["targets"][0]["status"] == "not measured"  # two folds, not five
    text = bench.markdown(result)
    assert "full model (Genesis + fusion + knowledge decoder with rating head" in text
    assert "without self-supervised pretraining" in text and "| 0 | full |" in text


def test_quick_arguments_and_overrides(bench):
    args = bench.parse_args(["--quick", "--set", "data.voxel_mm=2"])
    assert args.epochs == 2 and args.ssl_epochs == 2
    overrides = bench.common(args, 3)
    assert "data.test_fold=3" in overrides and overrides[-1] == "data.voxel_mm=2"
    with pytest.raises(SystemExit):
        bench.parse_args(["--variants", "full,nonsense"])


def test_the_learning_curve_keeps_the_evaluations_early_stopping_saw(bench):
    history = [
        {"epoch": 0, "step": 10, "train_loss": 0.912345, "val_auroc": 0.81},
        {"epoch": 0, "step": 12, "train_loss": 0.9},  # a step row without an evaluation
        {"epoch": 1, "step": 20, "val_auroc": 0.86},
    ]
    curve = bench.learning_curve(history)
    assert curve[0] == [0, 0.9123, 0.81]
    assert curve[1][0] == 1 and np.isnan(curve[1][1]) and curve[1][2] == 0.86
    assert bench.learning_curve([]) == []


def test_merge_tags_the_runs_of_a_file_so_seeds_of_one_variant_sit_side_by_side(bench, tmp_path):
    env = {"date": "d", "machine": {}, "versions": {}, "git_commit": "abc"}
    for name, seed in (("s0.json", 0), ("s1.json", 1)):
        part = {"folds": _folds(seed), "timing": {}, "environment": env, "command": name}
        (tmp_path / name).write_text(json.dumps(part, default=int))
    args = bench.parse_args(["--merge", str(tmp_path / "s0.json"), f"{tmp_path / 's1.json'}#seed1"])
    result = bench.merge(args)
    assert set(result["folds"][0]["runs"]) == {"full", "no_ssl", "full_seed1", "no_ssl_seed1"}
    assert (
        result["folds"][1]["runs"]["full_seed1"]["scores"] == _folds(1)[1]["runs"]["full"]["scores"]
    )
    assert [s["command"] for s in result["sources"]] == ["s0.json", "s1.json"]


def test_a_run_cut_short_is_compared_with_full_on_its_own_folds_only(bench):
    folds = _folds()
    folds[1]["runs"]["short"] = dict(folds[1]["runs"]["no_ssl"])  # fold 1 only
    folds[0]["runs"]["elsewhere"] = {**folds[0]["runs"]["no_ssl"], "ids": ["z"] * 40}
    arrays = {n: bench.pooled(folds, n).pop("_arrays") for n in ("full", "short", "elsewhere")}
    out = bench.patient_bootstrap(arrays, "full", resamples=100)
    fold1 = folds[1]["runs"]
    expected = auroc(fold1["full"]["labels"], fold1["full"]["scores"]) - auroc(
        fold1["no_ssl"]["labels"], fold1["no_ssl"]["scores"]
    )
    assert out["short"]["delta_auroc"] == pytest.approx(expected)
    assert out["short"]["delta_low"] <= expected <= out["short"]["delta_high"]
    assert "delta_auroc" not in out["elsewhere"]  # other nodules: no paired difference
    assert out["full"].keys() == {"auroc_low", "auroc_high"}


def test_the_default_ensemble_takes_only_the_rows_that_ran_on_every_fold(bench):
    folds = _folds()
    extra = folds[1]["runs"]["full"]
    folds[1]["runs"]["partial"] = {**extra, "scores": [1.0 - v for v in extra["scores"]]}
    out = bench.pooled(folds, "ensemble")
    both = [bench.ensemble_run(f, ["full", "no_ssl"]) for f in folds]
    expected = auroc(
        np.concatenate([r["labels"] for r in both]), np.concatenate([r["scores"] for r in both])
    )
    assert out["folds"] == 2 and out["auroc"] == pytest.approx(expected)
    for f in folds:  # no row on every fold: no ensemble
        f["runs"] = {f"only{f['fold']}": f["runs"]["full"]}
    assert bench.pooled(folds, "ensemble") is None


def test_merge_can_take_some_runs_of_a_file_under_new_names(bench, tmp_path):
    env = {"date": "d", "machine": {}, "versions": {}, "git_commit": "abc"}
    for name, seed in (("a.json", 0), ("b.json", 1)):
        part = {"folds": _folds(seed), "timing": {}, "environment": env, "command": name}
        (tmp_path / name).write_text(json.dumps(part, default=int))
    given = [f"{tmp_path / 'a.json'}@no_ssl=full", f"{tmp_path / 'b.json'}@full#seed1"]
    result = bench.merge(bench.parse_args(["--merge", *given]))
    runs = result["folds"][1]["runs"]
    assert set(runs) == {"full", "full_seed1"}
    assert runs["full"]["scores"] == _folds(0)[1]["runs"]["no_ssl"]["scores"]
    assert runs["full_seed1"]["scores"] == _folds(1)[1]["runs"]["full"]["scores"]
    with pytest.raises(SystemExit, match=r"no run \['nope'\] in .*a\.json \(it has \['full'"):
        bench.merge(bench.parse_args(["--merge", f"{tmp_path / 'a.json'}@full,nope"]))


def test_merged_runs_keep_the_genesis_of_their_own_file(bench, tmp_path):
    machine = {"cpu": "cpu", "cores": 2}
    env = {"date": "d", "machine": machine, "versions": {}, "git_commit": "abc"}
    for name, mse in (("w16.json", 0.0111), ("w32.json", 0.0072)):
        folds = _folds()
        for f in folds:
            f["genesis"] = {"seconds": 1.0, "metrics": {"test_restoration_mse": mse}}
        part = {"folds": folds, "timing": {}, "environment": env, "command": name}
        (tmp_path / name).write_text(json.dumps(part, default=int))
    args = bench.parse_args(["--merge", str(tmp_path / "w16.json"), f"{tmp_path / 'w32.json'}#w32"])
    result = bench.merge(args)
    bench.summarise(result)
    rows = [r for r in bench.markdown(result).splitlines() if r.startswith("| 0 | full")]
    assert [r.rstrip(" |").rsplit("| ", 1)[1] for r in rows] == ["0.01110", "0.00720"]


def test_the_raw_logit_row_pools_the_logits_before_calibration(bench):
    folds = _folds()
    rng = np.random.default_rng(3)
    for k, f in enumerate(folds):
        run = f["runs"]["full"]
        logits = np.log(
            np.clip(run["scores"], 1e-3, 1 - 1e-3) / (1 - np.clip(run["scores"], 1e-3, 1 - 1e-3))
        )
        val = rng.normal(size=20)
        run["raw"] = {
            "test": {
                "ids": run["ids"],
                "labels": run["labels"],
                "logits": (logits * (k + 1)).tolist(),
            },
            "val": {"labels": (val > 0).astype(int).tolist(), "logits": val.tolist()},
        }
    raw = bench.pooled(folds, "full_raw")
    full = bench.pooled(folds, "full")
    assert raw["fold_aurocs"] == pytest.approx(full["fold_aurocs"])  # the same ranking per fold
    scaled = np.concatenate([np.asarray(f["runs"]["full"]["raw"]["test"]["logits"]) for f in folds])
    assert raw["auroc"] == pytest.approx(auroc(raw["_arrays"][2], scaled))
    # operating points from the uncalibrated validation logits
    from abyssal.solutions.nodule.evaluation import youden_threshold

    run = bench.raw_logit_run(folds[0]["runs"]["full"])
    val = folds[0]["runs"]["full"]["raw"]["val"]
    expected = youden_threshold(np.array(val["labels"]), 1 / (1 + np.exp(-np.array(val["logits"]))))
    assert run["metrics"]["threshold_youden"] == pytest.approx(expected)
    folds[0]["runs"]["full"]["raw"]["test"]["ids"] = ["other"]  # not the run's nodules
    assert bench.pooled(folds, "full_raw")["folds"] == 1
    del folds[1]["runs"]["full"]["raw"]
    assert bench.pooled(folds, "full_raw") is None
    assert bench.pooled(folds, "no_ssl_raw") is None  # no raw logits stored


def test_merge_pools_the_raw_logits_of_the_variants_named(bench, tmp_path):
    env = {"date": "d", "machine": {}, "versions": {}, "git_commit": "abc"}
    folds = _folds()
    for f in folds:
        for run in f["runs"].values():
            run["raw"] = {
                "test": {"ids": run["ids"], "labels": run["labels"], "logits": run["scores"]},
                "val": {"labels": [0, 1], "logits": [-1.0, 1.0]},
            }
    part = {"folds": folds, "timing": {}, "environment": env, "command": "x"}
    (tmp_path / "a.json").write_text(json.dumps(part, default=int))
    result = bench.merge(
        bench.parse_args(["--merge", str(tmp_path / "a.json"), "--raw-of", "no_ssl"])
    )
    bench.summarise(result)
    assert {"no_ssl_raw", "full_raw"} <= set(result["summary"])  # full's always, beside those named
    assert "no_kg_raw" not in result["summary"]
    # logits equal to the scores: the same pooled AUROC
    assert result["summary"]["no_ssl_raw"]["auroc"] == pytest.approx(
        result["summary"]["no_ssl"]["auroc"]
    )


def test_the_report_names_the_validation_split_each_process_used(bench):
    lidc = bench.validation_split(bench.parse_args([]))  # configs/nodule/lidc.yaml as it is
    assert lidc == {"val_from": "patients", "val_frac": 0.15}
    by_fold = bench.validation_split(bench.parse_args(["--set", "data.val_from=fold"]))
    assert by_fold["val_from"] == "fold"
    recorded = {"command": "x", "split": {"val_from": "patients", "val_frac": 0.2}}
    assert bench.source_split(recorded) == ("patients", 0.2)
    old = {"command": "python benchmarks/nodule.py --folds 0"}  # before the split was recorded
    assert bench.source_split(old) == ("fold", 0.15)
    timing = {"command": "python benchmarks/nodule.py --parts timing --device cpu"}
    assert bench.source_split(timing) is None
    text = bench.splits_text([recorded, timing])
    assert "20 % of the other four folds' patients" in text and "differ" not in text
    mixed = bench.splits_text([recorded, old, old])
    assert "differ" in mixed and "validation fold k+1" in mixed and "(2 processes)" in mixed


def test_seeds_of_the_full_model_get_a_target_row_of_their_mean(bench):
    folds = _folds(0, count=5)
    for fold, other in zip(folds, _folds(1, count=5), strict=True):
        fold["runs"]["full_s1"] = other["runs"]["full"]
    result = {"folds": folds, "timing": {}}
    bench.summarise(result)
    _, seeds = result["targets"]
    full, s1 = result["summary"]["full"]["auroc"], result["summary"]["full_s1"]["auroc"]
    assert seeds["target"].endswith("mean over seeds (full, full_s1)")
    assert seeds["measured"] == f"{(full + s1) / 2:.4f} ({full:.4f} / {s1:.4f})"
    assert seeds["status"] == ("met" if (full + s1) / 2 >= bench.TARGET_AUROC else "not met")
    assert bench.row_label("full_s1") == "full, seed 1"
    assert bench.row_label("no_ssl") == bench.LABELS["no_ssl"]
    short = {"folds": _folds(0), "timing": {}}  # one seed only: no mean row
    bench.summarise(short)
    assert len(short["targets"]) == 1
