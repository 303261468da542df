"""How well an event detector finds SPRSound's annotated events in whole recordings.

Inputs are plain per-recording event lists, ``{"label": str, "onset": s, "offset": s}`` (predicted events may carry a
``"score"``): :func:`annotated_events` turns a record row's ``events`` into that form, :func:`detected_events` the
``events`` of ``respstf.modeling.detection_respstf.detect``. Labels are SPRSound's event types (:data:`EVENT_TYPES`).

Measures (:func:`evaluate_detection` computes them all):

* **sed_eval** (Mesaros, Heittola, Virtanen, "Metrics for polyphonic sound event detection", 2016; the DCASE
  toolbox) at two label granularities (:data:`GRANULARITIES`), :func:`sed_metrics`:

  - *segment-based*, 1 s segments: a class is active in a segment when any of its events overlaps it;
  - *event-based*, DCASE collars: onset within 200 ms, offset within max(200 ms, 20 % of the annotated event's length)
    (``t_collar=0.2, percentage_of_length=0.2, evaluate_offset=True``, sed_eval's optimal matching);

  each with the overall (micro) F1, precision, recall and error rate (substitutions + deletions + insertions over
  the reference count), the class-wise figures and their mean over classes (macro, sed_eval's ``class_wise_average``).
  A class with references but no detections scores 0 (sed_eval's ``empty_system_output_handling="zero_score"``);
  a class absent from the references has no F1 and no error rate (NaN; sed_eval would divide by ~0) and is left out
  of the class means.

  *Which classes are evaluated.* The detector marks adventitious sounds; every moment it does not mark is Normal, the
  background, and it never outputs Normal events. So the evaluated event classes are the six adventitious types at
  the ``"type"`` granularity, and one class, ``"Adventitious"`` (every non-Normal type), at the ``"binary"`` one:
  annotated Normal events are dropped from the references, as a background class is in DCASE. They still count
  where the background matters: a frame of a Normal event predicted adventitious is a false positive of the frame
  F1 below, a Normal event mostly predicted adventitious is not "found", and the record Scores below judge normal
  recordings. At the binary granularity an event is a stretch of adventitious sound: touching or overlapping events
  merge into one, annotated and predicted alike (a Wheeze run followed at once by a Wheeze+Crackle run is one
  adventitious sound, and so are two annotated wheezes of consecutive breath phases); at the type granularity events
  are kept as annotated (one per breath phase) and as detected.

* **Frames** (:func:`frame_measures`, numpy): 0.1 s frames, each inside an annotated event when its centre is
  (an event holding no centre gets the frame of its middle). A frame's predicted type is the type of the predicted
  event over its centre (the highest-scoring one where predicted events overlap), Normal where there is none.

  - *found*: an annotated event is found when more than half of its frames are predicted its exact type
    (``"exact"``), or a type of its kind (``"kind"``: a continuous one, Rhonchi/Wheeze/Stridor/Wheeze+Crackle, for a
    wheeze, rhonchus or stridor; a discontinuous one, a crackle or Wheeze+Crackle, for a crackle; either for
    Wheeze+Crackle; Normal for Normal). Counted per type and for :data:`EVENT_GROUPS` (``"crackles"``: Coarse and
    Fine Crackle events, each found as its own type);
  - *adventitious-vs-normal frame F1*: over the frames inside annotated events, positive = adventitious (a frame
    inside a non-Normal event; predicted: any non-Normal type).

* **Records** (:func:`record_label_scores`): the official SPRSound Score (``sprsound_score``, the metric
  ``evaluate.load(SPRSOUND_SCORE_PATH)`` loads) of the detector's record labels for Task 2-2 and, mapped with
  ``record_task_label``, Task 2-1; and how many normal recordings were called Poor Quality.

*Which recordings.* SPRSound's Poor Quality recordings carry no events: their audio was not annotated, so an event
predicted there is neither right nor wrong. :func:`evaluate_detection` leaves them out of the event, segment and
frame measures and keeps them in the record Scores.

sed_eval is an optional dependency (``pip install "respstf[eval]"``), imported only when a sed_eval measure is
computed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from .labels import (
    CONTINUOUS_EVENTS, DISCONTINUOUS_EVENTS, EVENT_TYPES, NORMAL_LABEL, POOR_QUALITY_LABEL, RECORD_LABELS, TASKS,
    record_task_label,
)
from .sprsound_score import compute_sprsound_score

ADVENTITIOUS = "Adventitious"
ADVENTITIOUS_TYPES = [t for t in EVENT_TYPES if t != NORMAL_LABEL]
# granularity -> the event classes sed_eval evaluates (see the module's docstring)
GRANULARITIES = {"type": ADVENTITIOUS_TYPES, "binary": [ADVENTITIOUS]}
SEGMENT_SECONDS = 1.0
ONSET_COLLAR_SECONDS = 0.2  # DCASE's t_collar
OFFSET_COLLAR_FRACTION = 0.2  # of the annotated event's length (sed_eval's percentage_of_length)
FRAME_SECONDS = 0.1
# Groups of annotated types counted together by `frame_measures` (each event found as its own type or kind).
EVENT_GROUPS = {"crackles": ("Coarse Crackle", "Fine Crackle")}
RECORD_TASKS = ("22", "21")
MISSING_SED_EVAL = ('sed_eval is not installed; install the evaluation extra: pip install "respstf[eval]" '
                    '(sed_eval with dcase_util, and setuptools<82 for their pkg_resources)')
_MERGE_TOLERANCE_S = 1e-6


def _sed_eval():
    """sed_eval, imported on first use (an optional dependency). Its dcase_util imports pkg_resources, which warns that
    it is deprecated and, in an editable install, that this package was "already imported": not ours to act on."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="(pkg_resources is deprecated|Module .* was already imported)",
                                    category=UserWarning)
            import sed_eval
    except ImportError as err:  # sed_eval itself, or pkg_resources (setuptools >= 82) under dcase_util
        raise ImportError(f"{MISSING_SED_EVAL} ({err})") from err
    return sed_eval


