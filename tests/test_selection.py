"""Choices made on cross-validation (respstf.training.selection): the out-of-fold predictions the recipe's fold runs
wrote (kept in git under runs/cv/), and the logit adjustment chosen on them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import CHECKPOINTS, CRACKLE_RECORDING, REPO_ROOT, read_recording, single_model

from respstf import training
from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset import task_labels
from respstf.hub_dataset.sprsound_score import compute_sprsound_score
from respstf.modeling import RespSTFForAudioClassification

CV = REPO_ROOT / "runs" / "cv"


def out_of_fold(task: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The real out-of-fold predictions of ``task`` on every fold that has them (at least two, else skip)."""
    folds = [training.read_predictions(run) for run in sorted(CV.glob(f"fold*/task{task}"))
             if training.predictions_path(run, "validation").is_file()]
    if len(folds) < 2:
        pytest.skip(f"fewer than two folds of task {task} have out-of-fold predictions under {CV}")
    return folds


@pytest.mark.parametrize("task", ["21", "22"])
def test_the_chosen_adjustment_holds_the_poor_quality_limit_and_does_not_lower_the_cv_score(task):
    folds, labels = out_of_fold(task), task_labels(int(task))
    choice = training.choose_logit_adjustment(folds, labels, "Normal")
    chosen, before = choice["chosen"], choice["before"]
    assert chosen["normals"] == before["normals"] == sum(int(np.sum(y == 0)) for _, y in folds)
    assert choice["allowed"] and chosen["normals_called_poor_quality"] <= training.MAX_NORMALS_POOR_QUALITY * chosen["normals"]
    # No Poor Quality offset alone (the line the search starts from) meets the limit with a better mean Score, Poor
    # Quality weighted to its deployment share (the objective), than the chosen offsets, beyond the tolerance.
    poor = labels.index("Poor Quality")
    for value in training.selection.OFFSET_GRID:
        alone = training.fold_figures(folds, np.eye(len(labels))[poor] * value, labels, "Normal")
        if alone["normals_called_poor_quality"] <= training.MAX_NORMALS_POOR_QUALITY * alone["normals"]:
            assert alone["deployment_mean"] <= chosen["deployment_mean"] + 0.002, value
    assert choice["offsets"][labels.index("Normal")] == 0 and all(v in training.selection.OFFSET_GRID for v in choice["offsets"])
    # Each fold's figure is the official Score of the adjusted answers; the deployment one weighs its Poor Quality
    # recordings so that they are that share of the fold's.
    for (logits, references), score, deployment in zip(folds, chosen["scores"], chosen["deployment_scores"]):
        predicted = (logits + np.asarray(choice["offsets"])).argmax(axis=1)
        assert score == pytest.approx(compute_sprsound_score(predicted, references, normal_label=0)["score"])
        weights = training.selection.prevalence_weights(references, poor, training.DEPLOYMENT_POOR_QUALITY)
        assert weights[references == poor].sum() / weights.sum() == pytest.approx(training.DEPLOYMENT_POOR_QUALITY)
        assert deployment == pytest.approx(
            compute_sprsound_score(predicted, references, normal_label=0, sample_weight=weights)["score"])
        # A weighted Score is the Score of the set with each row repeated by its (integer) weight.
        counts = np.where(references == poor, 3, 1)
        assert compute_sprsound_score(predicted, references, normal_label=0, sample_weight=counts)["score"] == \
            pytest.approx(compute_sprsound_score(predicted.repeat(counts), references.repeat(counts), normal_label=0)["score"])
    assert training.DEPLOYMENT_POOR_QUALITY == choice["poor_quality_prevalence"]


def test_a_model_over_calling_poor_quality_gets_a_negative_poor_quality_offset():
    """Real Task 2-1 folds with Poor Quality made 2 nats likelier: the limit is met by pulling it back."""
    folds, labels = out_of_fold("21"), task_labels(21)
    poor = labels.index("Poor Quality")
    shifted = [(logits + 2.0 * np.eye(len(labels))[poor], references) for logits, references in folds]
    before = training.fold_figures(shifted, [0.0] * len(labels), labels, "Normal")
    assert before["normals_called_poor_quality"] > training.MAX_NORMALS_POOR_QUALITY * before["normals"]
    choice = training.choose_logit_adjustment(shifted, labels, "Normal")
    assert choice["offsets"][poor] < 0
    assert choice["chosen"]["normals_called_poor_quality"] <= training.MAX_NORMALS_POOR_QUALITY * before["normals"]


def test_the_poor_quality_limit_wins_over_the_score():
    """Normal recordings that no Poor Quality offset of the grid keeps from Poor Quality: raising another class does,
    and the choice says whether the limit was met."""
    labels = ["Normal", "Adventitious", "Poor Quality"]
    rng = np.random.default_rng(0)
    references = np.repeat([0, 1, 2], [200, 100, 20])
    logits = rng.normal(0, 0.1, (len(references), 3)) + np.where(references[:, None] == 2, [0.0, 0.0, 9.0], [0.0, 2.0, 5.0])
    folds = [(logits[0::2], references[0::2]), (logits[1::2], references[1::2])]
    choice = training.choose_logit_adjustment(folds, labels, "Normal")
    assert choice["allowed"] and choice["chosen"]["normals_called_poor_quality"] == 0
    assert choice["offsets"][1] > 0
    impossible = training.choose_logit_adjustment(folds, labels, "Normal", grid=[-1.0, 0.0, 1.0])
    assert not impossible["allowed"]


