"""train.py --task events: an event detector trained on whole recordings from the event timestamps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import soundfile
from safetensors.torch import load_file
from transformers import EvalPrediction, TrainingArguments, pipeline

import train
from conftest import longest_stretch, single_model
from respstf import hub_dataset, training
from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset import DETECTION_LABELS, RECORD_LABELS, DatasetSource, detection_rule
from respstf.hub_dataset.labels import event_type_of_label, record_label_from_events
from respstf.hub_dataset.sprsound import parse_annotation, parse_file_name
from respstf.modeling import RespSTFConfig, RespSTFForAudioFrameClassification

ROOT = Path(__file__).resolve().parents[1]
PARENT = ROOT / "checkpoints" / "sprsound-task12"
QUICK = ["--max_eval_samples", "12", "--per_device_train_batch_size", "4", "--disable_tqdm", "true", "--logging_steps", "1"]


@pytest.fixture(scope="module")
def detector_run(sprsound_root, tmp_path_factory) -> tuple[Path, dict]:
    """Two real steps at learning rate 0 (the weights stay those it starts from) on whole SPRSound recordings, with the
    recipe's per-stretch frequency focusing."""
    output = tmp_path_factory.mktemp("events")
    summary = train.main(["--task", "events", "--dataset", str(sprsound_root), "--from", str(PARENT), "--n_frames", "960",
                          "--output_dir", str(output), "--eval_split", "none", "--max_train_samples", "8", "--max_steps", "2",
                          "--learning_rate", "0", "--eval_strategy", "steps", "--eval_steps", "2", "--cv_fold", "0",
                          "--frequency_focus_frames", "9", *QUICK])
    return output, summary