# -- event lists ------------------------------------------------------------------------------------------------------


def annotated_events(events: Sequence[Mapping]) -> list[dict]:
    """A record row's annotated ``events`` (``{"start_s", "end_s", "type"}``, as ``load_sprsound`` gives them) as
    ``{"label", "onset", "offset"}``."""
    return [{"label": e["type"], "onset": float(e["start_s"]), "offset": float(e["end_s"])} for e in events]


def detected_events(events: Sequence[Mapping]) -> list[dict]:
    """The ``events`` of ``detection_respstf.detect`` (``{"label", "start", "end", "score"}``) as ``{"label", "onset",
    "offset", "score"}``."""
    return [{"label": e["label"], "onset": float(e["start"]), "offset": float(e["end"]), "score": float(e.get("score", 1.0))}
            for e in events]


def _check_labels(recordings: Sequence[Sequence[Mapping]], what: str) -> None:
    for index, events in enumerate(recordings):
        for event in events:
            if event["label"] not in EVENT_TYPES:
                raise ValueError(f"{what} of recording {index}: event label {event['label']!r} is not an SPRSound event "
                                 f"type {EVENT_TYPES}.")
            if not event["offset"] > event["onset"]:
                raise ValueError(f"{what} of recording {index}: event {dict(event)} does not end after it starts.")


def _check_lengths(references: Sequence, predictions: Sequence, durations: Sequence | None) -> None:
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} recordings of references but {len(predictions)} of predictions.")
    if durations is not None and len(durations) != len(references):
        raise ValueError(f"{len(durations)} durations for {len(references)} recordings.")


