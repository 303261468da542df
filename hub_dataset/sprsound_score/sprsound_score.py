"""The official SPRSound Score (BioCAS 2022/2023 respiratory sound challenge) as an `evaluate` metric.

The challenge ranks systems by one number built from two recalls:

* SE (sensitivity): correctly classified non-Normal samples / all non-Normal samples. A non-Normal sample counts
  only when its *exact* class is predicted, so a Wheeze predicted as Rhonchi is a miss even though both are
  adventitious. Poor Quality (tasks 2-1 and 2-2) is a non-Normal class like any other.
* SP (specificity): correctly classified Normal samples / all Normal samples.
* AS = (SE + SP) / 2, HS = 2·SE·SP / (SE + SP) (0 when both are 0), Score = (AS + HS) / 2.

Which class is Normal: ``normal_label`` when given; else the position of ``"Normal"`` (the official class name) in
``label_names``; else class 0, as in every SPRSound task's label map. A ``normal_label`` that disagrees with
``label_names`` is an error, so a label order with Normal elsewhere can never be scored with the wrong class.

Degenerate references: when there are no Normal samples SP is undefined, and when there are no non-Normal samples
SE is undefined. The undefined term is reported as NaN (with a warning) and AS, HS and Score are computed from the
term that exists, i.e. all three equal that recall. That is the value the formulas give if the missing recall
equalled the present one, it stays in [0, 1], and it keeps checkpoint selection by Score working on tiny splits.

Load it with ``evaluate.load(respstf.hub_dataset.SPRSOUND_SCORE_PATH)`` (this folder; from the repository root also
``evaluate.load("hub_dataset/sprsound_score")``), or call :func:`compute_sprsound_score` directly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import datasets
import evaluate
import numpy as np

NORMAL_NAME = "Normal"  # the official class name; its position in `label_names` is the default Normal class

_CITATION = """\
@article{zhang2022sprsound,
  title   = {{SPRSound}: Open-Source {SJTU} Paediatric Respiratory Sound Database},
  author  = {Zhang, Qing and others},
  journal = {IEEE Transactions on Biomedical Circuits and Systems},
  volume  = {16},
  number  = {5},
  pages   = {867--881},
  year    = {2022},
}
"""

_DESCRIPTION = """\
The official SPRSound challenge Score for respiratory sound classification (tasks 1-1, 1-2, 2-1, 2-2): the mean of
the average (AS) and harmonic (HS) scores of sensitivity over non-Normal classes (exact class required) and
specificity over the Normal class. Also returns per-class recall and the confusion matrix.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids (argmax of the logits), one per sample.
    references (`list` of `int`): ground-truth class ids, same length as `predictions`.
    normal_label (`int`, *optional*): the class id of Normal; every other class is non-Normal. Defaults to the
        position of "Normal" in `label_names`, else 0. Must agree with `label_names` when both are given.
    num_labels (`int`, *optional*): number of classes. Defaults to `len(label_names)` when names are given,
        otherwise to the largest id seen (in either input, or `normal_label`) plus one.
    label_names (`list` of `str`, *optional*): class names indexed by id; when given, `per_class_recall` is keyed
        by name instead of by id, and the class named "Normal" (if any) is the Normal class.

Returns:
    score (`float`): (AS + HS) / 2, the challenge's ranking figure.
    se (`float`): sensitivity; NaN when the references contain no non-Normal sample.
    sp (`float`): specificity (recall of Normal); NaN when the references contain no Normal sample.
    as (`float`): average score (SE + SP) / 2.
    hs (`float`): harmonic score 2·SE·SP / (SE + SP), 0 when SE = SP = 0.
    per_class_recall (`dict`): class id (or name) -> recall; NaN for a class absent from the references.
    confusion_matrix (`list` of `list` of `int`): rows are references, columns are predictions.
    When SE or SP is NaN, AS, HS and Score all equal the recall that is defined.

