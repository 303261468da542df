"""Turn parsed recordings into `datasets` objects: one row per recording and/or one per annotated span.

The dataset-specific loaders (SPRSound, ICBHI, generic folders) only parse labels and metadata into
`Recording` objects; reading, validating and cutting the audio (in parallel with ``num_proc``),
building the Arrow tables and the loading summary happen here, once.
"""

from __future__ import annotations

import logging
import multiprocessing
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from datasets import Audio, ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, List, Value
from datasets.utils.logging import is_progress_bar_enabled
from tqdm.auto import tqdm

from .audio import RecordingAudio, UnreadableAudioError, read_and_cut_from_args, require_audio_decoder

logger = logging.getLogger(__name__)

RECORD, SPAN = "record", "span"  # the two kinds of level: whole recordings, or spans cut from them
# The feature of a record row's ``events`` column (`_record_row`): each annotated span's times in the recording, and type.
EVENT_LIST = List({"start_s": Value("float64"), "end_s": Value("float64"), "type": Value("string")})


# How to go on past unusable files, in each loader's error about them (the CLIs spell the option --on-missing).
SKIP_HINT = "Pass on_missing='skip' (--on-missing skip on the command line) to skip them; they are counted in the summary."


def check_on_missing(on_missing: str) -> None:
    """Validate the ``on_missing`` argument shared by every loader."""
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}.")


class DataQualityWarning(UserWarning):
    """Something in the data was repaired or left out (clipped events, skipped files, unparsed names)."""


@dataclass
class Span:
    """One annotated span of a recording (an SPRSound event, an ICBHI cycle, a labelled segment)."""

    start_s: float
    end_s: float | None  # None: until the end of the recording
    type: str  # written into the record row's `events` list
    columns: dict  # the span row's label columns, e.g. {"task11": "Normal", "task12": "Normal"}
    source: str  # where it was annotated, for errors: "<file>.json, event 3", "metadata.csv, entry 5"


@dataclass
class Recording:
    split: str
    audio_path: Path
    recording_id: str
    metadata: dict  # columns shared by the recording's record row and span rows (patient_id, age, ...)
    labels: dict = field(default_factory=dict)  # record-level label columns
    spans: list[Span] = field(default_factory=list)  # sorted by start


@dataclass
class LoadingSummary:
    """What a loader produced and what it left out; `str()` gives a readable report."""

    dataset: str
    root: str
    rows: dict = field(default_factory=dict)  # level -> split -> label column -> {label: count}
    skipped: list = field(default_factory=list)  # (file, reason)
    clipped_events: list = field(default_factory=list)  # events whose end was moved back to the recording's end
    unparsed_file_names: list = field(default_factory=list)  # metadata columns left empty for these
    inconsistent_record_labels: list = field(default_factory=list)  # (annotation file, its label, its events' label)
    implausible_events: list = field(default_factory=list)  # events too short to be a sound: times in the wrong unit?

    @property
    def clipped_event_ends(self) -> int:
        """How many event ends were moved back to the end of their recording."""
        return len(self.clipped_events)

    def __str__(self) -> str:
        lines = [f"{self.dataset} loaded from {self.root}"]
        for level, splits in self.rows.items():
            for split, columns in splits.items():
                total = next(iter(columns.values())) if columns else {}
                lines.append(f"  {level} / {split}: {sum(total.values())} rows")
                for column, counts in columns.items():
                    listed = ", ".join(f"{label} {count}" for label, count in counts.items())
                    lines.append(f"    {column}: {listed}")
        lines.append(f"  skipped files: {len(self.skipped)}")
        reasons = Counter(reason for _, reason in self.skipped)
        lines += [f"    {count} × {reason}" for reason, count in reasons.items()]
        lines.append(f"  event ends clipped to the recording's end: {self.clipped_event_ends}")
        lines.append(f"  file names that did not parse (metadata left empty): {len(self.unparsed_file_names)}")
        if self.inconsistent_record_labels:
            lines.append(f"  record labels that contradict their events (kept as annotated): "
                         f"{len(self.inconsistent_record_labels)}")
        if self.implausible_events:
            lines.append(f"  events too short to be a sound (kept as annotated): {len(self.implausible_events)}")
        return "\n".join(lines)


