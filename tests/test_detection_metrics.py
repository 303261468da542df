"""Event-detection metrics (respstf.hub_dataset.detection_metrics, sed_eval) on real SPRSound annotations, the record
decision search and the benchmark's scoring function (benchmarks/event_detection.py)."""

from __future__ import annotations

import math
import sys
import time

import evaluate
import numpy as np
import pytest

from conftest import single_model
from respstf import hub_dataset
from respstf.hub_dataset import detection_metrics
from respstf.hub_dataset.detection_metrics import annotated_events, evaluate_detection, frame_measures, sed_metrics



@pytest.fixture(scope="module")
def inter_test(sprsound_root):
    """The inter-patient test split's record rows, without their audio."""
    rows = hub_dataset.load_sprsound(sprsound_root, task="22", splits=["inter_test"], decode=False, progress=False)
    return rows["inter_test"].remove_columns("audio")


@pytest.fixture(scope="module")
def annotated(inter_test):
    """(events per recording, Task 2-2 class names, durations) of the split."""
    return ([annotated_events(events) for events in inter_test["events"]],
            [hub_dataset.RECORD_LABELS[i] for i in inter_test["task22"]], list(inter_test["duration_s"]))


def moved(references, onset: float = 0.0, offset: float = 0.0):
    return [[{**e, "onset": e["onset"] + onset, "offset": e["offset"] + offset} for e in events] for events in references]


def test_annotations_scored_against_themselves_are_perfect(annotated):
    references, labels, durations = annotated
    result = evaluate_detection(references, references, labels, labels, durations)
    assert result["recordings"] == 355 and result["event_recordings"] == 355 - 8  # the 8 Poor Quality ones left out
    for granularity in ("type", "binary"):
        for unit in ("segment", "event"):
            figures = result[granularity][unit]
            assert figures["f1"] == figures["macro_f1"] == 1.0 and figures["error_rate"] == 0.0, (granularity, unit)
    # The split's adventitious events (README: 305 Wheeze, 80 Fine Crackle, 3 Coarse Crackle, 1 Wheeze+Crackle).
    assert result["type"]["event"]["references"] == 389
    assert result["type"]["event"]["class_wise"]["Wheeze"]["references"] == 305
    assert math.isnan(result["type"]["event"]["class_wise"]["Stridor"]["f1"])  # none annotated: no F1, not in the mean
    assert math.isnan(result["type"]["event"]["class_wise"]["Stridor"]["error_rate"])
    found = result["found"]
    assert found["Wheeze"] == {"annotated": 305, "exact": 305, "kind": 305}
    assert found["crackles"] == {"annotated": 83, "exact": 83, "kind": 83}
    assert found["Normal"]["annotated"] == found["Normal"]["exact"] == 1040
    assert result["frames"]["f1"] == 1.0 and result["frames"]["adventitious_frames"] > 0
    records = result["records"]
    assert records["22"]["score"] == records["21"]["score"] == 1.0 and records["normals_called_poor_quality"] == 0


def test_event_collars_onset_and_offset(annotated):
    """Onsets 0.15 s late are inside the 200 ms collar (every event matched); 0.5 s late, outside (event F1 near 0,
    while 1 s segments still mostly agree); offsets 0.3 s late match exactly the events whose 20 % of length is at
    least 0.3 s (the offset collar max(0.2 s, 20 %))."""
    references, _, durations = annotated
    inside = sed_metrics(references, moved(references, 0.15, 0.15), durations)
    assert inside["event"]["f1"] == 1.0 and inside["event"]["error_rate"] == 0.0
    outside = sed_metrics(references, moved(references, 0.5, 0.5), durations)
    assert outside["event"]["f1"] < 0.05
    assert 0.7 < outside["segment"]["f1"] < 1.0

    late_offsets = sed_metrics(references, moved(references, offset=0.3), durations)
    adventitious = [e for events in references for e in events if e["label"] != "Normal"]
    within = [e for e in adventitious
              if math.fabs(e["offset"] - (e["offset"] + 0.3)) <= max(0.2, 0.2 * (e["offset"] - e["onset"]))]
    assert 0 < len(within) < len(adventitious)
    assert late_offsets["event"]["recall"] == pytest.approx(len(within) / len(adventitious))


