"""A validation split carved from train with no patient on both sides, and patient folds for cross-validation."""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Real

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict


def _class_label_columns(dataset: Dataset) -> list[str]:
    return [name for name, feature in dataset.features.items() if isinstance(feature, ClassLabel)]


def _default_label_column(dataset: Dataset) -> str:
    # The finest label column (most classes) stratifies best: record_label/task22 or task12 on SPRSound.
    columns = _class_label_columns(dataset)
    if not columns:
        raise ValueError(f"No ClassLabel column to stratify by in {dataset.column_names}; pass label_column=.")
    return max(columns, key=lambda name: len(dataset.features[name].names))


def _chosen_patients(patient_ids: np.ndarray, validation_patients: Iterable[str], patient_column: str) -> np.ndarray:
    """The mask over ``patient_ids`` of ``validation_patients``, checked to leave rows on both sides."""
    if isinstance(validation_patients, str):
        raise ValueError(f"validation_patients must be a collection of ids, not the string {validation_patients!r}.")
    wanted = sorted({str(patient) for patient in validation_patients})
    # Ids absent here are fine (a record-level patient whose recordings have no events); none present is not.
    chosen = np.isin(patient_ids, wanted)
    if not chosen.any():
        if not wanted:
            raise ValueError("validation_patients is empty: validation would have no rows.")
        more = " …" if len(wanted) > 10 else ""
        raise ValueError(f"None of the {len(wanted)} validation_patients ({wanted[:10]}{more}) "
                         f"is in the dataset's {patient_column!r} column (ids such as {patient_ids[:5].tolist()}): "
                         "validation would have no rows.")
    if chosen.all():
        raise ValueError(f"validation_patients holds all {len(patient_ids)} patients of the dataset's "
                         f"{patient_column!r} column: train would have no rows.")
    return chosen


def _patients_of_rows(dataset: Dataset, label_column: str, patient_column: str) -> tuple[np.ndarray, np.ndarray]:
    """``(patient_ids, patient_of_row)`` of ``dataset`` (both columns checked to exist); rows without a patient id
    (unparsed file names) count as a patient of their own, grouped by ``recording_id``."""
    for column in (label_column, patient_column):
        if column not in dataset.column_names:
            raise ValueError(f"Column {column!r} not in the dataset (columns: {dataset.column_names}).")
    table = dataset.select_columns([patient_column] + (["recording_id"] if "recording_id" in dataset.column_names else []))
    columns = table.with_format("arrow")[:]
    patients = columns[patient_column].to_pylist()
    if "recording_id" in columns.column_names:
        recordings = columns["recording_id"].to_pylist()
        patients = [patient if patient is not None else f"recording:{recording}"
                    for patient, recording in zip(patients, recordings)]
    return np.unique(np.asarray(patients, dtype=object).astype(str), return_inverse=True)


def _label_counts(dataset: Dataset, label_column: str, patient_of_row: np.ndarray, num_patients: int) -> np.ndarray:
    """``(patients, labels)`` row counts of the `ClassLabel` column ``label_column``; unlabelled rows (-1) refused."""
    if not isinstance(dataset.features[label_column], ClassLabel):
        raise ValueError(f"label_column {label_column!r} is {dataset.features[label_column]}, not a ClassLabel: "
                         f"stratifying needs class ids; pass one of {_class_label_columns(dataset)} "
                         "(or cast the column with class_encode_column).")
    labels = np.asarray(dataset.select_columns([label_column]).with_format("arrow")[:][label_column].to_pylist())
    if len(labels) and labels.min() < 0:
        raise ValueError(f"Column {label_column!r} has rows without a label (-1); drop or label them first.")
    per_patient = np.zeros((num_patients, int(labels.max()) + 1 if len(labels) else 0))
    np.add.at(per_patient, (patient_of_row, labels), 1)
    return per_patient


def _rarest_first(per_patient: np.ndarray, weights: np.ndarray, seed: int) -> np.ndarray:
    """Patient indices, those with the rarest labels first (they constrain a split most), in a seeded shuffle within
    equal rarity. ``per_patient``: ``(patients, labels)`` row counts; ``weights``: ``(labels,)``, larger for rarer."""
    order = np.random.default_rng(seed).permutation(len(per_patient))
    return order[np.argsort(-((per_patient[order] > 0) @ weights), kind="stable")]


