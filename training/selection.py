"""Choices made on cross-validation: each fold's out-of-fold predictions (what ``train.py`` writes beside a run's
results.json) and the deployment decision they favour, a logit adjustment (``RespSTFConfig.logit_adjustment``, per-class
offsets) with at most a given share of normal recordings called Poor Quality."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import EvalPrediction

from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset import POOR_QUALITY_LABEL, TASKS, load_sprsound
from respstf.hub_dataset.sprsound_score import compute_sprsound_score
from respstf.modeling import RespSTFForAudioClassification

from .data import featurize
from .metrics import make_compute_metrics
from .model_setup import class_names

# The share of normal recordings a shipped record model may call Poor Quality is 3 % (the cross-validation issue);
# the choice keeps half of it on the pooled folds, as unseen patients and another prevalence move it.
MAX_NORMALS_POOR_QUALITY = 0.015
# The share of Poor Quality recordings the decision is made for: 9.1 % of SPRSound's train, 2.3 % of its inter-patient
# test, fewer still where recordings are checked at the bedside. At this prevalence a Poor Quality call costs mostly
# normal and adventitious recordings, so the decision trades little of it for them.
DEPLOYMENT_POOR_QUALITY = 0.02
OFFSET_GRID = np.round(np.arange(-3.0, 2.01, 0.25), 2)
EVAL_BATCH = 64  # train.py's per_device_eval_batch_size


def predictions_path(run_dir: str | Path, split: str) -> Path:
    return Path(run_dir) / f"predictions_{split}.npz"


def write_predictions(run_dir: str | Path, split: str, prediction) -> Path | None:
    """``predictions_<split>.npz`` in ``run_dir`` from ``Trainer.predict``'s output: a classifier's logits
    ``(rows, classes)`` and the rows' labels ``(rows,)``, in the split's row order. None (nothing written) for an
    event detector, whose frame logits are not one answer per row."""
    logits, labels = (value[0] if isinstance(value, tuple) else value
                      for value in (prediction.predictions, prediction.label_ids))
    if np.ndim(logits) != 2:
        return None
    return save_predictions(run_dir, split, logits, labels)


def save_predictions(folder: str | Path, split: str, logits: np.ndarray, labels: np.ndarray) -> Path:
    """``predictions_<split>.npz`` in ``folder`` (returned): ``logits`` ``(rows, classes)`` and ``labels`` ``(rows,)``, in
    the split's row order, as `read_predictions` reads them."""
    path = predictions_path(folder, split)
    np.savez(path, logits=np.asarray(logits, dtype=np.float32), labels=np.asarray(labels, dtype=np.int64))
    return path


