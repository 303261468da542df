"""train.py --task events: an event detector trained on whole recordings from the event timestamps."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import EvalPrediction, TrainingArguments

import train
from respstf import training
from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset import DETECTION_LABELS, RECORD_LABELS, DatasetSource, detection_rule
from respstf.modeling import RespSTFConfig, RespSTFForAudioFrameClassification

ROOT = Path(__file__).resolve().parents[1]
PARENT = ROOT / "checkpoints" / "sprsound-task12"
QUICK = ["--max_eval_samples", "12", "--per_device_train_batch_size", "4", "--disable_tqdm", "true", "--logging_steps", "1"]


@pytest.fixture(scope="module")
def detector_run(sprsound_root, tmp_path_factory) -> tuple[Path, dict]:
    """Two real steps at learning rate 0 (the weights stay those it starts from) on whole SPRSound recordings."""
    output = tmp_path_factory.mktemp("events")
    summary = train.main(["--task", "events", "--dataset", str(sprsound_root), "--from", str(PARENT), "--n_frames", "960",
                          "--output_dir", str(output), "--eval_split", "none", "--max_train_samples", "8", "--max_steps", "2",
                          "--learning_rate", "0", "--eval_strategy", "steps", "--eval_steps", "2", "--cv_fold", "0", *QUICK])
    return output, summary


def test_detector_is_a_frame_model_with_the_record_rule(detector_run):
    output, summary = detector_run
    config = json.loads((output / "config.json").read_text())
    assert config["architectures"] == ["RespSTFForAudioFrameClassification"]
    assert [config["id2label"][str(i)] for i in range(len(DETECTION_LABELS))] == DETECTION_LABELS
    assert config["finetuning_task"] == "events" and config["annotation_level"] == "record"
    assert {key: config["detection"][key] for key in detection_rule()} == detection_rule()
    assert config["detection"]["record_logit_adjustment"] == {"continuous": 0.0, "discontinuous": 0.0, "poor_quality": 0.0}
    assert json.loads((output / "preprocessor_config.json").read_text())["n_frames"] == 960
    # Validated on the record classes its frames give: a 5 x 5 confusion of the 12 recordings, and the frame F1.
    validation = summary["results"]["validation"]
    assert summary["labels"] == RECORD_LABELS and np.asarray(validation["confusion_matrix"]).shape == (5, 5)
    assert np.asarray(validation["confusion_matrix"]).sum() == validation["rows"] == 12
    assert 0 <= validation["output_frame_f1"] <= 1 and 0 <= validation["score"] <= 1
    card = (output / "README.md").read_text()
    assert 'pipeline("respiratory-event-detection"' in card and "record_logit_adjustment" in card


def test_detector_head_starts_from_the_event_classifier(detector_run):
    """Each event type's row of the frame head is the parent's classifier row (learning rate 0 kept it);
    Poor Quality, which the parent has no row for, is new."""
    output, _ = detector_run
    parent, detector = load_file(PARENT / "model.safetensors"), load_file(output / "model.safetensors")
    rows = [DETECTION_LABELS.index(name) for name in RespSTFConfig.from_pretrained(PARENT).id2label.values()]
    assert torch.equal(detector["classifier.weight"][rows], parent["classifier.weight"])
    assert torch.equal(detector["classifier.bias"][rows], parent["classifier.bias"])
    assert torch.equal(detector["respstf.stem.0.weight"], parent["respstf.stem.0.weight"])
    assert len(detector["classifier.bias"]) == len(DETECTION_LABELS) == len(rows) + 1


def test_detection_frame_targets_are_event_types_and_poor_quality_everywhere():
    extractor = RespSTFFeatureExtractor(hop_length=128, n_frames=960, padding_mode="zero")
    events = [{"start_s": 0.5, "end_s": 1.5, "type": "Normal"}, {"start_s": 2.0, "end_s": 3.0, "type": "Fine Crackle"},
              {"start_s": 4.0, "end_s": 5.0, "type": "Wheeze+Crackle"}]
    per_second = 1 / extractor.frame_seconds
    targets = training.frame_targets(events, duration_s=9.2, extractor=extractor, detection=True)
    assert targets[int(1.0 * per_second)] == DETECTION_LABELS.index("Normal")
    assert targets[int(2.5 * per_second)] == DETECTION_LABELS.index("Fine Crackle")
    assert targets[int(4.5 * per_second)] == DETECTION_LABELS.index("Wheeze+Crackle")
    assert targets[int(1.75 * per_second)] == -100  # unannotated: ignored
    poor = training.frame_targets([], duration_s=9.2, extractor=extractor, detection=True)
    assert (poor[:int(9.1 * per_second)] == DETECTION_LABELS.index("Poor Quality")).all()
    assert (poor[int(9.3 * per_second):] == -100).all()  # padding


def test_detection_class_weights_follow_annotated_seconds():
    rows = {"events": [[{"start_s": 0, "end_s": 4.0, "type": "Normal"}, {"start_s": 4, "end_s": 5.0, "type": "Wheeze"}], []],
            "duration_s": [10.0, 16.0]}
    split = datasets.Dataset.from_dict(rows)
    weights = np.asarray(training.detection_class_weights(split, "weights"))
    normal, wheeze, poor = (DETECTION_LABELS.index(name) for name in ("Normal", "Wheeze", "Poor Quality"))
    assert weights[wheeze] / weights[normal] == pytest.approx(2.0, rel=1e-3)  # 1 s against 4 s
    assert weights[normal] / weights[poor] == pytest.approx(2.0, rel=1e-3)  # 4 s against 16 s
    assert weights.mean() == pytest.approx(1.0, abs=1e-3)
    assert training.detection_class_weights(split, "none") is None
    with pytest.raises(ValueError, match="--imbalance focal"):
        training.detection_class_weights(split, "focal")


def test_detection_metrics_of_frames_that_match_the_annotation_score_one():
    """Frame logits that put each annotated frame in its class give every recording its record class (Score 1) and a
    frame F1 of 1; padding frames, whatever their logits, are not read."""
    config = RespSTFConfig(id2label=dict(enumerate(DETECTION_LABELS)),
                           detection={**detection_rule(), "evidence_seconds": 1.0, "record_logit_adjustment": {}})
    stride, frames, names = 16, 60, ["Normal", "Wheeze", "Fine Crackle", "Wheeze+Crackle", "Poor Quality"]
    records = ["Normal", "CAS", "DAS", "CAS & DAS", "Poor Quality"]
    labels = np.full((5, frames * stride), -100)
    mask = np.zeros((5, frames * stride), dtype=int)
    logits = np.zeros((5, frames, len(DETECTION_LABELS)))
    for row, name in enumerate(names):
        mask[row, :40 * stride] = 1  # 40 real frames, 20 of padding
        labels[row, :40 * stride] = DETECTION_LABELS.index("Normal") if name != "Poor Quality" else DETECTION_LABELS.index(name)
        labels[row, 10 * stride:20 * stride] = DETECTION_LABELS.index(name)
        logits[row, :, DETECTION_LABELS.index("Normal" if name != "Poor Quality" else name)] = 8
        logits[row, 10:20, DETECTION_LABELS.index(name)] = 16
        logits[row, 40:, DETECTION_LABELS.index("Wheeze")] = 30  # padding
    compute = training.make_detection_metrics(config, stride, 0.016, RECORD_LABELS, "Normal")
    metrics = compute(EvalPrediction(predictions=logits, label_ids=(labels, mask, np.array([RECORD_LABELS.index(r) for r in records]))))
    assert metrics["score"] == pytest.approx(1.0) and metrics["output_frame_f1"] == pytest.approx(1.0)
    assert np.trace(np.asarray(metrics["confusion_matrix"])) == 5


def test_detection_on_a_dataset_without_sprsound_event_types_is_refused(tmp_path):
    folder = tmp_path / "mine"
    (folder / "Normal").mkdir(parents=True)
    with pytest.raises(ValueError, match="--task events learns SPRSound's event types"):
        training.load_training_data(DatasetSource(str(folder), "folder"), "events", None, "error")


def detector_args(parent: Path, *extra: str):
    _, model_args, feature_args, _ = train.parse_args(["--from", str(parent), *extra])
    return model_args, feature_args


def test_a_classifier_from_the_detector_is_no_detector_and_scores_as_a_classifier(tmp_path):
    """Fine-tuning Task 2-2 from the detector drops its record rule (the result is a classifier), and is scored with
    the classifier's metrics."""
    model_args, feature_args = detector_args(ROOT / "checkpoints" / "sprsound-events", "--ignore-mismatched")
    model, extractor = training.build_model_and_extractor(model_args, feature_args, "22", RECORD_LABELS, "record", True)
    assert type(model).__name__ == "RespSTFForAudioClassification" and model.config.detection is None
    label_names, _ = training.evaluation_setup(model, extractor, RECORD_LABELS, "Normal")
    assert label_names == ["labels"]


