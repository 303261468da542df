"""Any supported dataset source as a `DatasetDict`: the one place that tells what a folder or id holds.

A source is an SPRSound release folder (either layout), an ICBHI 2017 folder, a folder of audio + labels
(a metadata table or one subfolder per label), a folder written by ``save_to_disk`` (a DatasetDict or one
Dataset), or a Hub dataset id. Audio stays undecoded (``decode=False``): read rows with `read_audio`.

For the event detector (task ``"events"``) an SPRSound release gives its record rows, and a folder whose table lists
events (``file,label,start,end``, labels naming SPRSound event types) the same rows (`load_event_folder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets

from .folder import METADATA_FILES, load_audio_folder, load_event_folder
from .icbhi import LABEL_COLUMNS as ICBHI_LABEL_COLUMNS
from .icbhi import is_icbhi_release, load_icbhi
from .labels import DETECTION_TASK, normalize_task, task_labels, task_spec
from .splits import patient_disjoint_split
from .sprsound import find_splits, load_sprsound, sprsound_folds

# The record-level column the SPRSound validation split is stratified by (its 5 record classes).
_SPRSOUND_STRATIFY_COLUMN = "task22"


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset is (``location``) and what it is (``kind``: ``"saved"``, ``"sprsound"``, ``"icbhi"``,
    ``"folder"`` or ``"hub"``), told once by :meth:`detect`."""

    location: str
    kind: str

    @classmethod
    def detect(cls, location: str | Path) -> DatasetSource:
        """The kind of ``location``; a file (not a folder) is refused."""
        path, location = Path(location), str(location)
        if not path.is_dir():
            if path.exists():
                raise ValueError(f"{location} is a file; expected a dataset folder or a Hub dataset id.")
            return cls(location, "hub")
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return cls(location, "saved")  # checked first: its folders could pass for an SPRSound layout
        if is_icbhi_release(path):
            return cls(location, "icbhi")
        if any((path / name).is_file() for name in METADATA_FILES):
            return cls(location, "folder")
        try:
            find_splits(path)
        except FileNotFoundError:
            return cls(location, "folder")
        return cls(location, "sprsound")

    def default_label_column(self, task: str | None) -> str:
        """The label column without ``--label_column``: the task's, ICBHI's cycle label, else ``label``."""
        if task:
            return task_spec(task)["column"]
        return ICBHI_LABEL_COLUMNS["cycle"] if self.kind == "icbhi" else "label"

    def load(self, task: str | None = None, label_column: str | None = None, on_missing: str = "error") -> datasets.DatasetDict:
        """The dataset with undecoded audio. ``task`` (SPRSound's ``"11"`` … ``"22"``) picks the level and label column
        of an SPRSound release (which needs it) and checks a folder's labels; ``"events"`` (the event detector) loads an
        SPRSound release's, or a folder's (`load_event_folder`: its table's rows are events), one row per recording with
        its ``events``; ``label_column`` ``diagnosis`` loads ICBHI one row per recording (else one per breathing
        cycle)."""
        if self.kind == "saved":
            data = datasets.load_from_disk(self.location)
            if isinstance(data, datasets.Dataset):  # one split saved alone
                data = datasets.DatasetDict(train=data)
        elif self.kind == "sprsound":
            if task is None:
                raise ValueError(f"{self.location} is an SPRSound release: pass --task 11, 12, 21, 22 or events.")
            data = load_sprsound(self.location, task=task, decode=False, on_missing=on_missing)
        elif self.kind == "icbhi":
            level = "patient" if label_column == ICBHI_LABEL_COLUMNS["patient"] else "cycle"
            data = load_icbhi(self.location, level=level, decode=False, on_missing=on_missing)
        elif self.kind == "folder" and task is not None and normalize_task(task) == DETECTION_TASK:
            data = load_event_folder(self.location, decode=False, on_missing=on_missing)
        elif self.kind == "folder":
            data = load_audio_folder(self.location, label_names=task_labels(task) if task else None, decode=False,
                                     on_missing=on_missing)
        else:
            data = datasets.load_dataset(self.location, task_spec(task)["level"] if task else None)
        return data.cast_column("audio", datasets.Audio(decode=False))

    def validation_patients(self, fraction: float, seed: int, on_missing: str = "error",
                            cv_fold: int | None = None) -> list[str] | None:
        """On an SPRSound release, the validation patients of every task: those of cross-validation fold ``cv_fold``
        (:func:`sprsound_folds`), else those the record-level split (stratified by the 5 record classes) chooses. One
        set for all four tasks, so a model fine-tuned from another task's model never validates on patients that
        trained it. None for other sources (each task carves its own split)."""
        if self.kind != "sprsound":
            return None
        if cv_fold is not None:
            return sorted(patient for patient, fold in sprsound_folds().items() if fold == cv_fold)
        records = load_sprsound(self.location, level="record", splits=["train"], decode=False, progress=False,
                                on_missing=on_missing)["train"]
        carved = patient_disjoint_split(records, fraction, seed, label_column=_SPRSOUND_STRATIFY_COLUMN)
        return sorted({patient for patient in carved["validation"]["patient_id"] if patient is not None})


def load_dataset_dict(location: str | Path, task: str | None = None, label_column: str | None = None,
                      on_missing: str = "error") -> datasets.DatasetDict:
    """Any supported source (see the module docstring) as a `DatasetDict` with undecoded audio."""
    return DatasetSource.detect(location).load(task, label_column, on_missing)