Examples:
    >>> metric = evaluate.load("hub_dataset/sprsound_score")
    >>> results = metric.compute(predictions=[0, 0, 1, 2], references=[0, 1, 1, 1], num_labels=3)
    >>> round(results["score"], 4), round(results["se"], 4), results["sp"]
    (0.5833, 0.3333, 1.0)
"""


def _as_class_ids(values, field: str) -> np.ndarray:
    """Turn one input (list, tuple, NumPy array, CPU tensor) into a 1-D int64 array, or raise a clear error."""
    try:
        array = np.asarray(values)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"`{field}` must be a 1-D sequence of integer class ids: {error}") from None
    if array.ndim != 1:
        hint = " (logits or probabilities? take the argmax over the last axis first)" if array.ndim == 2 else ""
        raise ValueError(f"`{field}` must be a 1-D sequence of integer class ids, got shape {array.shape}{hint}.")
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return array.astype(np.int64)  # e.g. ids that went through a float column
    examples = ", ".join(repr(v) for v in array[:3].tolist())
    hint = " Map class names to ids with the task's label2id first." if array.dtype.kind in "USO" else ""
    raise ValueError(f"`{field}` must hold integer class ids, got {array.dtype} (first values: {examples}).{hint}")


def _resolve_num_labels(
    predictions: np.ndarray,
    references: np.ndarray,
    normal_label: int,
    num_labels: int | None,
    label_names: Sequence[str] | None,
) -> int:
    if label_names is not None:
        if num_labels is not None and num_labels != len(label_names):
            raise ValueError(f"`num_labels` is {num_labels} but `label_names` has {len(label_names)} names.")
        num_labels = len(label_names)
    if num_labels is None:
        return int(max(predictions.max(), references.max(), normal_label)) + 1
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
        raise ValueError(f"`num_labels` must be a positive integer, got {num_labels!r}.")
    return int(num_labels)


def _resolve_normal_label(normal_label: int | None, label_names: list[str] | None) -> int:
    named = label_names.index(NORMAL_NAME) if label_names is not None and NORMAL_NAME in label_names else None
    if normal_label is None:
        return named if named is not None else 0
    if isinstance(normal_label, bool) or not isinstance(normal_label, (int, np.integer)) or normal_label < 0:
        raise ValueError(f"`normal_label` must be a non-negative integer class id, got {normal_label!r}.")
    if named is not None and normal_label != named:
        raise ValueError(
            f"`normal_label` is {normal_label} but `label_names` has {NORMAL_NAME!r} at {named} ({label_names}); "
            "leave `normal_label` out to use the named class, or pass the one that agrees."
        )
    return int(normal_label)


def _recall(correct: float, total: float) -> float:
    return float(correct / total) if total else math.nan


def compute_sprsound_score(
    predictions,
    references,
    normal_label: int | None = None,
    num_labels: int | None = None,
    label_names: Sequence[str] | None = None,
    sample_weight=None,
) -> dict:
    """Compute the SPRSound Score and its parts; see the module docstring for the definition.

    Args:
        predictions: predicted class ids, one per sample (list, tuple, NumPy array or CPU tensor).
        references: ground-truth class ids, same length as ``predictions``.
        normal_label: class id of Normal; every other class counts as non-Normal. Default: the index of
            ``"Normal"`` in ``label_names``, else 0.
        num_labels: number of classes; inferred from ``label_names`` or the data when omitted.
        label_names: class names indexed by id, used as the keys of ``per_class_recall``; ``"Normal"`` among
            them names the Normal class.
        sample_weight: a non-negative weight per sample (default 1 each): the Score of a set with another class
            mix, e.g. Poor Quality at its deployment prevalence. The confusion matrix then sums weights (floats).

    Returns:
        A dict with ``score``, ``se``, ``sp``, ``as``, ``hs`` (floats), ``per_class_recall`` (dict keyed by class
        id, or by name when ``label_names`` is given) and ``confusion_matrix`` (nested lists, rows = references).

    Raises:
        ValueError: empty or mismatched inputs, non-integer ids, ids outside ``[0, num_labels)``, or inconsistent
            ``normal_label`` / ``num_labels`` / ``label_names`` (e.g. ``normal_label=0`` with "Normal" at 1).
    """
    predictions = _as_class_ids(predictions, "predictions")
    references = _as_class_ids(references, "references")
    if len(predictions) != len(references):
        raise ValueError(
            f"`predictions` has {len(predictions)} items but `references` has {len(references)}: they must pair up."
        )
    if len(references) == 0:
        raise ValueError("`predictions` and `references` are empty: the Score needs at least one sample.")
    if label_names is not None:
        label_names = [str(name) for name in label_names]
        if len(set(label_names)) != len(label_names):
            raise ValueError(f"`label_names` must be unique, got {label_names}.")
    normal_label = _resolve_normal_label(normal_label, label_names)
    num_labels = _resolve_num_labels(predictions, references, normal_label, num_labels, label_names)
    if normal_label >= num_labels:
        raise ValueError(
            f"`normal_label` is {normal_label} but there are only {num_labels} classes (ids 0..{num_labels - 1})."
        )
    for field, ids in (("predictions", predictions), ("references", references)):
        outside = np.unique(ids[(ids < 0) | (ids >= num_labels)])
        if outside.size:
            raise ValueError(
                f"`{field}` contains class ids {outside.tolist()} outside the valid range 0..{num_labels - 1} "
                f"({num_labels} classes)."
            )

    if sample_weight is None:
        confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
        np.add.at(confusion, (references, predictions), 1)
    else:
        weights = np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != references.shape or not np.all(np.isfinite(weights)) or weights.min() < 0:
            raise ValueError(f"`sample_weight` must be one finite, non-negative weight per sample ({len(references)}), "
                             f"got shape {weights.shape}.")
        confusion = np.zeros((num_labels, num_labels), dtype=np.float64)
        np.add.at(confusion, (references, predictions), weights)
    support = confusion.sum(axis=1)
    correct = np.diag(confusion)

    abnormal = np.arange(num_labels) != normal_label
    se = _recall(correct[abnormal].sum(), support[abnormal].sum())
    sp = _recall(correct[normal_label], support[normal_label])
    if math.isnan(se) or math.isnan(sp):
        missing = "non-Normal" if math.isnan(se) else "Normal"
        warnings.warn(
            f"The references contain no {missing} sample, so {'SE' if math.isnan(se) else 'SP'} is undefined (NaN); "
            "AS, HS and Score fall back to the recall that is defined.",
            stacklevel=2,
        )
        average = harmonic = sp if math.isnan(se) else se
    else:
        average = (se + sp) / 2
        harmonic = 2 * se * sp / (se + sp) if se + sp > 0 else 0.0

    keys = label_names if label_names is not None else list(range(num_labels))
    return {
        "score": (average + harmonic) / 2,
        "se": se,
        "sp": sp,
        "as": average,
        "hs": harmonic,
        "per_class_recall": {key: _recall(correct[i], support[i]) for i, key in enumerate(keys)},
        "confusion_matrix": confusion.tolist(),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SprsoundScore(evaluate.Metric):
    """`evaluate` wrapper around :func:`compute_sprsound_score` (spelled so that ``metric.name`` is
    ``sprsound_score``, the folder's name)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            format="numpy",
            reference_urls=["https://github.com/SJTU-YONGFU-RESEARCH-GRP/SPRSound"],
        )

    # Both overrides validate before `evaluate` encodes to int64, which would silently truncate 0.5 to 0.
    # (`evaluate` appends the inputs description to their docstrings, so they must have one.)
    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of class ids, checked to be integers."""
        if predictions is not None:
            predictions = _as_class_ids(predictions, "predictions")
        if references is not None:
            references = _as_class_ids(references, "references")
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one class id pair, checked to be integers."""
        if prediction is not None:
            prediction = _as_class_ids([prediction], "prediction")[0]
        if reference is not None:
            reference = _as_class_ids([reference], "reference")[0]
        super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references, normal_label=None, num_labels=None, label_names=None) -> dict:
        return compute_sprsound_score(
            predictions, references, normal_label=normal_label, num_labels=num_labels, label_names=label_names
        )