def test_detector_is_a_frame_model_with_the_record_rule(detector_run):
    output, summary = detector_run
    config = json.loads((output / "config.json").read_text())
    assert config["architectures"] == ["RespSTFForAudioFrameClassification"]
    assert [config["id2label"][str(i)] for i in range(len(DETECTION_LABELS))] == DETECTION_LABELS
    assert config["finetuning_task"] == "events" and config["annotation_level"] == "record"
    assert config["frequency_focus_frames"] == 9
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
    Poor Quality, which the parent has no row for, is new. The bundled parent is a fold ensemble: the run fine-tuned
    its member 0 (--from_member's default)."""
    output, _ = detector_run
    parent, detector = load_file(single_model("12") / "model.safetensors"), load_file(output / "model.safetensors")
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


def test_detection_on_a_dataset_without_sprsound_event_times_is_refused(tmp_path):
    """A folder of label subfolders has no event times, and a saved or Hub dataset no known layout of them."""
    folder = tmp_path / "mine"
    (folder / "Normal").mkdir(parents=True)
    with pytest.raises(ValueError, match="--task events learns SPRSound's event types.*needs a metadata table"):
        training.load_training_data(DatasetSource(str(folder), "folder"), "events", None, "error")
    with pytest.raises(ValueError, match="--task events learns SPRSound's event types.*is a saved dataset"):
        training.load_training_data(DatasetSource(str(folder), "saved"), "events", None, "error")


# -- A new dataset with event times: a folder whose metadata.csv lists file,label,start,end,patient_id ------------------

# Real SPRSound train recordings (6 patients, 2 with two recordings): Normal, CAS, DAS (fine and coarse crackles) and
# CAS & DAS (with a Wheeze+Crackle event), as a new dataset would list them.
EVENT_FOLDER_RECORDINGS = ["40138127_14.7_0_p3_139", "40138127_14.7_0_p4_140", "40490865_8.4_1_p1_1884",
                           "40638274_9.7_1_p1_1789", "40638274_9.7_1_p3_1765", "40797382_4.8_0_p3_3441",
                           "40877908_4.0_0_p2_3440", "40969263_4.0_0_p2_2067"]


def write_event_table(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def event_rows(sprsound_root) -> list[dict]:
    """Each recording's JSON events as metadata.csv rows (seconds), the audio referenced in the shared data."""
    rows = []
    for stem in EVENT_FOLDER_RECORDINGS:
        _, events = parse_annotation(sprsound_root / "train_json" / f"{stem}.json")
        rows += [{"file": str(sprsound_root / "train_wav" / f"{stem}.flac"), "label": event["type"],
                  "start": f"{event['start_s']:.3f}", "end": f"{event['end_s']:.3f}",
                  "patient_id": parse_file_name(stem)["patient_id"]} for event in events]
    return rows


@pytest.fixture(scope="module")
def event_folder(event_rows, tmp_path_factory) -> Path:
    return write_event_table(tmp_path_factory.mktemp("events-folder") / "mine", event_rows)


def test_an_event_folder_gives_one_row_per_recording_with_its_events(event_folder, sprsound_root):
    source = DatasetSource.detect(event_folder)
    data = source.load("events")
    assert source.kind == "folder" and list(data) == ["train"]
    rows = data["train"]
    assert rows.column_names == ["audio", "recording_id", "patient_id", "task22", "duration_s", "events"]
    assert rows.features["task22"].names == RECORD_LABELS
    assert rows["recording_id"] == EVENT_FOLDER_RECORDINGS  # one row per recording (not per event), in table order
    for row in rows:
        stem = row["recording_id"]
        record_label, events = parse_annotation(sprsound_root / "train_json" / f"{stem}.json")
        audio = sprsound_root / "train_wav" / f"{stem}.flac"
        assert row["events"] == pytest.approx(events)  # types and times (s), sorted by start
        assert RECORD_LABELS[row["task22"]] == record_label  # SPRSound's rule on the events' types
        assert row["patient_id"] == parse_file_name(stem)["patient_id"]
        assert row["duration_s"] == pytest.approx(soundfile.info(audio).duration)
        assert row["audio"]["bytes"] == audio.read_bytes()  # the whole recording
    assert {RECORD_LABELS[label] for label in rows["task22"]} == {"Normal", "CAS", "DAS", "CAS & DAS"}


def test_an_event_folder_is_split_by_patient_and_weighs_no_poor_quality(event_folder):
    """Validation is carved by patient as for any dataset (a fraction, or a cross-validation fold); the frame-loss
    weights stay finite without Poor Quality recordings (its weight: the mean, 1)."""
    source = DatasetSource.detect(event_folder)
    for cv_fold in (None, 0):
        data = training.load_training_data(source, "events", None, "error")
        training.add_validation_split(data, source, "task22", 0.3, 0, cv_fold=cv_fold)
        train_patients, validation_patients = set(data["train"]["patient_id"]), set(data["validation"]["patient_id"])
        assert train_patients and validation_patients and not train_patients & validation_patients
        assert data["train"].num_rows + data["validation"].num_rows == len(EVENT_FOLDER_RECORDINGS)
    weights = np.asarray(training.detection_class_weights(data["train"], "weights"))
    assert np.isfinite(weights).all() and (weights > 0).all()
    seconds = {name: sum(event["end_s"] - event["start_s"] for events in data["train"]["events"] for event in events
                         if event["type"] == name) for name in DETECTION_LABELS}
    present = [i for i, name in enumerate(DETECTION_LABELS) if seconds[name] > 0]
    assert seconds["Poor Quality"] == 0 and weights[DETECTION_LABELS.index("Poor Quality")] == 1.0
    assert weights[present].mean() == pytest.approx(1.0, abs=1e-3) and weights.mean() == pytest.approx(1.0, abs=1e-3)
    normal, crackle = DETECTION_LABELS.index("Normal"), DETECTION_LABELS.index("Fine Crackle")
    assert weights[crackle] / weights[normal] == pytest.approx(np.sqrt(seconds["Normal"] / seconds["Fine Crackle"]), rel=1e-3)


def test_detection_class_weights_without_poor_quality_are_finite():
    rows = {"events": [[{"start_s": 0, "end_s": 4.0, "type": "Normal"}], [{"start_s": 1, "end_s": 2.0, "type": "Wheeze"}]],
            "duration_s": [10.0, 9.0]}
    weights = np.asarray(training.detection_class_weights(datasets.Dataset.from_dict(rows), "weights"))
    normal, wheeze = DETECTION_LABELS.index("Normal"), DETECTION_LABELS.index("Wheeze")
    assert np.isfinite(weights).all() and weights[wheeze] / weights[normal] == pytest.approx(2.0, rel=1e-3)
    assert [w for i, w in enumerate(weights) if i not in (normal, wheeze)] == [1.0] * (len(DETECTION_LABELS) - 2)


def test_the_detector_fine_tunes_on_an_event_folder(event_folder, sprsound_root, tmp_path):
    """--task events --dataset <folder> --from the shipped detector: two real steps, validated on the record classes,
    and the saved folder's pipeline detects events in a recording."""
    output = tmp_path / "detector"
    summary = train.main(["--task", "events", "--dataset", str(event_folder), "--from", str(ROOT / "checkpoints" / "sprsound-events"),
                          "--output_dir", str(output), "--max_steps", "2", "--learning_rate", "1e-4", "--validation_fraction",
                          "0.3", "--eval_strategy", "steps", "--eval_steps", "2", *QUICK])
    config = json.loads((output / "config.json").read_text())
    assert config["architectures"] == ["RespSTFForAudioFrameClassification"] and config["finetuning_task"] == "events"
    assert [config["id2label"][str(i)] for i in range(len(DETECTION_LABELS))] == DETECTION_LABELS
    assert summary["labels"] == RECORD_LABELS and summary["global_step"] == 2
    validation = summary["results"]["validation"]
    assert summary["train_rows"] + validation["rows"] == len(EVENT_FOLDER_RECORDINGS)
    assert np.asarray(validation["confusion_matrix"]).sum() == validation["rows"] and 0 <= validation["score"] <= 1
    detector = pipeline("respiratory-event-detection", model=str(output), trust_remote_code=True)
    answer = detector(str(sprsound_root / "train_wav" / f"{EVENT_FOLDER_RECORDINGS[3]}.flac"))
    assert answer["record_label"] in RECORD_LABELS
    assert all(event["label"] in DETECTION_LABELS for event in answer["events"])


def test_the_detector_trains_on_all_of_a_folder_with_crops(event_folder, tmp_path):
    """--validation_fraction 0 --eval_strategy no: every recording trains (drawn as windows with
    --record_crop_probability, with the adventitious frame loss), the last weights are kept, and the card says its
    choices were made beforehand."""
    output = tmp_path / "all"
    summary = train.main(["--task", "events", "--dataset", str(event_folder), "--from", str(ROOT / "checkpoints" / "sprsound-events"),
                          "--output_dir", str(output), "--max_steps", "2", "--learning_rate", "1e-4", "--validation_fraction",
                          "0", "--eval_strategy", "no", "--record_crop_probability", "0.5", "--record_pair_probability", "0.5",
                          "--adventitious_loss_weight", "0.5", *QUICK])
    assert summary["train_rows"] == len(EVENT_FOLDER_RECORDINGS) and summary["global_step"] == 2
    assert summary["adventitious_loss_weight"] == 0.5
    assert summary["results"] == {} and summary["selection"] is None
    assert (summary["record_crop_probability"], summary["record_pair_probability"]) == (0.5, 0.5)
    card = (output / "README.md").read_text()
    assert "a run on all of `train` (no validation split)" in card and "record decision were chosen beforehand" in card
    weights = (output / "model.safetensors").read_bytes()
    # Scored afterwards in place (here on some of its own rows), still without a validation split.
    scored = train.main(["--task", "events", "--dataset", str(event_folder), "--from", str(output), "--output_dir", str(output),
                         "--do_train", "false", "--validation_fraction", "0", "--eval_split", "train", *QUICK])
    assert list(scored["results"]) == ["train"] and scored["results"]["train"]["rows"] == len(EVENT_FOLDER_RECORDINGS)
    assert scored["train_rows"] == summary["train_rows"] and (output / "model.safetensors").read_bytes() == weights
    assert "| train |" in (output / "README.md").read_text()


def test_event_labels_must_name_sprsound_event_types(event_rows, tmp_path):
    """Any case and the aliases name a type; "crackle" (Coarse or Fine?) and a row without times are refused in one
    line naming the row, its file and the accepted labels."""
    assert [event_type_of_label(name) for name in ("fine crackles", "WHEEZE", "Wheeze & Crackle", "wheeze + crackle",
                                                   "Rhonchus", "normal")] == \
        ["Fine Crackle", "Wheeze", "Wheeze+Crackle", "Wheeze+Crackle", "Rhonchi", "Normal"]
    assert event_type_of_label("crackle") is None and event_type_of_label("Poor Quality") is None

    renamed = [dict(row) for row in event_rows]
    renamed[3]["label"] = "coarse CRACKLE"  # any case: accepted
    renamed[5]["label"] = "crackle"
    source = DatasetSource.detect(write_event_table(tmp_path / "crackle", renamed))
    with pytest.raises(ValueError) as refused:
        training.load_training_data(source, "events", None, "error")
    message = str(refused.value)
    assert "\n" not in message and "metadata.csv, entry 6" in message and Path(renamed[5]["file"]).name in message
    assert "'crackle' is not an SPRSound event type" in message and "Coarse Crackle, Fine Crackle" in message
    assert all(name in message for name in DETECTION_LABELS[:-1]) and "rename" in message

    untimed = [dict(row) for row in event_rows]
    untimed[2]["end"] = ""
    source = DatasetSource.detect(write_event_table(tmp_path / "untimed", untimed))
    with pytest.raises(ValueError, match=r"metadata.csv, entry 3 \(.*\.flac\): no start and end"):
        training.load_training_data(source, "events", None, "error")


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
    model_args, feature_args = detector_args(single_model("22"))
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


def test_a_detector_with_finer_output_frames_starts_from_the_same_weights():
    """--stage_time_pool 2 2 1 with --from: the same weights, output frames of 128 ms instead of 256 ms."""
    folder = ROOT / "checkpoints" / "sprsound-events"
    shipped = RespSTFForAudioFrameClassification.from_pretrained(folder)
    model_args, feature_args = detector_args(folder, "--stage_time_pool", "2", "2", "1")
    finer, extractor = training.build_model_and_extractor(model_args, feature_args, "events", RECORD_LABELS, "record", False)
    assert shipped.frame_stride == 16 and finer.frame_stride == 8 and finer.config.stage_pool == [[2, 2], [2, 2], [2, 1]]
    assert all(torch.equal(value, shipped.state_dict()[name]) for name, value in finer.state_dict().items())
    features = torch.randn(1, 1, extractor.n_scales, extractor.n_frames)
    with torch.no_grad():
        assert finer.eval()(features).logits.shape == (1, extractor.n_frames // 8, len(DETECTION_LABELS))
    model_args, feature_args = detector_args(folder, "--stage_time_pool", "2", "1")
    with pytest.raises(ValueError, match="--stage_time_pool 2 1: give one positive factor for each of the model's 3 stages"):
        training.build_model_and_extractor(model_args, feature_args, "events", RECORD_LABELS, "record", False)


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
    # --adventitious_loss_weight: the mean of -log p(Normal) over Normal frames and that of -log p(any event type but
    # Normal) over adventitious frames, averaged; Poor Quality frames take no part.
    trainer.class_weights, trainer.adventitious_loss_weight = None, 0.5
    with torch.no_grad():
        with_adventitious = trainer.compute_loss(model, dict(inputs))
    probabilities, centres = logits.softmax(-1), centres.reshape(-1)
    flat = probabilities.reshape(-1, 8)
    normal = -flat[centres == 0, 0].log().mean()
    events = (centres >= 1) & (centres <= 6)
    adventitious = -flat[events, 1:7].sum(-1).log().mean()
    unweighted = torch.nn.functional.cross_entropy(logits.reshape(-1, 8), centres)
    assert with_adventitious.item() == pytest.approx((unweighted + 0.5 * (normal + adventitious) / 2).item(), rel=1e-5)
    only_poor = {**inputs, "labels": torch.full_like(inputs["labels"], DETECTION_LABELS.index("Poor Quality"))}
    assert training.adventitious_frame_loss(logits, only_poor["labels"], model).item() == 0


@pytest.fixture(scope="module")
def detector_rows(sprsound_root):
    """Ten real training recordings (two of each record class, none longer than the clip) as the rows the detector
    trains on: frame targets in ``labels``, the record class in ``record_labels``."""
    records = hub_dataset.load_sprsound(sprsound_root, level="record", splits=["train"], decode=False, progress=False)["train"]
    picked = []
    for label in range(len(RECORD_LABELS)):
        picked += [i for i, (row_label, seconds) in enumerate(zip(records["task22"], records["duration_s"]))
                   if row_label == label and seconds < 15][:2]
    extractor = RespSTFFeatureExtractor(hop_length=128, n_frames=960, padding_mode="zero")
    return training.featurize(records.select(picked), extractor, "task22", with_frames=False, detection=True).with_format("torch")


def test_detector_crops_move_frames_with_their_targets(detector_rows):
    """--task events --record_crop_probability: a window (and, paired, one of another recording) moved to the start,
    each frame keeping its own target, the record class that of the event types inside; Poor Quality stays whole."""
    crops = training.RecordCrops(detector_rows, "events", RECORD_LABELS, probability=1.0, min_frames=188,
                                 min_event_frames=16, pair_probability=0.5)
    torch.manual_seed(0)
    shortened, joined = 0, 0
    for _ in range(3):
        for index in range(len(detector_rows)):
            whole, crop = detector_rows[index], crops[index]
            size = int(crop["attention_mask"].sum())
            assert crop["attention_mask"][:size].all() and not crop["attention_mask"][size:].any()
            assert (crop["labels"][size:] == -100).all() and not crop["input_features"][..., size:].any()
            if RECORD_LABELS[int(whole["record_labels"])] == "Poor Quality":
                assert torch.equal(crop["input_features"], whole["input_features"]) and torch.equal(crop["labels"], whole["labels"])
                continue
            if torch.equal(crop["input_features"], whole["input_features"]):
                continue
            shortened += 1
            start, first = longest_stretch(whole, crop["input_features"][..., :size])
            assert first >= 188
            targets, source = crop["labels"][:first], whole["labels"][start:start + first]
            assert ((targets == source) | (targets == -100)).all()  # only slivers at the edges lose their target
            joined += first < size
            types = {DETECTION_LABELS[c] for c in crop["labels"][crop["labels"] >= 0].tolist()}
            assert RECORD_LABELS[int(crop["record_labels"])] == record_label_from_events(sorted(types))
            assert "Poor Quality" not in types
    assert shortened > 10 and joined > 3
