"""The SPRSound label sets: the one place that defines each task's classes.

Training writes these into the model config as ``id2label``/``label2id``; the metric, the
dataset loader and the demo read them from here (or from a checkpoint's config). ``Normal`` is
always class 0, which is also the official Score's Normal class when it is given no class names.
"""

from __future__ import annotations

import re

EVENT_TYPES = ["Normal", "Rhonchi", "Wheeze", "Stridor", "Coarse Crackle", "Fine Crackle", "Wheeze+Crackle"]
RECORD_LABELS = ["Normal", "CAS", "DAS", "CAS & DAS", "Poor Quality"]

# What each class means, in plain words (the demo's explanation; a model card).
LABEL_DESCRIPTIONS = {
    "Normal": "normal breath sounds, no adventitious sound.",
    "Adventitious": "an abnormal sound: a wheeze, rhonchus or stridor (continuous) or crackles (discontinuous).",
    "Rhonchi": "low-pitched, snoring continuous sound, from secretions in the larger airways.",
    "Wheeze": "high-pitched, musical continuous sound from narrowed airways (e.g. asthma, bronchiolitis).",
    "Stridor": "loud, high-pitched continuous sound, mostly on breathing in, from a blocked upper airway (e.g. croup).",
    "Coarse Crackle": "low-pitched, longer popping or bubbling sounds (e.g. secretions, bronchitis).",
    "Fine Crackle": "short, high-pitched crackles, like hair rubbed between fingers (e.g. pneumonia).",
    "Wheeze+Crackle": "a wheeze and crackles in the same breath.",
    "CAS": "continuous adventitious sounds (wheeze, rhonchi or stridor) somewhere in the recording.",
    "DAS": "discontinuous adventitious sounds (crackles) somewhere in the recording.",
    "CAS & DAS": "both continuous and discontinuous adventitious sounds.",
    "Poor Quality": "too noisy or unclear to judge (e.g. friction, crying, talking).",
}

# Spellings seen in copies of the release, mapped to the canonical event type; and, for a new dataset's event labels
# (compared in any case, see `event_type_of_label`), the plurals and singulars that name one type only. An unqualified
# "Crackle(s)" is no alias: it could be a Coarse or a Fine Crackle.
EVENT_TYPE_ALIASES = {"Wheeze & Crackle": "Wheeze+Crackle", "Wheeze+crackle": "Wheeze+Crackle",
                      "Wheezes": "Wheeze", "Rhonchus": "Rhonchi", "Coarse Crackles": "Coarse Crackle",
                      "Fine Crackles": "Fine Crackle"}

CONTINUOUS_EVENTS = {"Rhonchi", "Wheeze", "Stridor", "Wheeze+Crackle"}  # CAS
DISCONTINUOUS_EVENTS = {"Coarse Crackle", "Fine Crackle", "Wheeze+Crackle"}  # DAS
# (any continuous, any discontinuous sound) -> the record class they make
_ADVENTITIOUS_KIND = {(False, False): "Normal", (True, False): "CAS", (False, True): "DAS", (True, True): "CAS & DAS"}
_KIND_OF_CLASS = {name: kind for kind, name in _ADVENTITIOUS_KIND.items()}

TASKS = {
    "11": {"level": "event", "column": "task11", "labels": ["Normal", "Adventitious"]},
    "12": {"level": "event", "column": "task12", "labels": list(EVENT_TYPES)},
    "21": {"level": "record", "column": "task21", "labels": ["Normal", "Adventitious", "Poor Quality"]},
    "22": {"level": "record", "column": "task22", "labels": list(RECORD_LABELS)},
}
NORMAL_LABEL = "Normal"
POOR_QUALITY_LABEL = "Poor Quality"

