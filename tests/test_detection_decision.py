"""The detector's decision (modeling/detection_respstf.py): evidence, prior offsets, record scores, events; the same
decision in training's validation metrics and in the pipeline; a decision chosen on validation written to a config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from transformers import EvalPrediction

from benchmarks import event_detection
from respstf import training
from respstf.hub_dataset import DETECTION_LABELS, RECORD_LABELS, detection_rule
from respstf.modeling import RespSTFConfig
from respstf.modeling import detection_respstf as decision

ID2LABEL = dict(enumerate(DETECTION_LABELS))
RULE = {**detection_rule(), "evidence_seconds": 1.0, "record_logit_adjustment": {}}
FRAME = 0.25  # seconds per frame in these examples
WHEEZE, FINE, NORMAL, POOR = (DETECTION_LABELS.index(name) for name in ("Wheeze", "Fine Crackle", "Normal", "Poor Quality"))


def frames(*runs: tuple[int, int, float]) -> np.ndarray:
    """Normal frames (probability 1) with runs ``(class, frames, probability)`` laid one after another."""
    rows = []
    for label, count, probability in runs:
        row = np.zeros(len(DETECTION_LABELS))
        row[label], row[NORMAL] = probability, 1 - probability if label != NORMAL else 1
        rows += [row] * count
    return np.array(rows)


def test_evidence_needs_a_stretch_as_long_as_evidence_seconds():
    """A 0.5 s wheeze is CAS evidence over a 0.5 s window, diluted over a 2 s one; crackles and Poor Quality absent."""
    probabilities = frames((NORMAL, 20, 1), (WHEEZE, 2, 0.9), (NORMAL, 20, 1))
    short = decision.record_evidence(probabilities, ID2LABEL, {**RULE, "evidence_seconds": 0.5}, FRAME)
    long = decision.record_evidence(probabilities, ID2LABEL, {**RULE, "evidence_seconds": 2.0}, FRAME)
    assert short["continuous"] == pytest.approx(0.9) and long["continuous"] == pytest.approx(0.9 * 2 / 8)
    assert short["discontinuous"] == 0 and short["poor_quality"] == 0


def test_offsets_move_the_log_odds_and_the_scores_sum_to_one():
    evidence = {"continuous": 0.5, "discontinuous": 0.2, "poor_quality": 0.1}
    moved = decision.adjust_evidence(evidence, {"continuous": np.log(3), "poor_quality": -np.log(9)})
    assert moved["continuous"] == pytest.approx(0.75) and moved["discontinuous"] == pytest.approx(0.2)
    assert moved["poor_quality"] == pytest.approx(1 / 82)
    scores = decision.record_scores(moved, RULE)
    assert list(scores) == RECORD_LABELS and sum(scores.values()) == pytest.approx(1)
    assert scores["CAS"] == pytest.approx((1 - 1 / 82) * 0.75 * 0.8)


def test_events_are_runs_of_one_type_inside_the_recording():
    probabilities = frames((NORMAL, 4, 1), (WHEEZE, 3, 0.8), (FINE, 2, 0.7), (NORMAL, 1, 1), (FINE, 3, 0.6))
    events = decision.decode_events(probabilities, ID2LABEL, RULE, FRAME, duration_seconds=3.1)
    assert [(e["label"], e["start"], e["end"]) for e in events] == [
        ("Wheeze", 1.0, 1.75), ("Fine Crackle", 1.75, 2.25), ("Fine Crackle", 2.5, 3.1)]  # the last one ends with the audio
    assert [e["score"] for e in events] == pytest.approx([0.8, 0.7, 0.6])
    poor = frames((POOR, 10, 0.9))
    result = decision.detect(poor, ID2LABEL, RULE, FRAME)
    assert result["events"] == [] and result["record_label"] == "Poor Quality"


def test_validation_metrics_and_the_pipeline_make_the_same_record_decision():
    """Training's validation (make_detection_metrics, on logits of padded clips) and detect() (the pipeline, on the real
    frames' probabilities) give each recording the same record class."""
    rng = np.random.default_rng(0)
    stride, rows, length = 16, 12, 60
    logits = rng.normal(0, 3, (rows, length, len(DETECTION_LABELS)))
    real = rng.integers(10, length, rows)
    mask = (np.arange(length * stride)[None] < (real * stride)[:, None]).astype(int)
    labels = np.where(mask == 1, NORMAL, -100)
    detection = {**RULE, "evidence_seconds": 0.5, "record_logit_adjustment": {"continuous": -1.0, "poor_quality": 0.5}}
    config = RespSTFConfig(id2label=ID2LABEL, detection=detection)
    compute = training.make_detection_metrics(config, stride, 0.016, RECORD_LABELS, "Normal")
    references = np.arange(rows) % len(RECORD_LABELS)
    matrix = np.asarray(compute(EvalPrediction(predictions=logits, label_ids=(labels, mask, references)))["confusion_matrix"])
    expected = np.zeros_like(matrix)
    for row in range(rows):
        kept = logits[row, :real[row]]
        probabilities = np.exp(kept - kept.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        label = decision.detect(probabilities, ID2LABEL, detection, stride * 0.016)["record_label"]
        expected[references[row], RECORD_LABELS.index(label)] += 1
    assert (matrix == expected).all()


def test_a_chosen_decision_is_written_into_the_detectors_config(tmp_path):
    folder = tmp_path / "events"
    shutil.copytree(Path(__file__).resolve().parents[1] / "checkpoints" / "sprsound-events", folder)
    before = json.loads((folder / "config.json").read_text())
    event_detection.write_decision(folder, {"evidence_seconds": 2.0, "record_logit_adjustment": {"poor_quality": -1.0},
                                            "score_22": 0.5})
    after = json.loads((folder / "config.json").read_text())
    assert after["detection"] == {**before["detection"], "evidence_seconds": 2.0, "record_logit_adjustment": {"poor_quality": -1.0}}
    assert {key: after[key] for key in before if key != "detection"} == {
        key: value for key, value in before.items() if key != "detection"}
    # Fields the config gained after the checkpoint was saved are written too, at their defaults.
    assert {key: after[key] for key in set(after) - set(before)} == {
        key: getattr(RespSTFConfig(), key) for key in set(after) - set(before)}
    # A trained run's folder keeps where the decision was chosen, and its card says so.
    card = (folder / "README.md").read_text()
    event_detection.write_decision(folder, {"evidence_seconds": 1.0, "record_logit_adjustment": {"poor_quality": -1.0},
                                            "score_22": 0.72, "score_21": 0.8, "normals_called_poor_quality": 36,
                                            "normals": 1303}, "the 1949 recordings of cross-validation folds 0, 1")
    summary = json.loads((folder / "results.json").read_text())
    assert summary["decision"] == {"chosen_on": "the 1949 recordings of cross-validation folds 0, 1", "score_22": 0.72,
                                   "score_21": 0.8, "normals_called_poor_quality": 36, "normals": 1303}
    written = (folder / "README.md").read_text()
    assert written != card and ("chosen on the 1949 recordings of cross-validation folds 0, 1 (`benchmarks/event_detection.py "
                                "--choose_decision`), where it gives Scores 2-2 0.720 and 2-1 0.800 and calls 36 of 1303") in written