def test_dropping_the_wheezes(annotated):
    """Predictions without any wheeze: none found, the crackles all found, and the record labels they imply score
    exactly what the official metric gives those labels."""
    references, labels, durations = annotated
    predictions = [[e for e in events if e["label"] != "Wheeze"] for events in references]
    derived = [label if label == "Poor Quality" else hub_dataset.record_label_from_events(
        [e["label"] for e in events] or ["Normal"]) for label, events in zip(labels, predictions)]
    result = evaluate_detection(references, predictions, labels, derived, durations)
    assert result["found"]["Wheeze"]["exact"] == 0 and result["found"]["Wheeze"]["annotated"] == 305
    assert result["found"]["crackles"]["exact"] == 83
    assert result["type"]["event"]["class_wise"]["Wheeze"]["f1"] == 0.0
    assert result["frames"]["recall"] < 1.0 and result["frames"]["precision"] == 1.0

    official = evaluate.load(hub_dataset.SPRSOUND_SCORE_PATH, keep_in_memory=True)
    for task in ("22", "21"):
        names = hub_dataset.TASKS[task]["labels"]
        expected = official.compute(
            predictions=[names.index(hub_dataset.record_task_label(p, task)) for p in derived],
            references=[names.index(hub_dataset.record_task_label(r, task)) for r in labels], label_names=names)
        assert result["records"][task]["score"] == expected["score"] < 1.0
    assert result["records"]["normals_called_poor_quality"] == 0


def test_binary_granularity_merges_touching_events():
    """A wheeze detected as a Wheeze run then a Wheeze+Crackle run is one adventitious sound (binary), not the
    annotated Wheeze (type); Normal is not an evaluated class."""
    reference = [[{"label": "Wheeze", "onset": 1.0, "offset": 2.0}, {"label": "Normal", "onset": 3.0, "offset": 4.0}]]
    prediction = [[{"label": "Wheeze", "onset": 1.0, "offset": 1.5}, {"label": "Wheeze+Crackle", "onset": 1.5, "offset": 2.0}]]
    assert sed_metrics(reference, prediction, [5.0], "type")["event"]["f1"] == 0.0
    assert sed_metrics(reference, prediction, [5.0], "binary")["event"]["f1"] == 1.0
    frames = frame_measures(reference, prediction, [5.0])
    assert frames["found"]["Wheeze"] == {"annotated": 1, "exact": 0, "kind": 1}  # half Wheeze: not a majority
    assert frames["found"]["Normal"] == {"annotated": 1, "exact": 1, "kind": 1}
    assert frames["frames"]["f1"] == 1.0
    with pytest.raises(ValueError, match="not an SPRSound event type"):
        sed_metrics([[{"label": "Crackle", "onset": 0.0, "offset": 1.0}]], [[]])


def test_missing_sed_eval_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sed_eval", None)  # import sed_eval raises ImportError
    with pytest.raises(ImportError, match=r"respstf\[eval\]"):
        sed_metrics([[]], [[]])


def _simulated_probabilities(rows, frame_seconds: float, labels: list[str]) -> list[np.ndarray]:
    """Frame probabilities a fair detector could give: 0.45 on the annotated type inside each event (Normal
    elsewhere), 0.45 on Poor Quality across a Poor Quality recording; the rest spread evenly."""
    out = []
    for events, label, duration in zip(rows["events"], rows["task22"], rows["duration_s"]):
        frames = math.ceil(duration / frame_seconds)
        top = np.full(frames, labels.index("Poor Quality" if hub_dataset.RECORD_LABELS[label] == "Poor Quality" else "Normal"))
        centres = (np.arange(frames) + 0.5) * frame_seconds
        for event in events:
            top[(centres >= event["start_s"]) & (centres < event["end_s"])] = labels.index(event["type"])
        probabilities = np.full((frames, len(labels)), 0.55 / (len(labels) - 1))
        probabilities[np.arange(frames), top] = 0.45
        out.append(probabilities)
    return out