def test_offsets_mean_what_the_model_adds_as_config_logit_adjustment():
    """The offsets chosen on saved logits give the classes the model gives with them in config.logit_adjustment."""
    from respstf.modeling import load_task_model

    folder = CHECKPOINTS / "sprsound-task22"
    if not (folder / "config.json").is_file():
        pytest.skip(f"no bundled checkpoint at {folder}")
    loaded = load_task_model(folder)
    loaded.model.config.logit_adjustment = None  # the logits without the checkpoint's own decision
    waveform, rate = read_recording(CRACKLE_RECORDING)
    clips = [waveform[start * rate:(start + 6) * rate] for start in range(0, 4)]
    features = loaded.extractor(clips, sampling_rate=rate, return_tensors="pt")
    offsets = [0.0, 0.5, 2.5, -1.0, -3.0]
    with torch.no_grad():
        plain = loaded.model(**features).logits.numpy()
        loaded.model.config.logit_adjustment = offsets
        adjusted = loaded.model(**features).logits.numpy()
    np.testing.assert_array_equal(training.selection.adjusted_predictions(plain, offsets), adjusted.argmax(axis=1))
    assert (adjusted.argmax(axis=1) != plain.argmax(axis=1)).any()  # the offsets change some answer


def test_fold_ensemble_ships_with_its_decision_and_one_test_score(sprsound_root, tmp_path):
    """benchmarks/sprsound_score.py --cv_folds ... --copy_to: the folds' runs become one checkpoint (here two copies of
    a bundled Task 2-1 model, with two real folds' out-of-fold predictions) that carries the decision chosen on the
    folds, loads through the stock pipeline, and records one Score on the test split with its card."""
    from transformers import pipeline

    from benchmarks import sprsound_score

    bundled = single_model("21")  # a fold ensemble's first member, or the bundled single model
    folds = [int(run.parent.name.removeprefix("fold")) for run in sorted(CV.glob("fold*/task21"))
             if training.predictions_path(run, "validation").is_file()][:2]
    if len(folds) < 2:
        pytest.skip("fewer than two folds of task 21 have out-of-fold predictions")
    for fold in folds:
        run = tmp_path / "runs" / "cv" / f"fold{fold}" / "task21"
        shutil.copytree(bundled, run)
        source = CV / f"fold{fold}" / "task21"  # its results and out-of-fold answers
        shutil.copy(source / "results.json", run)
        shutil.copy(training.predictions_path(source, "validation"), run)
    scalograms, choice = {}, training.choose_logit_adjustment(out_of_fold("21")[:2], task_labels(21), "Normal")
    summary = sprsound_score.ship_cv_ensemble("21", folds, choice, tmp_path / "runs", tmp_path / "ship", "inter_test",
                                              str(sprsound_root), scalograms)
    shipped = tmp_path / "ship" / "sprsound-task21"
    assert summary["cv_ensemble"]["offsets"] == choice["offsets"]
    assert sorted(path.name for path in (tmp_path / "ship").iterdir()) == ["sprsound-task21"]  # no build folder left
    config = json.loads((shipped / "config.json").read_text())
    assert config["ensemble_size"] == 2
    assert config["logit_adjustment"] == (choice["offsets"] if any(choice["offsets"]) else None)
    assert config["custom_pipelines"]["audio-classification"]["impl"] == "pipeline_respstf.RespSTFAudioClassificationPipeline"

    # Two identical members: the ensemble is that model with the offsets, on every test recording.
    single, logits, labels = training.score_checkpoint(bundled, sprsound_root, "21", "inter_test", scalograms)
    assert len(scalograms) == 1  # the ensemble's extractor is its members': the same scalograms
    expected = training.fold_figures([(logits, labels)], choice["offsets"], task_labels(21), "Normal")
    recorded = json.loads((shipped / "results.json").read_text())["results"]["inter_test"]
    assert recorded["score"] == pytest.approx(expected["mean"], abs=1e-9) and recorded["rows"] == len(labels) == 355
    if not any(choice["offsets"]):
        assert recorded["score"] == pytest.approx(single["score"], abs=1e-9)
    shipped_logits, shipped_labels = training.read_predictions(shipped, "inter_test")  # its answers, kept beside it
    assert shipped_labels.tolist() == labels.tolist()
    log_probabilities = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    np.testing.assert_allclose(shipped_logits, log_probabilities + np.asarray(choice["offsets"]), atol=1e-4)
    card = (shipped / "README.md").read_text()
    assert "A fold ensemble: the 2 models of a patient-grouped cross-validation" in card
    assert f"{recorded['score']:.3f}" in card

    waveform, rate = read_recording(CRACKLE_RECORDING)
    classify = pipeline("audio-classification", model=str(shipped), trust_remote_code=True, top_k=None)
    answer = {row["label"]: row["score"] for row in classify({"raw": waveform, "sampling_rate": rate})}
    model = RespSTFForAudioClassification.from_pretrained(shipped).eval()
    features = RespSTFFeatureExtractor.from_pretrained(shipped)(waveform, sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**features).logits.softmax(-1)[0]
    np.testing.assert_allclose([answer[name] for name in task_labels(21)], probabilities, atol=1e-5)
