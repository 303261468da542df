"""A generic loader for new respiratory datasets (fine-tuning): labelled audio files or segments.

Two conventions:

* a metadata table next to the audio: ``metadata.csv``/``labels.csv`` (or ``.json``/``.jsonl``) with
  the columns ``file`` (or ``file_name``) and ``label``, optionally ``start`` and ``end`` (seconds,
  one row per labelled segment; without them the row is the whole file), ``patient_id`` and ``split``;
* the `datasets` audiofolder convention: one subfolder per label (``root/<label>/*.wav``), optionally
  inside split folders (``root/train/<label>/*.wav``, ``root/test/<label>/*.wav``).

Files and folders whose name starts with ``.`` or ``__`` (``.ipynb_checkpoints``, ``__MACOSX``) are
ignored. A file listed twice must name the same ``patient_id`` and ``split`` both times.

Rows follow the event-level schema of the SPRSound loader: ``audio``, ``recording_id``,
``patient_id``, ``label`` (a `ClassLabel` of this dataset's classes), ``event_index``, ``start_s``,
``end_s``, ``audio_offset_s``.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

from datasets import ClassLabel, DatasetDict, DatasetInfo, Features, Value

from .audio import AUDIO_EXTENSIONS, UnreadableAudioError, is_hidden
from .builder import LoadingSummary, Recording, SPAN, Span, build_levels, check_on_missing
from .labels import NORMAL_LABEL

METADATA_FILES = ("metadata.csv", "labels.csv", "metadata.jsonl", "metadata.json", "labels.jsonl", "labels.json")
SPLIT_FOLDERS = ("train", "validation", "valid", "dev", "test")
_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")  # what `datasets` accepts as a split name


def _read_table(path: Path) -> list[dict]:
    """The entries of a CSV, a JSON list of objects or a JSON Lines file, as dicts."""
    # utf-8-sig: Excel's "CSV UTF-8" (and some editors) start the file with a byte-order mark, which
    # would otherwise become part of the first column's name.
    try:
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as handle:
                rows = [{key.strip(): value for key, value in row.items() if key is not None}
                        for row in csv.DictReader(handle)]
        else:
            text = path.read_text(encoding="utf-8-sig")
            if path.suffix == ".jsonl":
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                rows = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: cannot be parsed ({err}).") from err
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path}: expected a list of objects with 'file' and 'label'.")
    if not rows:
        raise ValueError(f"{path} has no entries: expected one row per labelled file or segment.")
    return rows


def _text(value) -> str | None:
    """A table value as stripped text; None when absent or blank."""
    text = "" if value is None else str(value).strip()
    return text or None


def _seconds(value, where: str, key: str) -> float | None:
    """A table's time value in seconds (None when absent or blank); ``where`` names the entry in errors."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {key}={value!r} is not a number of seconds.") from None
    if not seconds >= 0:
        raise ValueError(f"{where}: {key}={value!r} must be >= 0 seconds.")
    return seconds


def _entries_from_table(path: Path) -> list[dict]:
    entries = []
    for number, row in enumerate(_read_table(path), 1):
        where = f"{path}, entry {number}"
        file, label = _text(row.get("file", row.get("file_name"))), _text(row.get("label"))
        if file is None or label is None:
            raise ValueError(f"{where}: needs 'file' (or 'file_name') and 'label', got {row}.")
        start, end = _seconds(row.get("start"), where, "start"), _seconds(row.get("end"), where, "end")
        if start is not None and end is not None and start >= end:
            raise ValueError(f"{where}: start {start} s is not before end {end} s.")
        split = _text(row.get("split")) or "train"
        if not _SPLIT_NAME.match(split):
            raise ValueError(f"{where}: split {split!r} is not a valid split name (letters, digits and '_', "
                             "e.g. 'train', 'test', 'validation').")
        entries.append({"file": path.parent / file, "label": label, "start": start or 0.0, "end": end,
                        "patient_id": _text(row.get("patient_id")), "split": split, "where": where})
    return entries