def test_scoring_a_classifier_as_a_detector_is_refused():
    model_args, feature_args = detector_args(ROOT / "checkpoints" / "sprsound-task22")
    with pytest.raises(ValueError, match="is not an event detector"):
        training.build_model_and_extractor(model_args, feature_args, "events", RECORD_LABELS, "record", False, training=False)


def test_a_detector_trained_from_a_detector_starts_from_the_default_decision():
    """The shipped detector's decision was chosen for its own validation fold: a detector trained from it starts from
    the default one (as a classifier drops its parent's logit_adjustment); scoring it keeps its own."""
    model_args, feature_args = detector_args(ROOT / "checkpoints" / "sprsound-events")
    shipped = RespSTFConfig.from_pretrained(ROOT / "checkpoints" / "sprsound-events").detection
    trained, _ = training.build_model_and_extractor(model_args, feature_args, "events", RECORD_LABELS, "record", False)
    scored, _ = training.build_model_and_extractor(model_args, feature_args, "events", RECORD_LABELS, "record", False,
                                                   training=False)
    assert {key: trained.config.detection[key] for key in training.model_setup.DETECTION_DECISION} == training.model_setup.DETECTION_DECISION
    assert scored.config.detection == shipped and shipped["record_logit_adjustment"] != trained.config.detection["record_logit_adjustment"]


