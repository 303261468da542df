"""The official SPRSound Score metric (hub_dataset/sprsound_score): hand-computed cases for all four tasks,
degenerate splits, and bad input, through both the `evaluate` loader and the plain function."""

from __future__ import annotations

import math
from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch

from respstf.hub_dataset.labels import task_labels
from respstf.hub_dataset.sprsound_score import compute_sprsound_score

REPO_ROOT = Path(__file__).resolve().parents[1]
METRIC_DIR = REPO_ROOT / "hub_dataset" / "sprsound_score"


@pytest.fixture
def loaded_metric():
    return evaluate.load(str(METRIC_DIR), keep_in_memory=True)  # no cache files or locks to leak on errors


@pytest.fixture(params=["function", "evaluate"])
def score(request, loaded_metric):
    """The same metric through both entry points, so every case checks that they agree."""
    if request.param == "function":
        return compute_sprsound_score
    return lambda predictions, references, **kwargs: loaded_metric.compute(
        predictions=predictions, references=references, **kwargs
    )


def expected(se: float, sp: float) -> dict:
    average = (se + sp) / 2
    harmonic = 2 * se * sp / (se + sp) if se + sp else 0.0
    return {"se": se, "sp": sp, "as": average, "hs": harmonic, "score": (average + harmonic) / 2}


def assert_figures(results: dict, se: float, sp: float) -> None:
    for key, value in expected(se, sp).items():
        assert results[key] == pytest.approx(value), key


