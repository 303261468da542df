"""Validation metrics (the official SPRSound Score, per-class recalls), selection checks and confusion plots."""

from __future__ import annotations

import re
from pathlib import Path

import evaluate
import numpy as np

from respstf.hub_dataset import SPRSOUND_SCORE_PATH

def recall_keys(label_names: list[str]) -> list[str]:
    """The metric keys of the classes' recalls, in class order: ``recall_wheeze_crackle`` for ``Wheeze+Crackle``,
    ``recall_湿啰音`` for ``湿啰音`` (any script); names that would share a key get their class id appended."""
    keys = ["recall_" + (re.sub(r"\W+", "_", label).strip("_").lower() or str(index))
            for index, label in enumerate(label_names)]
    return [f"{key}_{index}" if keys.count(key) > 1 else key for index, key in enumerate(keys)]


def check_selection_metric(metric: str, label_names: list[str]) -> None:
    """``--metric_for_best_model`` must be a key of the validation metrics (the Trainer adds ``eval_``)."""
    keys = ["score", "se", "sp", "as", "hs", "loss", *recall_keys(label_names)]
    if metric.removeprefix("eval_") not in keys:
        raise ValueError(f"--metric_for_best_model {metric!r} is not a validation metric; expected one of {', '.join(keys)}.")


def check_selection_class(metric: str, label_names: list[str], validation_labels: list[int]) -> None:
    """Selecting on one class's recall needs that class in validation: without it the recall is NaN at every
    evaluation, no checkpoint is ever better, and the last weights would ship as if chosen."""
    keys = recall_keys(label_names)
    metric = metric.removeprefix("eval_")
    if metric not in keys:
        return
    selected = keys.index(metric)
    if selected not in set(validation_labels):
        raise ValueError(f"--metric_for_best_model {metric}: the validation split has no {label_names[selected]!r} "
                         "rows, so that recall is undefined at every evaluation; choose another metric, or another "
                         "--split_seed or --validation_fraction.")


def make_compute_metrics(label_names: list[str], normal_label: str):
    metric = evaluate.load(SPRSOUND_SCORE_PATH, keep_in_memory=True)
    normal = label_names.index(normal_label)

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        result = metric.compute(
            predictions=logits.argmax(-1), references=eval_pred.label_ids, normal_label=normal, label_names=label_names
        )
        flat = {key: float(result[key]) for key in ("score", "se", "sp", "as", "hs")}
        for key, name in zip(recall_keys(label_names), label_names):
            flat[key] = float(result["per_class_recall"][name])
        flat["confusion_matrix"] = result["confusion_matrix"]
        return flat

    return compute_metrics


def plot_confusion(matrix: list[list[int]], label_names: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.1 * len(label_names) + 2.5, 1.0 * len(label_names) + 2))
    ax.imshow(counts / np.maximum(counts.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for (row, col), value in np.ndenumerate(counts):
        ax.text(col, row, str(value), ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(label_names)), label_names, rotation=35, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