def read_predictions(run_dir: str | Path, split: str = "validation") -> tuple[np.ndarray, np.ndarray]:
    """``(logits, labels)`` a run (`write_predictions`) or a shipped fold ensemble (`save_predictions`) wrote for
    ``split``.

    Raises:
        FileNotFoundError: there are none (a run scored before train.py wrote them: score it again with --do_train
            false; an ensemble shipped before they were kept: ship it again).
    """
    path = predictions_path(run_dir, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions; score the run again (train.py --from {run_dir} --output_dir "
                                f"{run_dir} --do_train false, with its --cv_fold), or for a fold ensemble ship it again "
                                "(benchmarks/sprsound_score.py --cv_folds ... --copy_to), to write them.")
    with np.load(path) as saved:
        return saved["logits"], saved["labels"]


def adjusted_predictions(logits: np.ndarray, offsets: Sequence[float]) -> np.ndarray:
    """The class each row gets with ``offsets`` added to its log-probabilities (as the model adds
    ``config.logit_adjustment``)."""
    logits = np.asarray(logits, dtype=np.float64)
    log_probabilities = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    return (log_probabilities + np.asarray(offsets)).argmax(axis=1)


def prevalence_weights(labels: np.ndarray, poor: int, prevalence: float) -> np.ndarray:
    """Per-recording weights under which Poor Quality (class ``poor``) is ``prevalence`` of ``labels``, the other
    classes keeping their mix."""
    is_poor = labels == poor
    if not is_poor.any() or is_poor.all():
        return np.ones(len(labels))
    return np.where(is_poor, prevalence / (1 - prevalence) * (~is_poor).sum() / is_poor.sum(), 1.0)


def fold_figures(folds: Sequence[tuple[np.ndarray, np.ndarray]], offsets: Sequence[float], label_names: Sequence[str],
                 normal_label: str, poor_quality_prevalence: float = DEPLOYMENT_POOR_QUALITY) -> dict:
    """Each fold's Score with ``offsets`` (``scores``) and with its Poor Quality recordings weighted to
    ``poor_quality_prevalence`` (``deployment_scores``; the same where the classes have no Poor Quality), their means
    (``mean``, ``deployment_mean``), and over all folds the normal recordings called Poor Quality
    (``normals_called_poor_quality`` of ``normals``; 0 where the classes have no Poor Quality)."""
    normal = list(label_names).index(normal_label)
    poor = list(label_names).index(POOR_QUALITY_LABEL) if POOR_QUALITY_LABEL in label_names else None
    scores, deployment, called, normals = [], [], 0, 0
    for logits, labels in folds:
        predicted = adjusted_predictions(logits, offsets)

        def score(weights=None) -> float:
            return compute_sprsound_score(predicted, labels, normal_label=normal, num_labels=len(label_names),
                                          sample_weight=weights)["score"]

        scores.append(score())
        deployment.append(scores[-1] if poor is None else score(prevalence_weights(labels, poor, poor_quality_prevalence)))
        normals += int(np.sum(labels == normal))
        if poor is not None:
            called += int(np.sum((labels == normal) & (predicted == poor)))
    return {"scores": scores, "mean": float(np.mean(scores)), "deployment_scores": deployment,
            "deployment_mean": float(np.mean(deployment)), "normals_called_poor_quality": called, "normals": normals}


def choose_logit_adjustment(folds: Sequence[tuple[np.ndarray, np.ndarray]], label_names: Sequence[str],
                            normal_label: str, max_normals_poor_quality: float = MAX_NORMALS_POOR_QUALITY,
                            poor_quality_prevalence: float = DEPLOYMENT_POOR_QUALITY,
                            grid: Sequence[float] = OFFSET_GRID, passes: int = 4, tolerance: float = 0.002) -> dict:
    """The per-class logit offsets with the best mean Score over the folds, Poor Quality weighted to
    ``poor_quality_prevalence`` (the prevalence the decision is made for), among those whose pooled normal recordings
    are called Poor Quality at most ``max_normals_poor_quality`` of the time (where the classes have Poor Quality).

    The normal class stays at 0 (only differences between offsets matter). Poor Quality's offset is tried at every
    ``grid`` value; for each, the other classes' offsets by coordinate ascent over ``grid`` from 0, one class at a time,
    for at most ``passes`` rounds. Of the results within ``tolerance`` of the best mean Score (a gain smaller than that
    is noise across a few hundred recordings per fold), the one with the smallest offsets (sum of absolute values) is
    kept. Offsets that meet the Poor Quality limit always win over offsets that do not.

    Args:
        folds: each fold's ``(logits (rows, classes), labels (rows,))`` on its own patients (`read_predictions`).

    Returns:
        ``{"offsets": [...], "chosen": fold_figures(...), "before": fold_figures(...) without offsets,
        "allowed": whether the chosen offsets meet the limit, "poor_quality_prevalence": ...}``.
    """
    label_names = list(label_names)
    normal = label_names.index(normal_label)
    poor = label_names.index(POOR_QUALITY_LABEL) if POOR_QUALITY_LABEL in label_names else None

    def figures(candidate) -> dict:
        return fold_figures(folds, candidate, label_names, normal_label, poor_quality_prevalence)

    def rank(result: dict) -> tuple[bool, float]:
        """Meeting the limit first, then the mean Score."""
        return result["normals_called_poor_quality"] <= max_normals_poor_quality * result["normals"], result["deployment_mean"]

    def ascend(offsets: np.ndarray) -> tuple[np.ndarray, dict]:
        best = figures(offsets)
        best_allowed, best_mean = rank(best)
        for _ in range(passes):
            moved = False
            for index in range(len(label_names)):
                if index in (normal, poor):
                    continue
                for value in sorted(grid, key=abs):
                    candidate = offsets.copy()
                    candidate[index] = value
                    result = figures(candidate)
                    if rank(result) > (best_allowed, best_mean + 1e-9):
                        offsets, best, moved = candidate, result, True
                        best_allowed, best_mean = rank(result)
            if not moved:
                break
        return offsets, best

    starts = [np.eye(len(label_names))[poor] * value for value in grid] if poor is not None else [np.zeros(len(label_names))]
    results = [ascend(start) for start in starts]
    best_rank = max(rank(result) for _, result in results)
    near = [(offsets, result) for offsets, result in results
            if rank(result)[0] == best_rank[0] and rank(result)[1] >= best_rank[1] - tolerance]
    offsets, chosen = min(near, key=lambda pair: (np.abs(pair[0]).sum(), -rank(pair[1])[1]))
    return {"offsets": [float(value) for value in offsets], "chosen": chosen, "before": figures(np.zeros(len(label_names))),
            "allowed": bool(best_rank[0]), "poor_quality_prevalence": poor_quality_prevalence}


def score_checkpoint(folder: str | Path, sprsound_root: str | Path, task: str, split: str,
                     scalograms: dict | None = None, rows: Sequence[int] | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """A task checkpoint (one model or a fold ensemble, with its ``logit_adjustment``) classifying an SPRSound split
    as train.py scores one: the task's rows, scalograms by `featurize` (the checkpoint's extractor), the model in eval
    mode and the official metric (`make_compute_metrics`).

    Args:
        scalograms: a cache shared between calls, by level, split, rows and extractor settings (Tasks 1-1 and 1-2,
            2-1 and 2-2, read the same rows).
        rows: only these rows of the split, in this order (e.g. a sample of it; the metrics are then the sample's);
            all of them when None.

    Returns:
        ``(metrics with "rows", logits (rows, classes), labels (rows,))``.

    Raises:
        ValueError: the checkpoint's classes are not the task's.
    """
    model = RespSTFForAudioClassification.from_pretrained(folder).eval()
    extractor = RespSTFFeatureExtractor.from_pretrained(folder)
    label_names, column = class_names(model.config), TASKS[task]["column"]
    dataset = load_sprsound(sprsound_root, task=task, splits=[split], decode=False, progress=False)[split]
    if dataset.features[column].names != label_names:
        raise ValueError(f"{folder}: its classes {label_names} are not Task {task}'s {dataset.features[column].names}.")
    if rows is not None:
        dataset = dataset.select(rows)
    scalograms = {} if scalograms is None else scalograms
    key = (TASKS[task]["level"], split, None if rows is None else tuple(rows), extractor.to_json_string())
    if key not in scalograms:
        features = featurize(dataset, extractor, column, with_frames=False).with_format("torch")
        scalograms[key] = features["input_features"], features["attention_mask"]
    inputs, masks = scalograms[key]
    with torch.no_grad():
        logits = torch.cat([model(input_features=inputs[start:start + EVAL_BATCH],
                                  attention_mask=masks[start:start + EVAL_BATCH]).logits
                            for start in range(0, len(inputs), EVAL_BATCH)]).numpy()
    labels = np.asarray(dataset[column])
    metrics = make_compute_metrics(label_names, "Normal")(EvalPrediction(predictions=logits, label_ids=labels))
    return {**metrics, "rows": len(labels)}, logits, labels
