"""A generic loader for new respiratory datasets (fine-tuning): labelled audio files or segments.

Two conventions:

* a metadata table next to the audio: ``metadata.csv``/``labels.csv`` (or ``.json``/``.jsonl``) with
  the columns ``file`` (or ``file_name``) and ``label``, optionally ``start`` and ``end`` (seconds,
  one row per labelled segment; without them the row is the whole file), ``patient_id`` and ``split``;
* the `datasets` audiofolder convention: one subfolder per label (``root/<label>/*.wav``), optionally
  inside split folders (``root/train/<label>/*.wav``, ``root/test/<label>/*.wav``).

Files and folders whose name starts with ``.`` or ``__`` (``.ipynb_checkpoints``, ``__MACOSX``) are
ignored. A file listed twice must name the same ``patient_id`` and ``split`` both times. A table column
that looks like one of these names the table lacks (``strat``, ``patientid``, ``start_time``) is an
error, other columns are named in a warning and not read; a CSV row with more or fewer values than its
header, a missing-value marker as a label (``NaN``, ``NA``), or two labels that differ only in case are
errors. In the folder convention, audio files outside a label folder are an error. Split names (folders
or the ``split`` column) are taken in lower case, and ``valid``, ``val`` and ``dev`` name the
``validation`` split (which train.py then selects on).

Rows follow the event-level schema of the SPRSound loader: ``audio``, ``recording_id``,
``patient_id``, ``label`` (a `ClassLabel` of this dataset's classes), ``event_index``, ``start_s``,
``end_s``, ``audio_offset_s``.

`load_event_folder` reads a table whose rows are annotated events (``start``/``end`` on every row, labels naming
SPRSound event types) as an event detector's training data (``train.py --task events``): one row per recording, as
the SPRSound loader's record level gives them.
"""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from collections import defaultdict
from pathlib import Path

from datasets import ClassLabel, DatasetDict, DatasetInfo, Features, Value

from .audio import AUDIO_EXTENSIONS, is_hidden
from .builder import (
    EVENT_LIST,
    RECORD,
    SKIP_HINT,
    SPAN,
    DataQualityWarning,
    LoadingSummary,
    Recording,
    Span,
    build_levels,
    check_on_missing,
)
from .labels import (
    DETECTION_SPEC,
    NORMAL_LABEL,
    RECORD_LABELS,
    event_type_of_label,
    record_label_from_events,
    unknown_event_label_message,
)

METADATA_FILES = ("metadata.csv", "labels.csv", "metadata.jsonl", "metadata.json", "labels.jsonl", "labels.json")
TABLE_COLUMNS = ("file", "file_name", "label", "start", "end", "patient_id", "split")
# Other names tables give these columns (compared in lower case, other characters as "_"): read as absent, they
# would silently change what the rows mean, so they are refused with the name to use.
COLUMN_VARIANTS = {
    "file": ("filename", "file_path", "filepath", "path", "audio", "audio_file", "audio_path", "wav", "recording"),
    "label": ("labels", "class", "class_name", "category"),
    "start": ("start_time", "start_s", "start_sec", "start_ms", "starttime", "onset", "begin", "t_start"),
    "end": ("end_time", "end_s", "end_sec", "end_ms", "endtime", "offset", "stop", "t_end"),
    "patient_id": ("patient", "subject", "subject_id", "participant", "participant_id", "pid"),
    "split": ("subset", "partition"),
}
SPLIT_FOLDERS = ("train", "validation", "valid", "val", "dev", "test")
# Other names of the validation split: it is the one train.py selects on (instead of carving one from train).
VALIDATION_ALIASES = ("valid", "val", "dev")
# How pandas, R and spreadsheets write a missing value: never a class name.
MISSING_VALUE_MARKERS = ("nan", "-nan", "na", "n/a", "#n/a", "#na", "null", "<na>")
_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")  # what `datasets` accepts as a split name


def _read_table(path: Path) -> list[dict]:
    """The entries of a CSV, a JSON list of objects or a JSON Lines file, as dicts."""
    # utf-8-sig: Excel's "CSV UTF-8" (and some editors) start the file with a byte-order mark, which
    # would otherwise become part of the first column's name.
    try:
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as handle:
                reader, rows = csv.DictReader(handle), []
                _check_header(path, reader.fieldnames or [])
                for number, row in enumerate(reader, 1):
                    # DictReader files surplus values under the key None and gives missing ones the value None;
                    # empty surplus values are a trailing comma.
                    surplus = [value for value in row.pop(None, []) if value.strip()]
                    short = sum(value is None for value in row.values())
                    if surplus or short:
                        hint = "; quote a value that holds a comma (\"Crackle, fine\")" if surplus else ""
                        raise ValueError(f"{path}, entry {number}: {len(row) - short + len(surplus)} values where the "
                                         f"header has {len(row)} columns{hint}.")
                    rows.append({key.strip(): value for key, value in row.items()})
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


