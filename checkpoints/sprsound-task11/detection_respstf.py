"""From the event detector's frame probabilities to events and a record verdict.

Hub custom code (copied into a detector checkpoint beside the model's code): numpy only. The detector
(`RespSTFForAudioFrameClassification` trained with ``train.py --task events``) gives each output frame a probability
per class (``config.id2label``: the event types and Poor Quality); ``config.detection`` says how those classes make a
record class (written by training from ``respstf.hub_dataset.labels.detection_rule``) and holds the decision's
settings:

* ``evidence_seconds``: a recording holds a continuous (CAS) sound when some stretch of this length holds it on
  average (moving mean of the summed probabilities of the continuous classes, its maximum over the recording);
  likewise discontinuous (DAS) sounds;
* Poor Quality is the recording's mean Poor Quality probability: a whole-recording decision;
* ``record_logit_adjustment``: offsets added to the log-odds of those three before the decision, the prior the
  decision assumes (chosen on patient cross-validation for the deployment prevalence; 0 = the training prior).

The record scores combine the three as independent: ``P(PQ) = q``; ``P(CAS & DAS) = (1 - q) c d``,
``P(CAS) = (1 - q) c (1 - d)``, ``P(DAS) = (1 - q) (1 - c) d``, ``P(Normal) = (1 - q) (1 - c) (1 - d)``; the record
label is the most probable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

EVIDENCE_KINDS = ("continuous", "discontinuous", "poor_quality")
DEFAULT_EVIDENCE_SECONDS = 1.0


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def class_indices(id2label: Mapping[int, str], names: str | Sequence[str]) -> list[int]:
    """The class ids of ``names`` (one name or several) in ``id2label``."""
    names = [names] if isinstance(names, str) else list(names)
    ids = {label: int(index) for index, label in id2label.items()}
    missing = [name for name in names if name not in ids]
    if missing:
        raise ValueError(f"config.detection names classes {missing} that are not in id2label {list(ids)}.")
    return [ids[name] for name in names]


def record_evidence(probabilities: np.ndarray, id2label: Mapping[int, str], detection: Mapping,
                    frame_seconds: float) -> dict[str, float]:
    """How likely the recording holds each kind of :data:`EVIDENCE_KINDS`, before any adjustment.

    Args:
        probabilities: ``(frames, num_labels)`` softmax of the detector over the recording's real frames.
        frame_seconds: seconds per frame.
    """
    if probabilities.ndim != 2 or not len(probabilities):
        raise ValueError(f"probabilities must have shape (frames, classes) with at least one frame, got {probabilities.shape}.")
    width = max(1, round(detection.get("evidence_seconds", DEFAULT_EVIDENCE_SECONDS) / frame_seconds))
    evidence = {}
    for kind in ("continuous", "discontinuous"):
        per_frame = probabilities[:, class_indices(id2label, detection[kind])].sum(-1)
        if len(per_frame) > width:  # the best stretch of `width` frames
            per_frame = np.convolve(per_frame, np.full(width, 1 / width), mode="valid")
        else:
            per_frame = per_frame.mean(keepdims=True)
        evidence[kind] = float(per_frame.max())
    evidence["poor_quality"] = float(probabilities[:, class_indices(id2label, detection["poor_quality"])[0]].mean())
    return evidence


def adjust_evidence(evidence: Mapping[str, float | np.ndarray], adjustment: Mapping[str, float] | None) -> dict:
    """``evidence`` with each kind's log-odds moved by ``adjustment[kind]`` (missing: 0); each kind's value a number,
    or an array of them (one per recording, as a search over decisions takes them)."""
    adjustment = adjustment or {}
    return {kind: 1 / (1 + np.exp(-(_logit(value) + adjustment.get(kind, 0.0)))) for kind, value in evidence.items()}


def record_scores(evidence: Mapping[str, float], detection: Mapping) -> dict[str, float]:
    """The record classes' probabilities (``detection["record_labels"]``: none, continuous, discontinuous, both, poor
    quality) from adjusted ``evidence``."""
    cas, das, poor = evidence["continuous"], evidence["discontinuous"], evidence["poor_quality"]
    none, continuous, discontinuous, both, poor_quality = detection["record_labels"]
    good = 1 - poor
    return {none: good * (1 - cas) * (1 - das), continuous: good * cas * (1 - das),
            discontinuous: good * (1 - cas) * das, both: good * cas * das, poor_quality: poor}


def record_decision(probabilities: np.ndarray, id2label: Mapping[int, str], detection: Mapping,
                    frame_seconds: float) -> tuple[str, dict[str, float]]:
    """The record label and the record classes' probabilities of a recording's frame ``probabilities``
    ``(frames, num_labels)`` under ``detection``'s rule and decision (adjusted evidence, `record_scores`)."""
    evidence = adjust_evidence(record_evidence(probabilities, id2label, detection, frame_seconds),
                               detection.get("record_logit_adjustment"))
    scores = record_scores(evidence, detection)
    return max(scores, key=scores.get), scores


def real_output_frames(real_input_frames: int, frame_stride: int) -> int:
    """How many of the detector's output frames hold real audio: those that cover any of the ``real_input_frames``
    (the attention mask's ones) at ``frame_stride`` input frames each."""
    return -(-int(real_input_frames) // frame_stride)


def decode_events(probabilities: np.ndarray, id2label: Mapping[int, str], detection: Mapping, frame_seconds: float,
                  duration_seconds: float | None = None) -> list[dict]:
    """The adventitious events: runs of frames whose most probable class is the same event type (not normal, not
    poor quality), each ``{"label", "start", "end", "score"}`` in seconds, ``score`` its class's mean probability
    over the run. ``duration_seconds`` caps the last event's end at the recording's end. (Smoothing the frames,
    joining runs across short gaps or dropping short runs did not raise the event F1 on a validation fold:
    benchmarks/RESULTS.md.)"""
    top = probabilities.argmax(-1)
    background = set(class_indices(id2label, [detection["normal"], detection["poor_quality"]]))  # not events
    events, start = [], 0
    for frame in range(1, len(top) + 1):
        if frame < len(top) and top[frame] == top[start]:
            continue
        label = int(top[start])
        end = frame * frame_seconds if duration_seconds is None else min(frame * frame_seconds, duration_seconds)
        # Not a last frame that holds under half a millisecond of the recording (an event of 0 s once rounded).
        if label not in background and round(end, 3) > round(start * frame_seconds, 3):
            events.append({"label": id2label[label], "start": round(start * frame_seconds, 3), "end": round(end, 3),
                           "score": round(float(probabilities[start:frame, label].mean()), 4)})
        start = frame
    return events


def detect(probabilities: np.ndarray, id2label: Mapping[int, str], detection: Mapping, frame_seconds: float,
           duration_seconds: float | None = None) -> dict:
    """Events and record verdict of one recording: ``{"events": [...], "record_label": str, "record_scores":
    {class: probability}}`` (see the module's docstring)."""
    label, scores = record_decision(probabilities, id2label, detection, frame_seconds)
    return {"events": decode_events(probabilities, id2label, detection, frame_seconds, duration_seconds),
            "record_label": label,
            "record_scores": {label: round(float(p), 4) for label, p in scores.items()}}