def at_granularity(events: Sequence[Mapping], granularity: str, merge: bool = False) -> list[dict]:
    """``events`` as sed_eval reads them (``{"event_label", "onset", "offset"}``), only the classes evaluated at
    ``granularity`` (:data:`GRANULARITIES`); at ``"binary"`` every non-Normal type is :data:`ADVENTITIOUS`. With
    ``merge``, touching or overlapping events of one class become one."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {list(GRANULARITIES)}, got {granularity!r}.")
    kept = sorted(({"event_label": ADVENTITIOUS if granularity == "binary" else e["label"], "onset": float(e["onset"]),
                    "offset": float(e["offset"])} for e in events if e["label"] != NORMAL_LABEL),
                  key=lambda e: (e["onset"], e["offset"]))
    if not merge:
        return kept
    merged: list[dict] = []
    for event in kept:
        last = next((m for m in reversed(merged) if m["event_label"] == event["event_label"]), None)
        if last is not None and event["onset"] <= last["offset"] + _MERGE_TOLERANCE_S:
            last["offset"] = max(last["offset"], event["offset"])
        else:
            merged.append(dict(event))
    return merged


# -- sed_eval -------------------------------------------------------------------------------------------------------


def _error_rate(rate: float, references: float) -> float:
    """sed_eval divides by ``references + eps``: with no references an error rate is undefined (NaN), not ~1e17."""
    return rate if references else math.nan


def _summary(metrics, event_based: bool) -> dict:
    """The figures of a filled sed_eval metrics object, flat."""
    with warnings.catch_warnings():  # the class mean of a granularity whose classes are all undefined
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        overall, average = metrics.results_overall_metrics(), metrics.results_class_wise_average_metrics()
        class_wise = metrics.results_class_wise_metrics()
    f, errors, references = overall["f_measure"], overall["error_rate"], metrics.overall["Nref"]
    summary = {"f1": f["f_measure"], "precision": f["precision"], "recall": f["recall"],
               "error_rate": _error_rate(errors["error_rate"], references),
               "substitution_rate": _error_rate(errors.get("substitution_rate", math.nan), references),
               "deletion_rate": _error_rate(errors["deletion_rate"], references),
               "insertion_rate": _error_rate(errors["insertion_rate"], references),
               "macro_f1": average["f_measure"]["f_measure"],
               "references": int(references), "detections": int(metrics.overall["Nsys"]), "class_wise": {}}
    for label, figures in class_wise.items():
        count = figures["count"]["Nref"]
        summary["class_wise"][label] = {
            "f1": figures["f_measure"]["f_measure"], "precision": figures["f_measure"]["precision"],
            "recall": figures["f_measure"]["recall"], "error_rate": _error_rate(figures["error_rate"]["error_rate"], count),
            "references": int(count), "detections": int(figures["count"]["Nsys"])}
    # sed_eval's class mean of the error rate would take in the undefined ones (~1e17): the mean of the defined ones.
    rates = [c["error_rate"] for c in summary["class_wise"].values() if not math.isnan(c["error_rate"])]
    summary["macro_error_rate"] = float(np.mean(rates)) if rates else math.nan
    summary["unit"] = "events" if event_based else f"{SEGMENT_SECONDS:g} s segments"
    return summary


def sed_metrics(references: Sequence[Sequence[Mapping]], predictions: Sequence[Sequence[Mapping]],
                durations: Sequence[float] | None = None, granularity: str = "type") -> dict:
    """sed_eval's segment-based (1 s) and event-based (DCASE collars) metrics of ``predictions`` against
    ``references`` (per recording, ``{"label", "onset", "offset"}``; see the module's docstring for the classes).

    Args:
        durations: each recording's length in seconds: the segments a recording has (default: up to its last event).
        granularity: ``"type"`` (the six adventitious types) or ``"binary"`` (:data:`ADVENTITIOUS`).

    Returns:
        ``{"segment": figures, "event": figures}``, figures = ``{"f1", "precision", "recall", "error_rate",
        "substitution_rate", "deletion_rate", "insertion_rate", "macro_f1", "macro_error_rate", "references",
        "detections", "class_wise": {class: {"f1", "precision", "recall", "error_rate", "references", "detections"}}}``
        (``references``/``detections``: active segments, or events).
    """
    _check_lengths(references, predictions, durations)
    _check_labels(references, "references")
    _check_labels(predictions, "predictions")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {list(GRANULARITIES)}, got {granularity!r}.")
    sed_eval, labels = _sed_eval(), list(GRANULARITIES[granularity])
    segment = sed_eval.sound_event.SegmentBasedMetrics(labels, time_resolution=SEGMENT_SECONDS)
    # Its constructor takes no such argument; the attribute is what every F-measure of the class reads.
    segment.empty_system_output_handling = "zero_score"
    event = sed_eval.sound_event.EventBasedMetrics(
        labels, evaluate_onset=True, evaluate_offset=True, t_collar=ONSET_COLLAR_SECONDS,
        percentage_of_length=OFFSET_COLLAR_FRACTION, empty_system_output_handling="zero_score")
    for index, (reference, prediction) in enumerate(zip(references, predictions)):
        binary = granularity == "binary"
        reference = at_granularity(reference, granularity, merge=binary)
        prediction = at_granularity(prediction, granularity, merge=binary)
        length = max([e["offset"] for e in reference + prediction], default=0.0)
        if durations is not None:
            length = max(length, float(durations[index]))
        segment.evaluate(reference, prediction, evaluated_length_seconds=length)
        event.evaluate(reference, prediction)
    return {"segment": _summary(segment, event_based=False), "event": _summary(event, event_based=True)}


# -- frames ---------------------------------------------------------------------------------------------------------


def _frame_count(events: Sequence[Mapping], duration: float | None, frame_seconds: float) -> int:
    end = max([e["offset"] for e in events], default=0.0)
    if duration is not None:
        end = max(end, float(duration))
    return max(1, math.ceil(end / frame_seconds - 1e-9))


def _centres(n_frames: int, frame_seconds: float) -> np.ndarray:
    return (np.arange(n_frames) + 0.5) * frame_seconds


def predicted_timeline(events: Sequence[Mapping], n_frames: int, frame_seconds: float = FRAME_SECONDS) -> np.ndarray:
    """Each frame's predicted type, as an index into :data:`EVENT_TYPES` (0: Normal): the type of the event over the
    frame's centre, the highest-scoring one where events overlap, Normal where there is none."""
    centres = _centres(n_frames, frame_seconds)
    timeline = np.zeros(n_frames, dtype=np.int64)
    for event in sorted(events, key=lambda e: e.get("score", 1.0)):  # the highest score is painted last
        timeline[(centres >= event["onset"]) & (centres < event["offset"])] = EVENT_TYPES.index(event["label"])
    return timeline


def _event_frames(event: Mapping, n_frames: int, frame_seconds: float) -> np.ndarray:
    """The frames whose centre lies inside ``event`` (the frame of its middle when none does)."""
    centres = _centres(n_frames, frame_seconds)
    frames = np.flatnonzero((centres >= event["onset"]) & (centres < event["offset"]))
    if not len(frames):
        frames = np.array([min(int((event["onset"] + event["offset"]) / 2 / frame_seconds), n_frames - 1)])
    return frames


_KINDS = {"continuous": CONTINUOUS_EVENTS, "discontinuous": DISCONTINUOUS_EVENTS}


def kind_types(event_type: str) -> set[str]:
    """The predicted types that find an annotated ``event_type`` at the kind level: those sharing a kind (continuous,
    discontinuous) with it; Normal alone for Normal."""
    kinds = [members for members in _KINDS.values() if event_type in members]
    return set().union(*kinds) if kinds else {event_type}


def frame_measures(references: Sequence[Sequence[Mapping]], predictions: Sequence[Sequence[Mapping]],
                   durations: Sequence[float] | None = None, frame_seconds: float = FRAME_SECONDS) -> dict:
    """The frame measures of the module's docstring: which annotated events are found, and the
    adventitious-vs-normal F1 of the frames inside annotated events.

    Returns:
        ``{"found": {type or group: {"annotated", "exact", "kind"}}, "frames": {"f1", "precision", "recall",
        "frames", "adventitious_frames", "predicted_adventitious_frames", "true_positives"}}``: counts of annotated
        events, of those found as their exact type and as their kind; ``frames`` counts the frames inside annotated
        events and the adventitious ones among them.
    """
    _check_lengths(references, predictions, durations)
    _check_labels(references, "references")
    _check_labels(predictions, "predictions")
    sed_eval = _sed_eval()
    found = {name: {"annotated": 0, "exact": 0, "kind": 0} for name in [*EVENT_TYPES, *EVENT_GROUPS]}
    positives = predicted_positives = true_positives = frames_inside = 0
    for index, (reference, prediction) in enumerate(zip(references, predictions)):
        n_frames = _frame_count(list(reference) + list(prediction), None if durations is None else durations[index],
                                frame_seconds)
        predicted = predicted_timeline(prediction, n_frames, frame_seconds)
        inside = np.zeros(n_frames, dtype=bool)
        adventitious = np.zeros(n_frames, dtype=bool)
        for event in reference:
            frames = _event_frames(event, n_frames, frame_seconds)
            inside[frames] = True
            if event["label"] != NORMAL_LABEL:
                adventitious[frames] = True
            types = predicted[frames]
            exact = np.mean(types == EVENT_TYPES.index(event["label"])) > 0.5
            kind = np.mean(np.isin(types, [EVENT_TYPES.index(t) for t in kind_types(event["label"])])) > 0.5
            for name in [event["label"], *(g for g, members in EVENT_GROUPS.items() if event["label"] in members)]:
                found[name]["annotated"] += 1
                found[name]["exact"] += int(exact)
                found[name]["kind"] += int(kind)
        called = predicted != 0
        frames_inside += int(inside.sum())
        positives += int((inside & adventitious).sum())
        predicted_positives += int((inside & called).sum())
        true_positives += int((inside & adventitious & called).sum())
    precision = sed_eval.metric.precision(Ntp=true_positives, Nsys=predicted_positives)
    recall = sed_eval.metric.recall(Ntp=true_positives, Nref=positives)
    return {"found": found,
            "frames": {"f1": sed_eval.metric.f_measure(precision, recall), "precision": precision, "recall": recall,
                       "frames": frames_inside, "adventitious_frames": positives,
                       "predicted_adventitious_frames": predicted_positives, "true_positives": true_positives,
                       "frame_seconds": frame_seconds}}


# -- records --------------------------------------------------------------------------------------------------------


def record_class_name(label) -> str:
    """A Task 2-2 record class given by name or by id, as its name."""
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return RECORD_LABELS[int(label)]
    if label not in RECORD_LABELS:
        raise ValueError(f"record label {label!r} is not a Task 2-2 class {RECORD_LABELS} (or its id).")
    return label


def record_label_scores(predicted: Sequence, references: Sequence) -> dict:
    """The official SPRSound Score of record labels (Task 2-2 class names or ids) for Task 2-2 and, mapped with
    ``record_task_label``, Task 2-1; and the normal recordings called Poor Quality.

    Returns:
        ``{"22": result, "21": result, "normals_called_poor_quality": int, "normals": int}``, each result the
        official metric's (``score``, ``se``, ``sp``, ``as``, ``hs``, ``per_class_recall``, ``confusion_matrix``).
    """
    if len(predicted) != len(references):
        raise ValueError(f"{len(predicted)} predicted record labels for {len(references)} references.")
    predicted, references = [record_class_name(p) for p in predicted], [record_class_name(r) for r in references]
    result = {}
    for task in RECORD_TASKS:
        names = TASKS[task]["labels"]
        result[task] = compute_sprsound_score(
            [names.index(record_task_label(p, task)) for p in predicted],
            [names.index(record_task_label(r, task)) for r in references], label_names=names)
    result["normals"] = sum(r == NORMAL_LABEL for r in references)
    result["normals_called_poor_quality"] = sum(r == NORMAL_LABEL and p == POOR_QUALITY_LABEL
                                                for p, r in zip(predicted, references))
    return result


# -- all of it ------------------------------------------------------------------------------------------------------


def evaluate_detection(references: Sequence[Sequence[Mapping]], predictions: Sequence[Sequence[Mapping]],
                       reference_record_labels: Sequence, predicted_record_labels: Sequence | None = None,
                       durations: Sequence[float] | None = None) -> dict:
    """Every measure of the module's docstring for a set of recordings.

    Args:
        references, predictions: per recording, its annotated and its predicted events (``{"label", "onset",
            "offset"}``; :func:`annotated_events`, :func:`detected_events`).
        reference_record_labels: each recording's annotated Task 2-2 class (name or id); Poor Quality recordings
            are left out of the event, segment and frame measures.
        predicted_record_labels: the detector's Task 2-2 classes (no record Scores without them).
        durations: each recording's length in seconds.

    Returns:
        ``{"recordings", "event_recordings", "type": sed_metrics(type), "binary": sed_metrics(binary), "frames":
        frame_measures()["frames"], "found": frame_measures()["found"], "records": record_label_scores() or None}``.
    """
    _check_lengths(references, predictions, durations)
    if len(reference_record_labels) != len(references):
        raise ValueError(f"{len(reference_record_labels)} record labels for {len(references)} recordings.")
    keep = [i for i, label in enumerate(reference_record_labels) if record_class_name(label) != POOR_QUALITY_LABEL]
    refs, preds = [references[i] for i in keep], [predictions[i] for i in keep]
    lengths = None if durations is None else [durations[i] for i in keep]
    frames = frame_measures(refs, preds, lengths)
    return {"recordings": len(references), "event_recordings": len(keep),
            "type": sed_metrics(refs, preds, lengths, "type"), "binary": sed_metrics(refs, preds, lengths, "binary"),
            "frames": frames["frames"], "found": frames["found"],
            "records": None if predicted_record_labels is None else record_label_scores(predicted_record_labels,
                                                                                  reference_record_labels)}