def _split_name(name: str) -> str:
    """A split as `datasets` and train.py name it: lower case, ``validation`` for valid/val/dev."""
    name = name.lower()
    return "validation" if name in VALIDATION_ALIASES else name


def _check_header(path: Path, header: list[str]) -> None:
    """A CSV header must be comma-separated with each column once."""
    if len(header) == 1 and any(separator in header[0] for separator in ";\t"):
        separator = "';'" if ";" in header[0] else "a tab"
        raise ValueError(f"{path}: the header {header[0]!r} is one column: this table separates its columns with "
                         f"{separator}; save it with commas (CSV).")
    names = [name.strip() for name in header]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{path}: column(s) {repeated} appear more than once in the header; keep one of each.")


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
    if not 0 <= seconds < math.inf:
        raise ValueError(f"{where}: {key}={value!r} must be a finite number of seconds >= 0.")
    return seconds


def _one_edit_apart(a: str, b: str) -> bool:
    """Whether ``a`` becomes ``b`` by one insertion, deletion, substitution or swap of neighbours (a typo)."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return a == b
    prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    a, b = a[prefix:], b[prefix:]
    return a[1:] == b[1:] or a[1:] == b or a == b[1:] or (a[:2] == b[1::-1] and a[2:] == b[2:])


def _meant_column(column: str, absent: list[str]) -> str | None:
    """The absent column of TABLE_COLUMNS that ``column`` is a typo (``strat``, ``Label``, ``patientid``) or a
    usual other name (``start_time``, ``onset``, ``subject_id``, ``filename``) of, if any."""
    name = re.sub(r"[^0-9a-z]+", "_", column.lower()).strip("_")
    return next((meant for meant in absent
                 if _one_edit_apart(name, meant) or name in COLUMN_VARIANTS.get(meant, ())), None)


def _check_columns(path: Path, rows: list[dict]) -> None:
    """Refuse a column that looks like a variant of one of TABLE_COLUMNS the table lacks (read as absent, it would
    silently change what rows mean: ``strat`` or ``start_time`` makes every row the whole file); name the other
    columns, which are not read."""
    present = {key for row in rows for key in row}
    unknown = sorted(present - set(TABLE_COLUMNS))
    spellings = {"file": {"file", "file_name"}, "file_name": {"file", "file_name"}}  # one column, two names
    absent = [name for name in TABLE_COLUMNS if not spellings.get(name, {name}) & present]
    for column in unknown:
        meant = _meant_column(column, absent)
        if meant:
            raise ValueError(f"{path}: column {column!r} is not one this loader reads; did you mean {meant!r}? "
                             f"Columns read: {', '.join(TABLE_COLUMNS)}.")
    if unknown:
        warnings.warn(f"{path}: columns {unknown} are not read (this loader reads {', '.join(TABLE_COLUMNS)}).",
                      DataQualityWarning, stacklevel=4)


def _label(value, where: str) -> str | None:
    """A table's label as stripped text (None when absent or blank); a missing-value marker is an error."""
    if isinstance(value, float) and not math.isfinite(value) or (_text(value) or "").lower() in MISSING_VALUE_MARKERS:
        raise ValueError(f"{where}: label {value!r} marks a missing value, not a class; give every entry a label "
                         "(or leave the entry out).")
    return _text(value)


def _entries_from_table(path: Path) -> list[dict]:
    entries = []
    rows = _read_table(path)
    _check_columns(path, rows)
    for number, row in enumerate(rows, 1):
        where = f"{path}, entry {number}"
        file, label = _text(row.get("file", row.get("file_name"))), _label(row.get("label"), where)
        if file is None or label is None:
            raise ValueError(f"{where}: needs 'file' (or 'file_name') and 'label', got {row}.")
        start, end = _seconds(row.get("start"), where, "start"), _seconds(row.get("end"), where, "end")
        if start is not None and end is not None and start >= end:
            raise ValueError(f"{where}: start {start} s is not before end {end} s.")
        split = _split_name(_text(row.get("split")) or "train")
        if not _SPLIT_NAME.match(split):
            raise ValueError(f"{where}: split {split!r} is not a valid split name (letters, digits and '_', "
                             "e.g. 'train', 'test', 'validation').")
        entries.append({"file": path.parent / file, "label": label, "start": start or 0.0, "end": end,
                        "timed": start is not None and end is not None, "patient_id": _text(row.get("patient_id")),
                        "split": split, "where": where})
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