def test_loads_offline_from_repo_root_by_relative_path(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    metric = evaluate.load("hub_dataset/sprsound_score")
    assert metric.name == "sprsound_score"
    assert metric.compute(predictions=[0, 1], references=[0, 1])["score"] == 1.0


def test_loads_from_anywhere_by_the_packages_path(monkeypatch, tmp_path):
    """Where the package is installed rather than checked out, SPRSOUND_SCORE_PATH names the metric's folder."""
    from respstf.hub_dataset import SPRSOUND_SCORE_PATH

    monkeypatch.chdir(tmp_path)
    metric = evaluate.load(SPRSOUND_SCORE_PATH)
    assert metric.compute(predictions=[0, 1], references=[0, 1])["score"] == 1.0


def test_task11_binary(score):
    # Normal: 5 samples, 3 right -> SP = 0.6. Adventitious: 4 samples, 2 right -> SE = 0.5.
    results = score([0, 0, 0, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1, 1, 1, 1], label_names=task_labels(11))
    assert_figures(results, se=0.5, sp=0.6)
    assert results["as"] == pytest.approx(0.55)
    assert results["hs"] == pytest.approx(6 / 11)
    assert results["score"] == pytest.approx((0.55 + 6 / 11) / 2)
    assert results["confusion_matrix"] == [[3, 2], [2, 2]]
    assert results["per_class_recall"] == {"Normal": pytest.approx(0.6), "Adventitious": pytest.approx(0.5)}


def test_task12_wrong_adventitious_type_is_a_miss(score):
    references = [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]
    predictions = [0, 0, 1, 0, 2, 2, 3, 0, 5, 4]
    # Normal: 3 of 4 right -> SP = 0.75. Non-Normal: Rhonchi->Wheeze and Wheeze+Crackle->Coarse Crackle are misses
    # even though the prediction is adventitious; with Coarse Crackle->Normal that is 3 of 6 -> SE = 0.5.
    results = score(predictions, references, label_names=task_labels(12))
    assert results["se"] == pytest.approx(0.5)  # a Normal/abnormal collapse would give 5/6
    assert results["sp"] == pytest.approx(0.75)
    assert results["as"] == pytest.approx(0.625)
    assert results["hs"] == pytest.approx(0.6)
    assert results["score"] == pytest.approx(0.6125)
    assert results["per_class_recall"] == {
        "Normal": 0.75, "Rhonchi": 0.0, "Wheeze": 1.0, "Stridor": 1.0,
        "Coarse Crackle": 0.0, "Fine Crackle": 1.0, "Wheeze+Crackle": 0.0,
    }  # fmt: skip
    matrix = np.array(results["confusion_matrix"])
    assert matrix.shape == (7, 7) and matrix.sum() == 10
    assert matrix[1, 2] == 1 and matrix[6, 4] == 1 and matrix[0, 1] == 1 and matrix[4, 0] == 1


def test_task21_poor_quality_counts_as_non_normal(score):
    # Normal: 1 of 2 -> SP = 1/2. Adventitious 2 of 3, Poor Quality 2 of 3 -> SE = 4/6.
    results = score([0, 1, 1, 1, 2, 2, 0, 2], [0, 0, 1, 1, 1, 2, 2, 2], label_names=task_labels(21))
    assert_figures(results, se=2 / 3, sp=1 / 2)
    assert results["hs"] == pytest.approx(4 / 7)
    assert results["score"] == pytest.approx(97 / 168)
    assert results["per_class_recall"]["Poor Quality"] == pytest.approx(2 / 3)


def test_task22_five_classes(score):
    # Normal: 4 of 5 -> SP = 0.8. CAS->CAS&DAS and CAS&DAS->CAS miss; DAS, one CAS&DAS, Poor Quality hit -> SE = 3/5.
    results = score([0, 0, 0, 0, 4, 3, 2, 3, 1, 4], [0, 0, 0, 0, 0, 1, 2, 3, 3, 4], label_names=task_labels(22))
    assert_figures(results, se=0.6, sp=0.8)
    assert results["hs"] == pytest.approx(24 / 35)
    assert results["score"] == pytest.approx(97 / 140)
    assert results["per_class_recall"] == {"Normal": 0.8, "CAS": 0.0, "DAS": 1.0, "CAS & DAS": 0.5, "Poor Quality": 1.0}


def test_perfect_and_all_wrong(score):
    references = [0, 1, 2, 3, 4, 0, 2]
    assert_figures(score(references, references, num_labels=5), se=1.0, sp=1.0)
    wrong = score([1, 2, 3, 4, 0, 3, 1], references, num_labels=5)
    assert_figures(wrong, se=0.0, sp=0.0)
    assert wrong["hs"] == 0.0 and wrong["score"] == 0.0
    assert np.trace(np.array(wrong["confusion_matrix"])) == 0


def test_predicting_everything_abnormal_scores_a_quarter(score):
    # SE = 1, SP = 0: AS = 0.5, HS = 0, so a constant classifier cannot score well.
    results = score([1, 1, 1, 1], [0, 0, 1, 1])
    assert_figures(results, se=1.0, sp=0.0)
    assert results["score"] == pytest.approx(0.25)


def test_normal_label_other_than_zero(score):
    # Class 2 is Normal here: SP = 1/2 (one of two), SE = 2/2.
    results = score([2, 0, 0, 1], [2, 2, 0, 1], normal_label=2)
    assert_figures(results, se=1.0, sp=0.5)


def test_normal_is_found_by_name_when_it_is_not_class_0(score):
    # Class 1 is Normal: its 3 samples are all predicted 1 -> SP = 1. Wheeze (0) predicted Crackle and Crackle (2)
    # predicted Wheeze are both misses -> SE = 0. AS = 0.5, HS = 0, Score = 0.25. (Taking class 0 as Normal gave
    # SE 0.75, SP 0 and Score 0.1875.)
    names = ["Wheeze", "Normal", "Crackle"]
    results = score([1, 1, 1, 2, 0], [1, 1, 1, 0, 2], label_names=names)
    assert_figures(results, se=0.0, sp=1.0)
    assert results["score"] == pytest.approx(0.25)
    assert results == score([1, 1, 1, 2, 0], [1, 1, 1, 0, 2], label_names=names, normal_label=1)  # agreeing: fine
    # Without a class named Normal, class 0 is Normal (e.g. a new dataset's Healthy): SP = 1/2, SE = 2/2.
    assert_figures(score([0, 1, 1, 2], [0, 0, 1, 2], label_names=["Healthy", "Wheeze", "Crackle"]), se=1.0, sp=0.5)


def test_no_normal_samples_reports_nan_sp_and_scores_on_se(score):
    with pytest.warns(UserWarning, match="no Normal sample"):
        results = score([1, 2, 0], [1, 2, 2], num_labels=3)
    assert math.isnan(results["sp"]) and math.isnan(results["per_class_recall"][0])
    assert results["se"] == pytest.approx(2 / 3)
    assert results["as"] == results["hs"] == results["score"] == pytest.approx(2 / 3)


def test_no_abnormal_samples_reports_nan_se_and_scores_on_sp(score):
    with pytest.warns(UserWarning, match="no non-Normal sample"):
        results = score([0, 0, 1, 0], [0, 0, 0, 0], num_labels=2)
    assert math.isnan(results["se"]) and math.isnan(results["per_class_recall"][1])
    assert results["sp"] == pytest.approx(0.75)
    assert results["as"] == results["hs"] == results["score"] == pytest.approx(0.75)
    assert results["confusion_matrix"] == [[3, 1], [0, 0]]


def test_num_labels_is_inferred_and_can_be_fixed(score):
    assert np.array(score([0, 1], [0, 1])["confusion_matrix"]).shape == (2, 2)
    assert np.array(score([0, 1], [0, 1], num_labels=7)["confusion_matrix"]).shape == (7, 7)


def test_accepts_arrays_and_tensors():
    from_lists = compute_sprsound_score([0, 2, 1], [0, 1, 1])
    assert compute_sprsound_score(np.array([0, 2, 1]), torch.tensor([0, 1, 1])) == from_lists
    assert compute_sprsound_score(np.array([0.0, 2.0, 1.0]), (0, 1, 1)) == from_lists  # integral floats


def test_evaluate_accumulates_batches(loaded_metric):
    loaded_metric.add_batch(predictions=[0, 0, 1, 0, 2], references=[0, 0, 0, 0, 1])
    loaded_metric.add_batch(predictions=[2, 3, 0, 5, 4], references=[2, 3, 4, 5, 6])
    results = loaded_metric.compute(num_labels=7)
    assert results["score"] == pytest.approx(0.6125)  # the task 1-2 case above, split in two batches


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "message"),
    [
        ([0, 1, 1], [0, 1], {}, "Mismatch in the number of predictions|3 items but `references` has 2"),
        ([], [], {}, "empty"),
        ([0, 7], [0, 1], {"num_labels": 7}, r"`predictions` contains class ids \[7\] outside .*0\.\.6"),
        ([0, 1], [-1, 1], {}, r"`references` contains class ids \[-1\]"),
        ([0, 2], [0, 1], {"label_names": ["Normal", "Adventitious"]}, r"class ids \[2\] outside"),
        ([[0.2, 0.8], [0.9, 0.1]], [1, 0], {}, "1-D .*logits"),
        ([0.5, 1.0], [0, 1], {}, "integer class ids"),
        (["Normal", "Wheeze"], [0, 1], {}, "label2id"),
        ([0, 1], [0, 1], {"normal_label": 2, "num_labels": 2}, "`normal_label` is 2"),
        ([0, 1], [0, 1], {"num_labels": 3, "label_names": ["Normal", "Adventitious"]}, "has 2 names"),
        ([0, 1], [0, 1], {"label_names": ["Normal", "Normal"]}, "unique"),
        ([0, 1], [0, 1], {"normal_label": 0, "label_names": ["Wheeze", "Normal"]},
         r"`normal_label` is 0 but `label_names` has 'Normal' at 1"),
    ],
)
def test_bad_input_raises_clear_value_error(score, predictions, references, kwargs, message):
    with pytest.raises(ValueError, match=message):
        score(predictions, references, **kwargs)