def patient_disjoint_split(
    dataset: Dataset,
    fraction: float = 0.15,
    seed: int = 0,
    label_column: str | None = None,
    patient_column: str = "patient_id",
    validation_patients: Iterable[str] | None = None,
) -> DatasetDict:
    """Split ``dataset`` into ``train`` and ``validation`` so that no patient is on both sides.

    Whole patients go to validation until it holds about ``fraction`` of the rows of every label (as
    far as patients allow: a rare label seen in one patient ends up on one side). Deterministic for a
    given ``seed``. Rows without a patient id (unparsed file names) are grouped by ``recording_id``.

    Args:
        dataset: a `Dataset` with a patient column and a `ClassLabel` column.
        fraction: the share of rows (per label) wanted in validation, in (0, 1).
        seed: shuffles the order in which patients are considered.
        label_column: the label to stratify by (default: the `ClassLabel` column with the most classes).
        patient_column: the column identifying patients.
        validation_patients: put exactly these patients in validation instead of choosing them, e.g. the
            patients a record-level split chose, so that a record model fine-tuned from an event model
            never validates on patients whose events trained it. Ids not in ``dataset`` are ignored, but
            at least one must be, and at least one of its patients must stay in train.

    Raises:
        ValueError: bad arguments, a missing or non-`ClassLabel` label column, fewer than 2 patients,
            or ``validation_patients`` leaving a side empty.
    """
    if isinstance(dataset, DatasetDict):
        raise TypeError("patient_disjoint_split takes one split (a Dataset), e.g. dsdict['train'].")
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 < fraction < 1:
        raise ValueError(f"fraction must be a number between 0 and 1 (exclusive), got {fraction!r}.")
    label_column = label_column or _default_label_column(dataset)
    patient_ids, patient_of_row = _patients_of_rows(dataset, label_column, patient_column)
    if len(patient_ids) < 2:
        raise ValueError(f"Need at least 2 patients ({patient_column!r}) to split without overlap, "
                         f"found {len(patient_ids)}: {patient_ids[:5].tolist()}.")
    if validation_patients is not None:
        return _select_patients(dataset, patient_of_row, _chosen_patients(patient_ids, validation_patients,
                                                                          patient_column))

    per_patient = _label_counts(dataset, label_column, patient_of_row, len(patient_ids))
    num_labels = per_patient.shape[1]
    targets = fraction * per_patient.sum(axis=0)
    weights = 1.0 / np.maximum(targets, 1.0)  # a miss on a rare label costs as much as on a common one

    order = _rarest_first(per_patient, weights, seed)

    # Greedy pass, then single-patient moves (in or out) while they bring validation closer to the targets.
    chosen = np.zeros(len(patient_ids), dtype=bool)
    in_validation = np.zeros(num_labels)
    for _ in range(20):
        moved = False
        for patient in order:
            step = -per_patient[patient] if chosen[patient] else per_patient[patient]
            if np.abs(in_validation + step - targets) @ weights < np.abs(in_validation - targets) @ weights - 1e-9:
                chosen[patient] = not chosen[patient]
                in_validation += step
                moved = True
        if not moved:
            break
    if not chosen.any():  # tiny datasets: at least one patient in validation
        chosen[order[-1]] = True
    if chosen.all():
        chosen[order[0]] = False

    return _select_patients(dataset, patient_of_row, chosen)


def _select_patients(dataset: Dataset, patient_of_row: np.ndarray, chosen: np.ndarray) -> DatasetDict:
    validation_rows = np.flatnonzero(chosen[patient_of_row])
    train_rows = np.flatnonzero(~chosen[patient_of_row])
    return DatasetDict({"train": dataset.select(train_rows), "validation": dataset.select(validation_rows)})


def patient_folds(
    dataset: Dataset,
    k: int = 5,
    seed: int = 0,
    label_column: str | None = None,
    patient_column: str = "patient_id",
) -> dict[str, int]:
    """Assign every patient of ``dataset`` to one of ``k`` cross-validation folds (0 … k-1), whole patients only,
    each fold holding about 1/k of the rows of every label (as far as patients allow).

    Patients with the rarest labels are placed first (a seeded shuffle orders patients of equal rarity), each into
    the fold it brings closest to its targets; then single patients move between folds while that brings the folds
    closer. Deterministic for a given ``seed``. Rows without a patient id count as a patient of their own, grouped by
    ``recording_id`` (as in `patient_disjoint_split`). Returns ``{patient_id: fold}``.

    Raises:
        ValueError: ``k`` below 2, a missing or non-`ClassLabel` column, unlabelled rows, or fewer patients than folds.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer of 2 or more (folds), got {k!r}.")
    label_column = label_column or _default_label_column(dataset)
    patient_ids, patient_of_row = _patients_of_rows(dataset, label_column, patient_column)
    if len(patient_ids) < k:
        raise ValueError(f"{len(patient_ids)} patients cannot fill {k} folds.")
    per_patient = _label_counts(dataset, label_column, patient_of_row, len(patient_ids))
    targets = per_patient.sum(axis=0) / k
    weights = 1.0 / np.maximum(targets, 1.0)  # a miss on a rare label costs as much as on a common one

    order = _rarest_first(per_patient, weights, seed)

    def cost(counts: np.ndarray) -> float:
        return float(np.abs(counts - targets) @ weights)

    fold_of = np.full(len(patient_ids), -1)
    counts = np.zeros((k, per_patient.shape[1]))
    for patient in order:
        gains = [cost(counts[fold] + per_patient[patient]) - cost(counts[fold]) for fold in range(k)]
        fold = int(np.argmin(np.asarray(gains) + 1e-9 * counts.sum(axis=1)))  # ties: the fold with fewer rows
        fold_of[patient], counts[fold] = fold, counts[fold] + per_patient[patient]
    for _ in range(20):
        moved = False
        for patient in order:
            here = fold_of[patient]
            for there in range(k):
                before = cost(counts[here]) + cost(counts[there])
                after = cost(counts[here] - per_patient[patient]) + cost(counts[there] + per_patient[patient])
                if there != here and after < before - 1e-9 and (fold_of == here).sum() > 1:
                    counts[here] -= per_patient[patient]
                    counts[there] += per_patient[patient]
                    fold_of[patient], here, moved = there, there, True
        if not moved:
            break
    return {str(patient): int(fold) for patient, fold in zip(patient_ids, fold_of)}
