"""SPRSound: the one place that knows the release layouts, the JSON annotations and the file-name scheme.

Accepted layouts under ``root`` (each split is present only when its folders exist):

* 2022 release: ``train_wav/`` + ``train_json/``; ``test_wav/`` + ``test_json/inter_test_json/`` and
  ``test_json/intra_test_json/``.
* newer official layout: ``BioCAS2022/train2022_wav/`` + ``train2022_json/``, ``BioCAS2022/test2022_wav/``
  + ``test2022_json/{inter,intra}_test_json/``, ``BioCAS2023/test2023_wav/`` + ``test2023_json/``
  (``root`` may also be the ``BioCAS2022``/``BioCAS2023`` folder itself).
* a flat folder of audio + JSON pairs (loaded as the ``train`` split).

Audio is matched to its JSON by file stem, with any audio extension (.wav in the release, .flac in the
shared copy). File names: ``patient_age_gender_location_recording``, e.g. ``40069321_15.3_0_p1_981``.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from datasets import ClassLabel, DatasetDict, DatasetInfo, Features, List, Value

from .audio import AUDIO_EXTENSIONS, is_hidden
from .builder import SKIP_HINT, DataQualityWarning, LoadingSummary, RECORD, Recording, SPAN, Span, build_levels, check_on_missing
from .labels import (
    EVENT_TYPES,
    RECORD_LABELS,
    TASKS,
    event_task_label,
    event_type_of_label,
    normalize_task,
    record_label_from_events,
    record_task_label,
    task_spec,
)

SPLITS = ("train", "inter_test", "intra_test", "test2023")
LEVELS = ("record", "event")
# SPRSound's shortest annotated event is 126 ms: one under 10 ms is no sound, but times written in seconds.
MIN_PLAUSIBLE_EVENT_S = 0.01

# (split, JSON folder, audio folder), searched under the root and under its BioCAS2022/BioCAS2023 folders.
_SPLIT_FOLDERS = [
    ("train", "train_json", "train_wav"),
    ("inter_test", "test_json/inter_test_json", "test_wav"),
    ("intra_test", "test_json/intra_test_json", "test_wav"),
    ("train", "train2022_json", "train2022_wav"),
    ("inter_test", "test2022_json/inter_test_json", "test2022_wav"),
    ("intra_test", "test2022_json/intra_test_json", "test2022_wav"),
    ("test2023", "test2023_json", "test2023_wav"),
]
_RELEASE_FOLDERS = (".", "BioCAS2022", "BioCAS2023")

LOCATIONS = {"p1": "left posterior", "p2": "left lateral", "p3": "right posterior", "p4": "right lateral"}
GENDERS = {"0": "male", "1": "female"}
FILE_NAME_SCHEME = "patient_age_gender_location_recording"
_FILE_NAME = re.compile(
    r"^(?P<patient>\d+)_(?P<age>\d+(?:\.\d+)?)_(?P<gender>[01])_(?P<location>p[1-4])_(?P<number>\d+)$")
_RECORD_KEYS = ("record_annotation", "recording_annotation")  # the shared copy / the release README
# Each 2022 train patient's cross-validation fold, fixed once (see the file's description) and shipped with the code.
FOLDS_FILE = Path(__file__).with_name("sprsound_folds.json")

CITATION = """@article{zhang2022sprsound,
  title={{SPRSound}: Open-Source {SJTU} Paediatric Respiratory Sound Database},
  author={Zhang, Qing and others},
  journal={IEEE Transactions on Biomedical Circuits and Systems},
  volume={16},
  number={5},
  year={2022}
}
@inproceedings{zhang2022grand,
  title={Grand Challenge on Respiratory Sound Classification},
  author={Zhang, Qing and others},
  booktitle={IEEE Biomedical Circuits and Systems Conference (BioCAS)},
  year={2022}
}"""
DESCRIPTION = ("SPRSound: SJTU Paediatric Respiratory Sound Database (BioCAS 2022 release), 8 kHz stethoscope "
               "recordings of children with event- and record-level annotations.")
HOMEPAGE = "https://github.com/SJTU-YONGFU-RESEARCH-GRP/SPRSound"
LICENSE = "gpl-3.0"

_METADATA_FEATURES = {
    "recording_id": Value("string"),
    "patient_id": Value("string"),  # a string: ids keep their leading zeros and vary in length
    "age": Value("float64"),  # years
    "gender": Value("string"),
    "location": Value("string"),  # p1..p4
    "location_name": Value("string"),
}
_EVENT_LIST = List({"start_s": Value("float64"), "end_s": Value("float64"), "type": Value("string")})


def record_features() -> Features:
    """Record level (without the `audio` column, which the builder adds)."""
    return Features({
        **_METADATA_FEATURES,
        "record_label": ClassLabel(names=RECORD_LABELS),
        "task21": ClassLabel(names=TASKS["21"]["labels"]),
        "task22": ClassLabel(names=TASKS["22"]["labels"]),
        "duration_s": Value("float64"),
        "events": _EVENT_LIST,
    })


def event_features() -> Features:
    """Event level (without the `audio` column)."""
    return Features({
        **_METADATA_FEATURES,
        "task11": ClassLabel(names=TASKS["11"]["labels"]),
        "task12": ClassLabel(names=TASKS["12"]["labels"]),
        "event_index": Value("int32"),  # position among the recording's events, sorted by start
        "start_s": Value("float64"),  # the event in its recording (end clipped to the recording)
        "end_s": Value("float64"),
        "audio_offset_s": Value("float64"),  # where the row's audio starts: start_s minus the context padding
    })


def sprsound_folds() -> dict[str, int]:
    """``{patient_id: fold}`` of the 5 cross-validation folds of the SPRSound 2022 train patients: whole patients, about a
    fifth of each record class per fold, the same folds for all four tasks (``hub_dataset/sprsound_folds.json``)."""
    return json.loads(FOLDS_FILE.read_text())["folds"]


def parse_file_name(stem: str) -> dict | None:
    """Metadata from ``patient_age_gender_location_recording``; None when the name does not follow it."""
    match = _FILE_NAME.match(stem)
    if match is None:
        return None
    return {
        "patient_id": match["patient"],
        "age": float(match["age"]),
        "gender": GENDERS[match["gender"]],
        "location": match["location"],
        "location_name": LOCATIONS[match["location"]],
    }


def _milliseconds(value, json_path: Path, index: int, key: str) -> float:
    # Strings ("342") in the shared copy, integers in other copies.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{json_path}: event {index} has {key}={value!r}; "
                         "expected milliseconds as a number or string.")
    try:
        milliseconds = float(value)
    except ValueError:
        raise ValueError(f"{json_path}: event {index} has {key}={value!r}; "
                         "expected milliseconds, e.g. \"342\".") from None
    if not milliseconds >= 0:
        raise ValueError(f"{json_path}: event {index} has {key}={value!r}; expected milliseconds >= 0.")
    return milliseconds


def parse_annotation(json_path: Path) -> tuple[str, list[dict]]:
    """The record label and the events (sorted by start, times in seconds) of one annotation file."""
    record_label, events = _read_annotation(json_path)
    return record_label, sorted(events, key=_by_time)


def example_key(path: Path) -> tuple[str, int]:
    """How a copy of an example recording is recognised (a demo's upload: gradio keeps the file name and the bytes)."""
    return path.stem, path.stat().st_size


def example_recordings(folder: Path | None, limit: int) -> tuple[list[Path], list[str], dict[tuple[str, int], list[dict]]]:
    """Up to ``limit`` recordings of a folder such as the release's ``example_original_wav``, one record class after
    another when annotated (a JSON annotation beside the audio).

    Returns the files, their labels to show (``"CAS (annotated): name.wav"``), and the annotated events of every
    annotated recording of the folder, by `example_key`.
    """
    if folder is None or not Path(folder).is_dir():
        return [], [], {}
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
    by_label: dict[str, list[Path]] = {}
    annotations: dict[tuple[str, int], list[dict]] = {}
    record_labels: dict[Path, str] = {}
    for path in files:
        annotation = path.with_suffix(".json")
        label = "not annotated"
        if annotation.is_file():
            try:
                label, annotations[example_key(path)] = parse_annotation(annotation)
            except ValueError:
                pass  # an unreadable annotation only costs the example its label
        record_labels[path] = label
        by_label.setdefault(label, []).append(path)
    chosen: list[Path] = []
    while len(chosen) < min(limit, len(files)):
        for group in by_label.values():
            if group and len(chosen) < limit:
                chosen.append(group.pop(0))
    labels = [f"{record_labels[p]} (annotated): {p.name}" if example_key(p) in annotations else p.name for p in chosen]
    return chosen, labels, annotations


def _by_time(event: dict) -> tuple[float, float]:
    return event["start_s"], event["end_s"]  # 851 train files list their events unsorted


def _read_annotation(json_path: Path) -> tuple[str, list[dict]]:
    """The record label and the events of one annotation file, in the file's order (times in seconds)."""
    try:
        # utf-8-sig: a byte-order mark (editors on Windows add one) is not part of the JSON.
        annotation = json.loads(Path(json_path).read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{json_path}: not valid JSON ({err}).") from err
    if not isinstance(annotation, dict):
        raise ValueError(f"{json_path}: expected a JSON object with 'record_annotation' and 'event_annotation'.")
    record_key = next((key for key in _RECORD_KEYS if key in annotation), None)
    if record_key is None:
        raise ValueError(f"{json_path}: missing the record label (key 'record_annotation' or 'recording_annotation').")
    record_label = annotation[record_key]
    if record_label not in RECORD_LABELS:
        raise ValueError(f"{json_path}: unknown record label {record_label!r}; expected one of {RECORD_LABELS}.")
    raw_events = annotation.get("event_annotation")
    if not isinstance(raw_events, list):
        raise ValueError(f"{json_path}: 'event_annotation' must be a list of events (empty for Poor Quality).")
    events = []
    for index, event in enumerate(raw_events):
        if not isinstance(event, dict) or not {"start", "end", "type"} <= event.keys():
            raise ValueError(f"{json_path}: event {index} must have 'start', 'end' and 'type', got {event!r}.")
        event_type = event_type_of_label(str(event["type"]))
        if event_type is None:
            raise ValueError(f"{json_path}: event {index} has unknown type {event['type']!r}; "
                             f"expected one of {EVENT_TYPES}.")
        start = _milliseconds(event["start"], json_path, index, "start")
        end = _milliseconds(event["end"], json_path, index, "end")
        if start >= end:
            raise ValueError(f"{json_path}: event {index} starts at {event['start']} ms, not before its end "
                             f"({event['end']} ms).")
        events.append({"start_s": start / 1000, "end_s": end / 1000, "type": event_type})
    return record_label, events


def find_splits(root: str | Path) -> dict[str, list[tuple[Path, Path]]]:
    """The splits under ``root``: split -> [(JSON folder, audio folder)]. A split folder without annotation files
    (a release's held-back intra-patient test, say) is left out. Raises when there are none."""
    return _split_folders(root)[0]


def _split_folders(root: str | Path) -> tuple[dict[str, list[tuple[Path, Path]]], list[str]]:
    """`find_splits`, and the split folders it left out for holding no annotation files (for the loader to name)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"SPRSound root {root} does not exist or is not a folder.")
    splits: dict[str, list[tuple[Path, Path]]] = {}
    empty = []
    for base in _RELEASE_FOLDERS:
        for split, json_folder, audio_folder in _SPLIT_FOLDERS:
            if (root / base / json_folder).is_dir():
                if _annotation_files(root / base / json_folder):
                    splits.setdefault(split, []).append((root / base / json_folder, root / base / audio_folder))
                else:
                    empty.append(f"{root / base / json_folder} ({split})")
    if splits:
        return splits, empty
    # A flat folder: at least one JSON with its audio beside it (a lone classes.json or a saved dataset's
    # dataset_info.json does not make a release).
    audio_stems = {path.stem for path in root.iterdir() if path.suffix.lower() in AUDIO_EXTENSIONS}
    if any(path.stem in audio_stems for path in _annotation_files(root)):
        return {"train": [(root, root)]}, empty
    raise FileNotFoundError(
        f"{root} holds no SPRSound annotations. Expected train_json/ + train_wav/ (2022 release), "
        "BioCAS2022/train2022_json/ … or BioCAS2023/test2023_json/ (newer layout), or a flat folder of "
        "audio + JSON pairs." + (f" Found, but without annotation files: {', '.join(empty)}." if empty else "")
    )


def _annotation_files(json_dir: Path) -> list[Path]:
    return sorted(path for path in json_dir.glob("*.json") if not is_hidden(path.name))  # e.g. macOS ._x.json


def _index_audio(audio_dir: Path, summary: LoadingSummary) -> dict[str, Path]:
    audio: dict[str, Path] = {}
    for path in sorted(audio_dir.iterdir()) if audio_dir.is_dir() else []:
        if not path.is_file() or is_hidden(path.name) or path.suffix.lower() == ".json":
            continue
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            summary.skipped.append((str(path), "not an audio or JSON file"))
        elif path.stem in audio:
            raise ValueError(f"Two audio files for recording {path.stem}: {audio[path.stem]} and {path}; keep one.")
        else:
            audio[path.stem] = path
    return audio


def _pair_files(folders: dict[str, list[tuple[Path, Path]]], splits: list[str], on_missing: str,
                summary: LoadingSummary) -> list[tuple[str, Path, Path]]:
    """(split, JSON, audio) of the wanted splits, matched by stem; unmatched files raise or are skipped."""
    json_dirs_of: dict[Path, list[tuple[str, Path]]] = {}  # test_wav/ serves both inter and intra test JSONs
    for split, pairs in folders.items():
        for json_dir, audio_dir in pairs:
            json_dirs_of.setdefault(audio_dir, []).append((split, json_dir))
    pairs, missing = [], []
    first_of: dict[str, tuple[str, Path]] = {}  # recording -> (split, JSON) where it was first found
    for audio_dir, json_dirs in json_dirs_of.items():
        if not any(split in splits for split, _ in json_dirs):
            continue
        audio = _index_audio(audio_dir, summary)
        annotated = set()
        for split, json_dir in json_dirs:
            for json_path in _annotation_files(json_dir):
                annotated.add(json_path.stem)
                if split not in splits:
                    continue
                if json_path.stem in first_of:
                    # Twice in one split weighs it double; in two splits it is tested on after training on it.
                    first_split, first_path = first_of[json_path.stem]
                    raise ValueError(f"Recording {json_path.stem} is annotated twice: {first_path} ({first_split}) and "
                                     f"{json_path} ({split}); keep one (two release layouts under one root?).")
                first_of[json_path.stem] = (split, json_path)
                if json_path.stem in audio:
                    pairs.append((split, json_path, audio[json_path.stem]))
                else:
                    missing.append((json_path, "JSON without audio"))
        missing += [(path, "audio without JSON") for stem, path in audio.items() if stem not in annotated]
    if missing and on_missing == "error":
        listed = "; ".join(f"{path} ({reason})" for path, reason in missing[:5])
        files = "1 SPRSound file has" if len(missing) == 1 else f"{len(missing)} SPRSound files have"
        raise FileNotFoundError(f"{files} no partner (audio <-> JSON, matched by stem): "
                                f"{listed}. {SKIP_HINT}")
    summary.skipped += [(str(path), reason) for path, reason in missing]
    return sorted(pairs, key=lambda pair: splits.index(pair[0]))  # stable: file order within a split


def _recording(split: str, json_path: Path, audio_path: Path, summary: LoadingSummary) -> Recording:
    record_label, events = _read_annotation(json_path)
    metadata = parse_file_name(json_path.stem)
    if metadata is None:
        summary.unparsed_file_names.append(json_path.name)
        metadata = dict.fromkeys(("patient_id", "age", "gender", "location", "location_name"))
    summary.implausible_events += [f"{json_path}, event {index} ({(event['end_s'] - event['start_s']) * 1000:.1f} ms)"
                                   for index, event in enumerate(events)
                                   if event["end_s"] - event["start_s"] < MIN_PLAUSIBLE_EVENT_S]
    implied = record_label_from_events([event["type"] for event in events])  # exact on every 2022 split
    if implied != record_label:
        summary.inconsistent_record_labels.append((str(json_path), record_label, implied))
    spans = [Span(event["start_s"], event["end_s"], event["type"],
                  {"task11": event_task_label(event["type"], "11"), "task12": event["type"]},
                  f"{json_path}, event {index}")  # errors name the event's position in the file
             for index, event in sorted(enumerate(events), key=lambda item: _by_time(item[1]))]
    labels = {"record_label": record_label, "task21": record_task_label(record_label, "21"),
              "task22": record_task_label(record_label, "22")}
    return Recording(split, audio_path, json_path.stem, metadata, labels, spans)


def load_sprsound_levels(
    root: str | Path,
    levels: tuple[str, ...] = LEVELS,
    splits: list[str] | None = None,
    on_missing: str = "error",
    context_s: float = 0.0,
    decode: bool = True,
    num_proc: int | None = None,
    progress: bool | None = None,
) -> dict[str, DatasetDict]:
    """Load several levels in one pass over the audio: level -> `DatasetDict` (see `load_sprsound`)."""
    unknown = [level for level in levels if level not in LEVELS]
    if unknown or not levels:
        raise ValueError(f"Unknown level(s) {unknown}: expected 'record' and/or 'event'.")
    check_on_missing(on_missing)
    folders, empty = _split_folders(root)
    if empty:  # said here, where the split is left out, not by every caller of find_splits that only detects a release
        warnings.warn(f"No annotation files in {', '.join(empty)}: that split is left out.", DataQualityWarning,
                      stacklevel=2)
    if isinstance(splits, str):
        splits = [splits]
    absent = [split for split in splits or () if split not in folders]
    if absent:
        raise ValueError(f"Split(s) {absent} not found under {root}; it has {list(folders)}.")
    splits = [split for split in folders if splits is None or split in splits]
    summary = LoadingSummary("SPRSound", str(root))
    recordings = [_recording(split, json_path, audio_path, summary)
                  for split, json_path, audio_path in _pair_files(folders, splits, on_missing, summary)]
    features = {"record": (RECORD, record_features()), "event": (SPAN, event_features())}
    info = DatasetInfo(description=DESCRIPTION, citation=CITATION, homepage=HOMEPAGE, license=LICENSE)
    return build_levels(recordings, {level: features[level] for level in levels}, summary, info,
                        context_s=context_s, decode=decode, num_proc=num_proc, progress=progress,
                        skip_unreadable=on_missing == "skip")


def load_sprsound(
    root: str | Path,
    level: str | None = None,
    task: str | int | None = None,
    splits: str | list[str] | None = None,
    on_missing: str = "error",
    context_s: float = 0.0,
    decode: bool = True,
    num_proc: int | None = None,
    progress: bool | None = None,
) -> DatasetDict:
    """Load an SPRSound release folder as a `DatasetDict` with one split per official split found.

    Args:
        root: the release folder (any layout in this module's docstring).
        level: ``"record"`` (one row per recording) or ``"event"`` (one row per annotated event, the
            audio cut to it); default: the task's level, else ``"event"``.
        task: ``11``/``12`` (event level) or ``21``/``22`` (record level); keeps only that task's label
            column (``task11`` …) next to the metadata. None keeps every label column of the level.
        splits: one or several of ``train``, ``inter_test``, ``intra_test``, ``test2023`` (default: all
            present).
        on_missing: ``"error"`` (default) or ``"skip"`` for a JSON without audio, audio without JSON, or
            audio that cannot be decoded (corrupt, truncated, not audio).
        context_s: event level: seconds of audio kept before and after each event.
        decode: False gives undecoded ``{"bytes", "path"}`` audio (decode with `read_audio`), which
            needs no FFmpeg.
        num_proc: processes reading and cutting the audio.
        progress: show a progress bar (default: the `datasets` setting).

    The result's ``loading_summary`` attribute (also logged) gives rows per split and label, skipped
    files and why, clipped events, unparsed file names and record labels that contradict their events
    (a warning names them; the labels are kept as annotated).
    """
    task_key = normalize_task(task) if task is not None else None
    if level is None:
        level = task_spec(task_key)["level"] if task_key else "event"
    if task_key and task_spec(task_key)["level"] != level:
        raise ValueError(f"Task {task_key} is a {task_spec(task_key)['level']}-level task, but level={level!r}.")
    datasets = load_sprsound_levels(root, (level,), splits, on_missing, context_s, decode, num_proc, progress)[level]
    if task_key:  # keep the task's label column only
        summary = datasets.loading_summary
        columns = next(iter(datasets.values())).column_names
        datasets = datasets.remove_columns([name for name in ("record_label", "task11", "task12", "task21", "task22")
                                            if name in columns and name != task_spec(task_key)["column"]])
        datasets.loading_summary = summary
    return datasets