def _check_no_loose_audio(folder: Path, holds: str) -> None:
    """Audio directly in ``folder`` has no label folder: refuse it rather than leave it out."""
    loose = [path.name for path in sorted(folder.iterdir())
             if path.is_file() and not is_hidden(path.name) and path.suffix.lower() in AUDIO_EXTENSIONS]
    if loose:
        more = f" and {len(loose) - 3} more" if len(loose) > 3 else ""
        raise ValueError(f"{folder}: audio files {loose[:3]}{more} lie outside any label folder; this folder should hold "
                         f"{holds} only. Move each file into the folder of its label (or list the files in a "
                         "metadata.csv).")


def _entries_from_folders(root: Path) -> list[dict]:
    split_dirs = _subfolders(root)
    named_splits = [path.name for path in split_dirs if path.name.lower() in SPLIT_FOLDERS]
    if named_splits and len(named_splits) < len(split_dirs):
        others = [path.name for path in split_dirs if path.name.lower() not in SPLIT_FOLDERS]
        raise ValueError(f"{root}: split folders {named_splits} next to other folders {others}; put every label "
                         f"folder inside a split folder ({', '.join(SPLIT_FOLDERS)}), or use no split folders.")
    by_split = [(_split_name(path.name), path) for path in split_dirs] if named_splits else [("train", root)]
    if named_splits:
        _check_no_loose_audio(root, "split folders")
    entries = []
    for split, split_dir in by_split:
        _check_no_loose_audio(split_dir, "label folders")
        for label_dir in _subfolders(split_dir):
            for file in sorted(label_dir.rglob("*")):
                hidden = any(is_hidden(part) for part in file.relative_to(label_dir).parts)
                if file.is_file() and not hidden:
                    entries.append({"file": file, "label": label_dir.name, "start": 0.0, "end": None, "timed": False,
                                    "patient_id": None, "split": split, "where": str(file)})
    if not entries:
        raise FileNotFoundError(f"{root}: no metadata file ({', '.join(METADATA_FILES)}) and no label subfolders "
                                "with audio; see `load_audio_folder` for the accepted layouts.")
    return entries


def _metadata_file(root: Path, metadata_file: str | Path | None, on_missing: str) -> Path | None:
    """The table of ``root`` (``metadata_file``, else the first of METADATA_FILES there; None: no table), the root and
    ``on_missing`` checked."""
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset root {root} does not exist or is not a folder.")
    check_on_missing(on_missing)
    if metadata_file is None:
        return next((root / name for name in METADATA_FILES if (root / name).is_file()), None)
    if not Path(metadata_file).is_file():
        raise FileNotFoundError(f"Metadata file {metadata_file} not found.")
    return Path(metadata_file)


def _usable_by_file(entries: list[dict], on_missing: str, summary: LoadingSummary) -> dict[Path, list[dict]]:
    """The entries of files that exist and are audio, by file (in table order); the others raise, or with
    ``on_missing="skip"`` are counted in ``summary``."""
    grouped: dict[Path, list[dict]] = defaultdict(list)  # one split and patient per file, checked by the caller
    for entry in entries:
        file = entry["file"]
        problem = (None if file.suffix.lower() in AUDIO_EXTENSIONS and file.is_file() else
                   "file not found" if not file.exists() else f"not an audio file ({', '.join(AUDIO_EXTENSIONS)})")
        if problem and on_missing == "error":
            raise FileNotFoundError(f"{entry['where']}: {file}: {problem}. {SKIP_HINT}")
        if problem:
            summary.skipped.append((str(file), problem))
        else:
            grouped[file].append(entry)
    return grouped


def _recording_id(root: Path, file: Path) -> str:
    return file.relative_to(root).with_suffix("").as_posix() if file.is_relative_to(root) else file.stem


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
    metadata_file = _metadata_file(root, metadata_file, on_missing)
    entries = _entries_from_table(metadata_file) if metadata_file else _entries_from_folders(root)
    for key in ("patient_id", "split"):
        _check_consistent(entries, key)
    # The classes come from every entry, so that skipping a file never drops a class and shifts the ids.
    found = sorted({entry["label"] for entry in entries}, key=lambda label: (label != NORMAL_LABEL, label))
    spellings = defaultdict(list)
    for label in found:
        spellings[label.casefold()].append(label)
    for variants in spellings.values():
        if len(variants) > 1:
            where = "; ".join(next(e["where"] for e in entries if e["label"] == label) for label in variants)
            raise ValueError(f"labels {variants} differ only in case ({where}): they would be separate classes; "
                             "spell each class one way.")
    label_names = list(label_names) if label_names is not None else found
    for entry in entries:
        if entry["label"] not in label_names:
            raise ValueError(f"{entry['where']}: unknown label {entry['label']!r}; expected one of {label_names}.")

    summary = LoadingSummary(f"audio folder {root.name}", str(root))
    recordings = []
    for file, file_entries in _usable_by_file(entries, on_missing, summary).items():
        spans = sorted((Span(entry["start"], entry["end"], entry["label"], {"label": entry["label"]}, entry["where"])
                        for entry in file_entries), key=lambda span: span.start_s)
        metadata = {"patient_id": file_entries[0]["patient_id"]}
        recordings.append(Recording(file_entries[0]["split"], file, _recording_id(root, file), metadata, {}, spans))

    features = Features({"recording_id": Value("string"), "patient_id": Value("string"),
                         "label": ClassLabel(names=label_names), "event_index": Value("int32"),
                         "start_s": Value("float64"), "end_s": Value("float64"), "audio_offset_s": Value("float64")})
    info = DatasetInfo(description=f"Labelled respiratory audio from {root.name}")
    return build_levels(recordings, {"segment": (SPAN, features)}, summary, info, context_s=context_s, decode=decode,
                        num_proc=num_proc, progress=progress, skip_unreadable=on_missing == "skip")["segment"]


