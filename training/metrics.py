"""Validation metrics (the official SPRSound Score, per-class recalls), selection checks and confusion plots."""

from __future__ import annotations

import re
from pathlib import Path

import evaluate
import numpy as np

from respstf.hub_dataset import SPRSOUND_SCORE_PATH
from respstf.modeling import RespSTFForAudioFrameClassification
from respstf.modeling.detection_respstf import class_indices, real_output_frames, record_decision

def recall_keys(label_names: list[str]) -> list[str]:
    """The metric keys of the classes' recalls, in class order: ``recall_wheeze_crackle`` for ``Wheeze+Crackle``,
    ``recall_湿啰音`` for ``湿啰音`` (any script); names that would share a key get their class id appended."""
    keys = ["recall_" + (re.sub(r"\W+", "_", label).strip("_").lower() or str(index))
            for index, label in enumerate(label_names)]
    return [f"{key}_{index}" if keys.count(key) > 1 else key for index, key in enumerate(keys)]


def check_selection_metric(metric: str, label_names: list[str], detection: bool = False) -> None:
    """``--metric_for_best_model`` must be a key of the validation metrics (the Trainer adds ``eval_``); an event
    detector's (``detection``) also have ``output_frame_f1`` (`make_detection_metrics`)."""
    keys = ["score", "se", "sp", "as", "hs", "loss", *recall_keys(label_names), *(["output_frame_f1"] if detection else [])]
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


def make_score(label_names: list[str], normal_label: str):
    """``score(predictions, references)``: the official Score with SE, SP, AS, HS, each class's recall and the
    confusion matrix, as a flat dict of validation metrics."""
    metric = evaluate.load(SPRSOUND_SCORE_PATH, keep_in_memory=True)
    normal = label_names.index(normal_label)

    def score(predictions, references) -> dict[str, float]:
        result = metric.compute(predictions=predictions, references=references, normal_label=normal, label_names=label_names)
        flat = {key: float(result[key]) for key in ("score", "se", "sp", "as", "hs")}
        for key, name in zip(recall_keys(label_names), label_names):
            flat[key] = float(result["per_class_recall"][name])
        flat["confusion_matrix"] = result["confusion_matrix"]
        return flat

    return score


def make_compute_metrics(label_names: list[str], normal_label: str):
    score = make_score(label_names, normal_label)

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        return score(logits.argmax(-1), eval_pred.label_ids)

    return compute_metrics


def make_detection_metrics(config, frame_stride: int, frame_seconds: float, label_names: list[str], normal_label: str):
    """Validation metrics of an event detector (``config``: its `RespSTFConfig`; ``frame_stride`` input frames of
    ``frame_seconds`` each per output frame): the official Score of the record labels (``label_names``) its frames
    give by ``config.detection``'s rule, and ``output_frame_f1``, the F1 of adventitious (any event type) against
    normal over the output frames whose centre lies inside an annotated event (benchmarks/event_detection.py's frame
    F1 reads the decoded events at 0.1 s frames instead). The Trainer gives the label ids ``(frame labels, attention mask,
    record labels)``."""
    score, detection, id2label = make_score(label_names, normal_label), config.detection, config.id2label
    normal, poor_quality = class_indices(id2label, [detection["normal"], detection["poor_quality"]])

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        frame_labels, attention_mask, references = eval_pred.label_ids
        predicted, hits, truths, calls = [], 0, 0, 0
        for row_logits, row_labels, row_mask in zip(logits, frame_labels, attention_mask):
            frames = real_output_frames(row_mask.sum(), frame_stride)
            logit = row_logits[:frames] - row_logits[:frames].max(-1, keepdims=True)
            probabilities = np.exp(logit) / np.exp(logit).sum(-1, keepdims=True)
            label, _ = record_decision(probabilities, id2label, detection, frame_stride * frame_seconds)
            predicted.append(label_names.index(label))
            centres = row_labels[np.minimum(((np.arange(frames) + 0.5) * frame_stride).astype(int), len(row_labels) - 1)]
            inside = (centres >= 0) & (centres != poor_quality)  # output frames inside annotated events
            truth = centres[inside] != normal
            call = ~np.isin(probabilities.argmax(-1)[inside], [normal, poor_quality])
            hits, truths, calls = hits + int((truth & call).sum()), truths + int(truth.sum()), calls + int(call.sum())
        metrics = score(np.array(predicted), references)
        metrics["output_frame_f1"] = 2 * hits / max(truths + calls, 1)
        return metrics

    return compute_metrics


def evaluation_setup(model, extractor, label_names: list[str], normal_label: str):
    """The Trainer's ``label_names`` and ``compute_metrics`` for ``model``. A classifier's frame_labels are an input
    of its loss, not a prediction target; an event detector's metrics also need its rows' real frames and record
    labels (`make_detection_metrics`)."""
    if not isinstance(model, RespSTFForAudioFrameClassification):
        return ["labels"], make_compute_metrics(label_names, normal_label)
    return (["labels", "attention_mask", "record_labels"],
            make_detection_metrics(model.config, model.frame_stride, extractor.frame_seconds, label_names, normal_label))


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