# Event detection in whole recordings (train.py --task events): what each moment of a recording holds. Its frame
# classes are the event types, and Poor Quality for every moment of a recording too poor to annotate; each row is a
# recording, labelled (for validation splits and the derived record Score) with its Task 2-2 class.
DETECTION_TASK = "events"
DETECTION_LABELS = [*EVENT_TYPES, POOR_QUALITY_LABEL]
DETECTION_SPEC = {"level": "record", "column": TASKS["22"]["column"], "labels": list(RECORD_LABELS)}


def normalize_task(task: str | int) -> str:
    """Accept ``11``, ``"1-1"``, ``"task11"`` … and return the canonical id ``"11"`` (or ``"events"``: detection)."""
    key = str(task).lower().replace("task", "").replace("-", "").replace("_", "").strip()
    if key == DETECTION_TASK:
        return key
    if key not in TASKS:
        raise ValueError(f"Unknown task {task!r}: expected one of 11, 12, 21, 22 (or 1-1, 1-2, 2-1, 2-2), or "
                         f"{DETECTION_TASK!r} (event detection in whole recordings).")
    return key


def task_spec(task: str | int) -> dict:
    """A task's level, label column and the classes of that column (:data:`TASKS`, or :data:`DETECTION_SPEC`)."""
    key = normalize_task(task)
    return DETECTION_SPEC if key == DETECTION_TASK else TASKS[key]


def task_labels(task: str | int) -> list[str]:
    return list(task_spec(task)["labels"])


def task_of_labels(label_names: list[str]) -> str | None:
    """The task whose official classes are exactly ``label_names`` (in class-id order), else None."""
    return next((task for task, spec in TASKS.items() if spec["labels"] == list(label_names)), None)


def id2label(task: str | int) -> dict[int, str]:
    return dict(enumerate(task_labels(task)))


def label2id(task: str | int) -> dict[str, int]:
    return {name: i for i, name in enumerate(task_labels(task))}


def _folded(name: str) -> str:
    """A label compared in any case and spacing ("wheeze + crackle" is "Wheeze+Crackle")."""
    return re.sub(r"\s*([+&])\s*", r"\1", " ".join(str(name).split())).casefold()


_EVENT_TYPE_OF_FOLDED = {_folded(name): name for name in EVENT_TYPES} | {
    _folded(alias): name for alias, name in EVENT_TYPE_ALIASES.items()}


def event_type_of_label(label: str) -> str | None:
    """The SPRSound event type (:data:`EVENT_TYPES`) a dataset's event label names: the type itself or one of
    :data:`EVENT_TYPE_ALIASES`, in any case and spacing (``"fine crackles"`` is ``Fine Crackle``); None when it names
    none of them (``"crackle"``: Coarse or Fine?)."""
    return _EVENT_TYPE_OF_FOLDED.get(_folded(label))


def unknown_event_label_message(label: str, where: str) -> str:
    """The one-line error for an event label that names no SPRSound event type, saying how to rename it."""
    word = _folded(label).removesuffix("s")
    candidates = [name for name in EVENT_TYPES if len(word) >= 4 and word in _folded(name)]
    if _folded(label) == _folded(POOR_QUALITY_LABEL):
        hint = "a recording too poor to annotate has no events: leave its rows out"
    elif len(candidates) > 1:
        hint = f"{label!r} could be any of {', '.join(candidates)}: rename each such row to the type it is"
    elif candidates:
        hint = f"if it is a {candidates[0]}, rename it so"
    else:
        hint = f"rename it to the SPRSound event type it is (a normal breath is {NORMAL_LABEL!r})"
    aliases = sorted(alias for alias in EVENT_TYPE_ALIASES if _folded(alias) not in map(_folded, EVENT_TYPES))
    return (f"{where}: label {label!r} is not an SPRSound event type, which --task events learns; accepted labels (any "
            f"case): {', '.join(EVENT_TYPES)} (or {', '.join(aliases)}); {hint}.")