def count_labels(dataset: Dataset, column: str) -> dict[str, int]:
    """Rows per class of a `ClassLabel` column, in class order (classes with no rows included)."""
    feature = dataset.features[column]
    counts = Counter(dataset.select_columns([column]).with_format("arrow")[column].to_pylist())
    return {name: counts.get(index, 0) for index, name in enumerate(feature.names)}


def label_columns(features: Features) -> list[str]:
    return [name for name, feature in features.items() if isinstance(feature, ClassLabel)]


def _record_row(recording: Recording, audio: RecordingAudio) -> dict:
    events = [{"start_s": clip.start_s, "end_s": clip.end_s, "type": span.type}
              for span, clip in zip(recording.spans, audio.clips)]
    return {"audio": {"bytes": audio.file_bytes, "path": recording.audio_path.name},
            "recording_id": recording.recording_id,
            **recording.metadata, **recording.labels, "duration_s": audio.duration_s, "events": events}


def _span_rows(recording: Recording, audio: RecordingAudio) -> list[dict]:
    rows = []
    for index, (span, clip) in enumerate(zip(recording.spans, audio.clips)):
        path = f"{recording.recording_id}_{index:03d}{clip.extension}"
        rows.append({"audio": {"bytes": clip.audio_bytes, "path": path}, "recording_id": recording.recording_id,
                     **recording.metadata, **span.columns, "event_index": index, "start_s": clip.start_s,
                     "end_s": clip.end_s, "audio_offset_s": clip.offset_s})
    return rows


def _to_dataset(rows: list[dict], features: Features, info: DatasetInfo, split: str) -> Dataset:
    # The audio column is handed over as an Arrow struct of bytes/path, which skips `Audio.encode_example`
    # (it needs torchcodec) and any re-encoding: building works with or without FFmpeg.
    columns = {}
    for name, feature in features.items():
        values = [row[name] for row in rows]
        columns[name] = pa.array(values, type=Audio.pa_type) if isinstance(feature, Audio) else values
    info = info.copy()
    info.features = features
    return Dataset.from_dict(columns, info=info, split=split)