def _check_consistent(entries: list[dict], key: str) -> None:
    """A file listed several times must give the same ``key`` (patient_id, split) every time."""
    first_of_file: dict[Path, dict] = {}
    for entry in entries:
        first = first_of_file.setdefault(entry["file"], entry)
        if first[key] != entry[key]:
            leak = " (the same audio on both sides leaks between splits)" if key == "split" else ""
            raise ValueError(f"{entry['file']} is listed with {key} {first[key]!r} ({first['where']}) and "
                             f"{entry[key]!r} ({entry['where']}){leak}; give each file one {key}.")


def _subfolders(folder: Path) -> list[Path]:
    return [path for path in sorted(folder.iterdir()) if path.is_dir() and not is_hidden(path.name)]


def _entries_from_folders(root: Path) -> list[dict]:
    split_dirs = _subfolders(root)
    named_splits = [path.name for path in split_dirs if path.name in SPLIT_FOLDERS]
    if named_splits and len(named_splits) < len(split_dirs):
        others = [path.name for path in split_dirs if path.name not in SPLIT_FOLDERS]
        raise ValueError(f"{root}: split folders {named_splits} next to other folders {others}; put every label "
                         f"folder inside a split folder ({', '.join(SPLIT_FOLDERS)}), or use no split folders.")
    by_split = [(path.name, path) for path in split_dirs] if named_splits else [("train", root)]
    entries = []
    for split, split_dir in by_split:
        for label_dir in _subfolders(split_dir):
            for file in sorted(label_dir.rglob("*")):
                hidden = any(is_hidden(part) for part in file.relative_to(label_dir).parts)
                if file.is_file() and not hidden:
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
        on_missing: ``"error"`` or ``"skip"`` for a listed file that does not exist, is not audio or
            cannot be decoded; skipped files are counted in the ``loading_summary`` and a warning names them.
        Other arguments as in `load_sprsound`.

    Raises:
        FileNotFoundError: no table and no label folders, or (``on_missing="error"``) a listed file is missing.
        ValueError: an entry that cannot be used (it names the table and the entry number), a file listed
            with two patient ids or in two splits, an empty table, or nothing left to load.
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
    for key in ("patient_id", "split"):
        _check_consistent(entries, key)
    # The classes come from every entry, so that skipping a file never drops a class and shifts the ids.
    found = sorted({entry["label"] for entry in entries}, key=lambda label: (label != NORMAL_LABEL, label))
    label_names = list(label_names) if label_names is not None else found
    for entry in entries:
        if entry["label"] not in label_names:
            raise ValueError(f"{entry['where']}: unknown label {entry['label']!r}; expected one of {label_names}.")

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

    grouped: dict[Path, list[dict]] = defaultdict(list)  # one split and patient per file, checked above
    for entry in usable:
        grouped[entry["file"]].append(entry)
    recordings = []
    for file, file_entries in grouped.items():
        spans = sorted((Span(entry["start"], entry["end"], entry["label"], {"label": entry["label"]}, entry["where"])
                        for entry in file_entries), key=lambda span: span.start_s)
        recording_id = file.relative_to(root).with_suffix("").as_posix() if file.is_relative_to(root) else file.stem
        metadata = {"patient_id": file_entries[0]["patient_id"]}
        recordings.append(Recording(file_entries[0]["split"], file, recording_id, metadata, {}, spans))

    features = Features({"recording_id": Value("string"), "patient_id": Value("string"),
                         "label": ClassLabel(names=label_names), "event_index": Value("int32"),
                         "start_s": Value("float64"), "end_s": Value("float64"), "audio_offset_s": Value("float64")})
    info = DatasetInfo(description=f"Labelled respiratory audio from {root.name}")
    try:
        return build_levels(recordings, {"segment": (SPAN, features)}, summary, info, context_s=context_s,
                            decode=decode, num_proc=num_proc, progress=progress,
                            skip_unreadable=on_missing == "skip")["segment"]
    except UnreadableAudioError as err:
        raise UnreadableAudioError(f"{err} Pass on_missing='skip' to skip such files.") from err