def event_task_label(event_type: str, task: str | int) -> str:
    """Label of one event for task 1-1 (Normal/Adventitious) or 1-2 (its type)."""
    key = normalize_task(task)
    if key == "11":
        return NORMAL_LABEL if event_type == NORMAL_LABEL else "Adventitious"
    if key == "12":
        return event_type
    raise ValueError(f"Task {key} is a record-level task, not an event-level one.")


def record_task_label(record_label: str, task: str | int) -> str:
    """Label of one recording for task 2-1 (Normal/Adventitious/Poor Quality) or 2-2 (its class)."""
    key = normalize_task(task)
    if key == "21":
        return record_label if record_label in (NORMAL_LABEL, "Poor Quality") else "Adventitious"
    if key == "22":
        return record_label
    raise ValueError(f"Task {key} is an event-level task, not a record-level one.")


def record_label_from_events(event_types: list[str]) -> str:
    """The record class implied by its events (exact on every 2022 split); no events → Poor Quality."""
    if not event_types:
        return POOR_QUALITY_LABEL
    return _ADVENTITIOUS_KIND[
        (any(t in CONTINUOUS_EVENTS for t in event_types), any(t in DISCONTINUOUS_EVENTS for t in event_types))
    ]


# ICBHI 2017 (a new dataset for fine-tuning): respiratory-cycle classes from the crackle/wheeze flags,
# and the patient diagnoses of `patient_diagnosis.csv` (Healthy first, as Normal is for SPRSound).
ICBHI_CYCLE_LABELS = ["Normal", "Crackle", "Wheeze", "Both"]
ICBHI_DIAGNOSES = ["Healthy", "URTI", "Asthma", "COPD", "LRTI", "Bronchiectasis", "Pneumonia", "Bronchiolitis"]


def icbhi_cycle_label(crackles: bool, wheezes: bool) -> str:
    """The cycle class of ICBHI's two flags."""
    return ICBHI_CYCLE_LABELS[int(crackles) + 2 * int(wheezes)]


# Frame-level targets for the record tasks, derived from event timestamps: what kind of sound a
# frame belongs to. Frames outside any annotated event are left unlabelled (ignored in the loss).
FRAME_LABELS = ["Normal", "CAS", "DAS", "CAS & DAS"]


def detection_rule() -> dict:
    """How the event detector's frame classes make a record class (Task 2-2), as the detector's config keeps it
    (``RespSTFConfig.detection``; the model's code cannot import this package): which classes are continuous
    (CAS) and discontinuous (DAS) sounds, which are normal and poor quality, and the record classes in the order
    none, continuous, discontinuous, both, poor quality."""
    return {
        "continuous": [t for t in EVENT_TYPES if t in CONTINUOUS_EVENTS],
        "discontinuous": [t for t in EVENT_TYPES if t in DISCONTINUOUS_EVENTS],
        "normal": NORMAL_LABEL,
        "poor_quality": POOR_QUALITY_LABEL,
        "record_labels": [_ADVENTITIOUS_KIND[kind] for kind in ((False, False), (True, False), (False, True), (True, True))]
        + [POOR_QUALITY_LABEL],
    }


def frame_label(event_type: str) -> int:
    """Index into :data:`FRAME_LABELS` of a frame inside an event of ``event_type``."""
    return FRAME_LABELS.index(_ADVENTITIOUS_KIND[(event_type in CONTINUOUS_EVENTS, event_type in DISCONTINUOUS_EVENTS)])


def record_label_from_frame_labels(frame_classes) -> str:
    """The record class of a stretch of audio whose labelled frames have these :data:`FRAME_LABELS`
    classes (at least one): the same rule as :func:`record_label_from_events`, on frames."""
    kinds = [_KIND_OF_CLASS[FRAME_LABELS[int(c)]] for c in frame_classes]  # (continuous, discontinuous) per class
    if not kinds:
        raise ValueError("record_label_from_frame_labels needs at least one labelled frame.")
    return _ADVENTITIOUS_KIND[(any(cas for cas, _ in kinds), any(das for _, das in kinds))]