def load_event_folder(
    root: str | Path,
    metadata_file: str | Path | None = None,
    on_missing: str = "error",
    decode: bool = True,
    num_proc: int | None = None,
    progress: bool | None = None,
) -> DatasetDict:
    """Load a folder whose table lists annotated events (``file,label,start,end[,patient_id][,split]``, one row per
    event, times in seconds) as an event detector's data: one row per recording, as SPRSound's record level.

    Each label must name an SPRSound event type (:data:`~respstf.hub_dataset.labels.EVENT_TYPES`, in any case, or an
    alias of :data:`~respstf.hub_dataset.labels.EVENT_TYPE_ALIASES`; ``Normal`` is a normal breath), since the
    detector's frame classes and its record rule are SPRSound's; every row needs ``start`` and ``end``. Stretches of a
    recording no row covers are unannotated (the frame loss ignores them), as between SPRSound's events. Every listed
    recording has events, so none is Poor Quality.

    Rows: ``audio`` (the whole file), ``recording_id``, ``patient_id``, ``task22`` (the record class its events make by
    SPRSound's rule, `record_label_from_events`: what a detector's validation scores), ``duration_s`` and ``events``
    (``[{start_s, end_s, type}]`` sorted by start, an end past the recording clipped to it and counted in the summary).
    Other arguments as in `load_audio_folder`.

    Raises:
        ValueError: no table (a folder of label subfolders has no event times), a row without ``start`` or ``end``,
            a label that names no SPRSound event type (one line naming the row and the accepted labels), or anything
            `load_audio_folder` refuses in a table.
        FileNotFoundError: (``on_missing="error"``) a listed file that is missing or not audio.
    """
    root = Path(root)
    table = _metadata_file(root, metadata_file, on_missing)
    if table is None:
        raise ValueError(f"--task events learns SPRSound's event types from their start and end times: {root} needs a "
                         f"metadata table ({', '.join(METADATA_FILES)}) with the columns file, label, start, end (seconds; "
                         "one row per event) and patient_id; it has none.")
    entries = _entries_from_table(table)
    for key in ("patient_id", "split"):
        _check_consistent(entries, key)
    for entry in entries:
        where = f"{entry['where']} ({entry['file'].name})"
        if not entry["timed"]:
            raise ValueError(f"{where}: no start and end: --task events learns from each event's times; give every row "
                             "the start and end (seconds) of its event.")
        entry["type"] = event_type_of_label(entry["label"])
        if entry["type"] is None:
            raise ValueError(unknown_event_label_message(entry["label"], where))

    summary = LoadingSummary(f"audio folder {root.name} (events)", str(root))
    column = DETECTION_SPEC["column"]
    recordings = []
    for file, file_entries in _usable_by_file(entries, on_missing, summary).items():
        spans = sorted((Span(entry["start"], entry["end"], entry["type"], {}, entry["where"]) for entry in file_entries),
                       key=lambda span: (span.start_s, span.end_s))
        labels = {column: record_label_from_events([span.type for span in spans])}
        metadata = {"patient_id": file_entries[0]["patient_id"]}
        recordings.append(Recording(file_entries[0]["split"], file, _recording_id(root, file), metadata, labels, spans))

    features = Features({"recording_id": Value("string"), "patient_id": Value("string"),
                         column: ClassLabel(names=RECORD_LABELS), "duration_s": Value("float64"), "events": EVENT_LIST})
    info = DatasetInfo(description=f"Respiratory recordings with annotated events from {root.name}")
    return build_levels(recordings, {"record": (RECORD, features)}, summary, info, decode=decode, num_proc=num_proc,
                        progress=progress, skip_unreadable=on_missing == "skip")["record"]