def test_the_trainer_weighs_the_detectors_frame_classes(tmp_path):
    """With class weights the detector's loss is the weighted frame cross-entropy of its output frames' centre labels."""
    config = RespSTFConfig(id2label=dict(enumerate(DETECTION_LABELS)), max_frames=64,
                           detection={**detection_rule(), "evidence_seconds": 1.0})
    model = RespSTFForAudioFrameClassification(config).eval()
    torch.manual_seed(0)
    inputs = {"input_features": torch.randn(2, 1, 64, 256), "attention_mask": torch.ones(2, 256, dtype=torch.long),
              "labels": torch.randint(0, len(DETECTION_LABELS), (2, 256))}
    weights = [1.0, 2.0, 3.0, 1.0, 1.0, 4.0, 1.0, 0.5]
    trainer = training.RespSTFTrainer(model=model, args=TrainingArguments(str(tmp_path), use_cpu=True, report_to=[]),
                                      class_weights=weights)
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(inputs))
        logits = model(inputs["input_features"], inputs["attention_mask"]).logits
    centres = inputs["labels"][:, 8::16]  # each 16-frame output frame's centre input frame
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 8), centres.reshape(-1), weight=torch.tensor(weights))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    trainer.class_weights = weights[:3]
    with pytest.raises(ValueError, match="class_weights has 3 entries"):
        trainer.compute_loss(model, dict(inputs))
