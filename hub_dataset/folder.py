"""A generic loader for new respiratory datasets (fine-tuning): labelled audio files or segments.

Two conventions:

* a metadata table next to the audio: ``metadata.csv``/``labels.csv`` (or ``.json``/``.jsonl``) with
  the columns ``file`` (or ``file_name``) and ``label``, optionally ``start`` and ``end`` (seconds,
  one row per labelled segment; without them the row is the whole file), ``patient_id`` and ``split``;
* the `datasets` audiofolder convention: one subfolder per label (``root/<label>/*.wav``), optionally
  inside split folders (``root/train/<label>/*.wav``, ``root/test/<label>/*.wav``).

Rows follow the event-level schema of the SPRSound loader: ``audio``, ``recording_id``,
``patient_id``, ``label`` (a `ClassLabel` of this dataset's classes), ``event_index``, ``start_s``,
``end_s``, ``audio_offset_s``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from datasets import ClassLabel, DatasetDict, DatasetInfo, Features, Value

from .audio import AUDIO_EXTENSIONS
from .builder import LoadingSummary, Recording, SPAN, Span, build_levels, check_on_missing
from .labels import NORMAL_LABEL

METADATA_FILES = ("metadata.csv", "labels.csv", "metadata.jsonl", "metadata.json", "labels.jsonl", "labels.json")
SPLIT_FOLDERS = ("train", "validation", "valid", "dev", "test")


def _read_table(path: Path) -> list[dict]:
    """Rows of a CSV, a JSON list of objects or JSON Lines file, each with its 1-based entry number."""
    try:
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                return [{key.strip(): value for key, value in row.items() if key is not None}
                        for row in csv.DictReader(handle)]
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: cannot be parsed ({err}).") from err
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path}: expected a list of objects with 'file' and 'label'.")
    return rows


def _seconds(value, path: Path, number: int, key: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}, entry {number}: {key}={value!r} is not a number of seconds.") from None
    if not seconds >= 0:
        raise ValueError(f"{path}, entry {number}: {key}={value!r} must be >= 0 seconds.")
    return seconds


def _entries_from_table(path: Path) -> list[dict]:
    entries = []
    for number, row in enumerate(_read_table(path), 1):
        file = row.get("file", row.get("file_name"))
        label = row.get("label")
        if not file or label is None or str(label).strip() == "":
            raise ValueError(f"{path}, entry {number}: needs 'file' (or 'file_name') and 'label', got {row}.")
        start, end = _seconds(row.get("start"), path, number, "start"), _seconds(row.get("end"), path, number, "end")
        if start is not None and end is not None and start >= end:
            raise ValueError(f"{path}, entry {number}: start {start} s is not before end {end} s.")
        entries.append({"file": path.parent / str(file), "label": str(label).strip(), "start": start or 0.0,
                        "end": end, "patient_id": row.get("patient_id") or None, "split": row.get("split") or "train",
                        "where": f"{path}, entry {number}"})
    return entries


def _entries_from_folders(root: Path) -> list[dict]:
    split_dirs = [path for path in sorted(root.iterdir()) if path.is_dir()]
    if split_dirs and all(path.name in SPLIT_FOLDERS for path in split_dirs):
        by_split = [(path.name, path) for path in split_dirs]
    else:
        by_split = [("train", root)]
    entries = []
    for split, split_dir in by_split:
        for label_dir in sorted(path for path in split_dir.iterdir() if path.is_dir()):
            for file in sorted(label_dir.rglob("*")):
                if file.is_file() and not file.name.startswith("."):
                    entries.append({"file": file, "label": label_dir.name, "start": 0.0, "end": None,
                                    "patient_id": None, "split": split, "where": str(file)})
    if not entries:
        raise FileNotFoundError(f"{root}: no metadata file ({', '.join(METADATA_FILES)}) and no label subfolders "
                                "with audio; see `load_audio_folder` for the accepted layouts.")
    return entries


def load_audio_folder(
    root: str | Path,
    metadata_file: str | Path | None = None,
    label_names: list[str] | None = None,
    on_missing: str = "error",
    context_s: float = 0.0,
    decode: bool = True,
    num_proc: int | None = None,
    progress: bool | None = None,
) -> DatasetDict:
    """Load labelled audio files or segments as a `DatasetDict` (see the module docstring for layouts).

    Args:
        root: the dataset folder.
        metadata_file: the table of labels (default: the first of ``metadata.csv``, ``labels.csv``,
            ``metadata.jsonl``, ``metadata.json``, ``labels.jsonl``, ``labels.json`` in ``root``; none
            found means the one-subfolder-per-label convention).
        label_names: the classes in id order, e.g. an SPRSound task's labels to fine-tune with the
            same head; a label outside them is an error. Default: the labels found, sorted, with
            ``Normal`` first when present.
        on_missing: ``"error"`` or ``"skip"`` for a listed file that does not exist or is not audio.
        Other arguments as in `load_sprsound`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset root {root} does not exist or is not a folder.")
    check_on_missing(on_missing)
    if metadata_file is None:
        metadata_file = next((root / name for name in METADATA_FILES if (root / name).is_file()), None)
    elif not Path(metadata_file).is_file():
        raise FileNotFoundError(f"Metadata file {metadata_file} not found.")
    entries = _entries_from_table(Path(metadata_file)) if metadata_file else _entries_from_folders(root)

    summary = LoadingSummary(f"audio folder {root.name}", str(root))
    usable = []
    for entry in entries:
        file = entry["file"]
        problem = (None if file.suffix.lower() in AUDIO_EXTENSIONS and file.is_file() else
                   "file not found" if not file.exists() else f"not an audio file ({', '.join(AUDIO_EXTENSIONS)})")
        if problem and on_missing == "error":
            raise FileNotFoundError(f"{entry['where']}: {file}: {problem}. Pass on_missing='skip' to skip such files.")
        if problem:
            summary.skipped.append((str(file), problem))
        else:
            usable.append(entry)

    found = sorted({entry["label"] for entry in usable}, key=lambda label: (label != NORMAL_LABEL, label))
    label_names = list(label_names) if label_names is not None else found
    for entry in usable:
        if entry["label"] not in label_names:
            raise ValueError(f"{entry['where']}: unknown label {entry['label']!r}; expected one of {label_names}.")

    grouped: dict[tuple[str, Path], list[dict]] = defaultdict(list)
    for entry in usable:
        grouped[(entry["split"], entry["file"])].append(entry)
    recordings = []
    for (split, file), file_entries in grouped.items():
        spans = sorted((Span(entry["start"], entry["end"], entry["label"], {"label": entry["label"]})
                        for entry in file_entries), key=lambda span: span.start_s)
        recording_id = file.relative_to(root).with_suffix("").as_posix() if file.is_relative_to(root) else file.stem
        metadata = {"patient_id": file_entries[0]["patient_id"]}
        recordings.append(Recording(split, file, recording_id, metadata, {}, spans))

    features = Features({"recording_id": Value("string"), "patient_id": Value("string"),
                         "label": ClassLabel(names=label_names), "event_index": Value("int32"),
                         "start_s": Value("float64"), "end_s": Value("float64"), "audio_offset_s": Value("float64")})
    info = DatasetInfo(description=f"Labelled respiratory audio from {root.name}")
    return build_levels(recordings, {"segment": (SPAN, features)}, summary, info, context_s=context_s,
                        decode=decode, num_proc=num_proc, progress=progress)["segment"]