def test_choose_decision_meets_the_poor_quality_limit(inter_test):
    from benchmarks.event_detection import choose_decision

    labels = hub_dataset.DETECTION_LABELS
    detection = {**hub_dataset.detection_rule(), "evidence_seconds": 1.0,
                 "record_logit_adjustment": {"continuous": 0.0, "discontinuous": 0.0, "poor_quality": 2.0}}
    probabilities = _simulated_probabilities(inter_test, 0.256, labels)
    references = [hub_dataset.RECORD_LABELS[i] for i in inter_test["task22"]]
    choice = choose_decision(probabilities, references, dict(enumerate(labels)), detection, 0.256,
                             evidence_seconds=(0.5, 1.0), offsets=(-2.0, 0.0, 2.0))
    assert choice["candidates"] == 2 * 27 and choice["constraint_met"]
    assert choice["normals_called_poor_quality"] <= 0.03 * choice["normals"]
    assert choice["objective"] >= choice["before"]["objective"] and choice["objective"] > 0.9
    assert choice["detection"]["evidence_seconds"] == choice["evidence_seconds"]
    assert set(choice["record_logit_adjustment"]) == {"continuous", "discontinuous", "poor_quality"}
    # The chosen decision, applied by the detector's own code, gives the Scores reported.
    from respstf.modeling import detection_respstf

    predicted = [detection_respstf.detect(p, dict(enumerate(labels)), choice["detection"], 0.256)["record_label"]
                 for p in probabilities]
    scores = detection_metrics.record_label_scores(predicted, references)
    assert scores["22"]["score"] == pytest.approx(choice["score_22"]) and scores["21"]["score"] == pytest.approx(choice["score_21"])


@pytest.fixture(scope="module")
def dev_detector():
    """A detector as benchmarks score them: the Task 1-2 event model's backbone, an untrained 8-class frame head."""
    from transformers import AutoFeatureExtractor

    from respstf.modeling import RespSTFConfig, RespSTFForAudioFrameClassification

    task12 = single_model("12")
    config = RespSTFConfig.from_pretrained(task12)
    config.id2label = dict(enumerate(hub_dataset.DETECTION_LABELS))
    config.label2id = {name: i for i, name in enumerate(hub_dataset.DETECTION_LABELS)}
    config.finetuning_task, config.annotation_level = "events", "record"
    config.detection = {**hub_dataset.detection_rule(), "evidence_seconds": 1.0,
                        "record_logit_adjustment": {"continuous": 0.0, "discontinuous": 0.0, "poor_quality": 0.0}}
    model = RespSTFForAudioFrameClassification.from_pretrained(task12, config=config, ignore_mismatched_sizes=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained(task12)
    extractor.n_frames, extractor.padding_mode = 960, "zero"
    return model, extractor


def test_benchmark_scores_a_detector_on_real_recordings(sprsound_root, dev_detector, tmp_path):
    """benchmarks/event_detection.py's scoring on 6 real recordings (each record class, wheezes and crackles among
    their events), through the pipeline; the frame probabilities are cached and read back."""
    from benchmarks import event_detection

    rows = event_detection.load_recordings(sprsound_root, "inter_test")
    classes = list(rows["task22"])
    chosen = [classes.index(c) for c in range(5)] + [classes.index(1, classes.index(1) + 1)]  # a second CAS
    rows = rows.select(chosen)
    model, extractor = dev_detector
    cache = tmp_path / "frame_probabilities_test.npz"
    started = time.perf_counter()
    result = event_detection.score_detector(model, extractor, rows, cache=cache, checkpoint="dev")
    assert time.perf_counter() - started < 30
    assert result["recordings"] == 6 and result["event_recordings"] == 5
    assert result["frame_seconds"] == pytest.approx(0.256)
    assert result["found"]["Wheeze"]["annotated"] > 0 and result["found"]["crackles"]["annotated"] > 0
    assert 0 <= result["records"]["22"]["score"] <= 1 and 0 <= result["records"]["21"]["score"] <= 1
    for granularity in ("type", "binary"):
        assert set(result[granularity]) == {"segment", "event"}
    cached = event_detection.load_frame_probabilities(cache)
    assert cached["recording_ids"] == list(rows["recording_id"]) and cached["labels"] == hub_dataset.DETECTION_LABELS
    assert all(p.shape[1] == 8 and np.allclose(p.sum(1), 1, atol=1e-3) for p in cached["probabilities"])
    again = event_detection.score_detector(model, extractor, rows, cache=cache, checkpoint="dev")  # read back
    assert again["records"] == result["records"] and again["found"] == result["found"]
    table = event_detection.results_table([("fold 0", result), ("fold 1", again)], "heading")
    assert "| wheezes found (Wheeze) |" in table and "pooled" in table and "± 0.000" in table