def build_levels(
    recordings: list[Recording],
    levels: dict[str, tuple[str, Features]],
    summary: LoadingSummary,
    info: DatasetInfo,
    context_s: float = 0.0,
    decode: bool = True,
    num_proc: int | None = None,
    progress: bool | None = None,
    skip_unreadable: bool = False,
) -> dict[str, DatasetDict]:
    """Read every recording once and build each requested level.

    Args:
        recordings: parsed recordings, in the order rows should have.
        levels: level name -> (``"record"`` or ``"span"``, its features without the ``audio`` column).
        summary: filled with the row counts and clipped events, then logged and attached to each result
            as ``.loading_summary``.
        context_s: seconds of audio kept before and after each span (clipped at the recording's edges).
        decode: the ``audio`` column's `datasets.Audio(decode=...)`; True checks a decoder is available.
        num_proc: worker processes reading and cutting audio (None or 1: this process).
        progress: show a progress bar (default: the `datasets` progress-bar setting).
        skip_unreadable: skip (and count in the summary) a recording whose audio cannot be decoded or holds
            nothing to learn from (NaN/Inf samples, silence), instead of raising.

    Raises:
        ValueError: no recording could be used (none given, or every one skipped).
    """
    if context_s < 0:
        raise ValueError(f"context_s must be >= 0 seconds, got {context_s}.")
    if decode:
        require_audio_decoder()
    kinds = {kind for kind, _ in levels.values()}
    arguments = [(recording.audio_path, [(span.start_s, span.end_s, span.source) for span in recording.spans],
                  context_s, RECORD in kinds, SPAN in kinds) for recording in recordings]
    rows = {level: {} for level in levels}
    progress = is_progress_bar_enabled() if progress is None else progress
    pool = multiprocessing.Pool(num_proc) if num_proc and num_proc > 1 and len(recordings) > 1 else None
    try:
        read = (pool.imap(read_and_cut_from_args, arguments, chunksize=8) if pool
                else map(read_and_cut_from_args, arguments))
        bar = tqdm(read, total=len(recordings), desc=f"Reading {summary.dataset}", unit="file", disable=not progress)
        for recording, audio in zip(recordings, bar):
            if isinstance(audio, UnreadableAudioError):
                if not skip_unreadable:
                    raise UnreadableAudioError(f"{audio} {SKIP_HINT}") from audio
                summary.skipped.append((str(recording.audio_path), audio.reason))
                continue
            summary.clipped_events += audio.clipped_ends
            for level, (kind, _) in levels.items():
                split_rows = rows[level].setdefault(recording.split, [])
                if kind == RECORD:
                    split_rows.append(_record_row(recording, audio))
                else:
                    split_rows.extend(_span_rows(recording, audio))
    finally:
        if pool:
            pool.terminate()
    if not any(rows.values()):
        skipped = f" ({len(summary.skipped)} files skipped: {_listed_skipped(summary)})" if summary.skipped else ""
        raise ValueError(f"{summary.dataset} at {summary.root}: no usable recordings{skipped}.")

    results = {}
    for level, (kind, features) in levels.items():
        features = Features({"audio": Audio(decode=decode), **features})
        datasets = DatasetDict({split: _to_dataset(split_rows, features, info, split)
                                for split, split_rows in rows[level].items()})
        summary.rows[level] = {split: {column: count_labels(dataset, column) for column in label_columns(features)}
                               for split, dataset in datasets.items()}
        results[level] = datasets
    _report(summary)
    for datasets in results.values():
        datasets.loading_summary = summary
    return results


def _listed(items: list[str]) -> str:
    """The first five of ``items``, then how many more."""
    more = f" and {len(items) - 5} more" if len(items) > 5 else ""
    return "; ".join(items[:5]) + more


def _listed_skipped(summary: LoadingSummary) -> str:
    return _listed([f"{file} ({reason})" for file, reason in summary.skipped])


def _report(summary: LoadingSummary) -> None:
    if summary.skipped:
        warnings.warn(f"{summary.dataset}: skipped {len(summary.skipped)} files: {_listed_skipped(summary)}.",
                      DataQualityWarning, stacklevel=3)
    if summary.clipped_event_ends:
        warnings.warn(f"{summary.dataset}: {summary.clipped_event_ends} annotated events ended after their "
                      f"recording; their end was clipped to the recording's end: {_listed(summary.clipped_events)}.",
                      DataQualityWarning, stacklevel=3)
    if summary.unparsed_file_names:
        listed = ", ".join(summary.unparsed_file_names[:5])
        warnings.warn(f"{summary.dataset}: {len(summary.unparsed_file_names)} file names did not follow the naming "
                      f"scheme (e.g. {listed}); their metadata columns are left empty.", DataQualityWarning,
                      stacklevel=3)
    if summary.implausible_events:
        warnings.warn(f"{summary.dataset}: {len(summary.implausible_events)} annotated events are too short to be a "
                      f"breath sound (e.g. {'; '.join(summary.implausible_events[:5])}): were their times written in "
                      "seconds where milliseconds are expected? They are kept as annotated.", DataQualityWarning,
                      stacklevel=3)
    if summary.inconsistent_record_labels:
        listed = "; ".join(f"{file}: {label!r}, its events make it {implied!r}"
                           for file, label, implied in summary.inconsistent_record_labels[:5])
        warnings.warn(f"{summary.dataset}: {len(summary.inconsistent_record_labels)} record labels contradict their "
                      f"events ({listed}); the labels are kept as annotated.", DataQualityWarning, stacklevel=3)
    logger.info("%s", summary)
