"""Training library of RespSTF: what ``train.py`` wires together, for scripts and benchmarks to call directly.

* `arguments` — checks and defaults of the run's options (levels, resume, record crops);
* `data` — the splits (a patient-disjoint validation split), label columns and scalograms of a run;
* `crops` — `RecordCrops`, training recordings drawn whole or as labelled windows;
* `model_setup` — the model and feature extractor (new or ``--from`` a checkpoint) and the loss's class weights;
* `trainer` — `RespSTFTrainer` (class-weighted loss, the detector's `adventitious_frame_loss`) and `TrainingClock`;
* `metrics` — the official Score and per-class recalls as validation metrics, confusion plots;
* `card` — results.json, the model card and the Hub upload;
* `selection` — out-of-fold predictions and the logit adjustment chosen on them;
* `cli` — user errors as one line.
"""

from .arguments import (
    CV_FOLDS, LEVEL_FEATURES, RECORD_DEFAULTS, RECORD_SECONDS, check_arguments, check_checkpoint_source, complete_checkpoints,
    implied_by_evaluation_schedule, options_given, resolve_level, resolve_record_options, resolve_resume,
)
from .card import SHORTER_INPUT, describe_selection, hub_repo_name, mean_and_sd, push_folder, write_model_card, write_results
from .cli import run_cli
from .crops import MIN_EVENT_SECONDS_IN_CROP, RecordCrops, crop_frames
from .data import (
    add_validation_split, align_with_model, carve_validation, detection_class_weights, featurize, frame_targets, limit_and_check_splits, load_training_data,
    report_row_lengths, resolve_eval_splits, resolve_label_column, warn_shared_patients,
)
from .metrics import (
    check_selection_class, check_selection_metric, evaluation_setup, make_compute_metrics, make_detection_metrics, make_score, plot_confusion, recall_keys,
)
from .model_setup import (
    IMBALANCE_SCHEMES, build_model_and_extractor, check_checkpoint_labels, class_names, class_weights, loss_class_weights,
    resolve_normal_label,
)
from .selection import (
    DEPLOYMENT_POOR_QUALITY, MAX_NORMALS_POOR_QUALITY, choose_logit_adjustment, fold_figures, predictions_path, read_predictions, save_predictions,
    score_checkpoint, write_predictions,
)
from .trainer import RespSTFTrainer, TrainingClock, adventitious_frame_loss, describe_device

__all__ = [
    "CV_FOLDS", "IMBALANCE_SCHEMES", "LEVEL_FEATURES", "DEPLOYMENT_POOR_QUALITY", "MAX_NORMALS_POOR_QUALITY", "choose_logit_adjustment", "fold_figures",
    "predictions_path", "read_predictions", "save_predictions", "score_checkpoint", "write_predictions", "MIN_EVENT_SECONDS_IN_CROP", "RECORD_DEFAULTS", "RECORD_SECONDS", "RecordCrops",
    "RespSTFTrainer", "adventitious_frame_loss", "SHORTER_INPUT", "TrainingClock", "add_validation_split", "align_with_model", "build_model_and_extractor",
    "carve_validation", "check_arguments", "check_checkpoint_labels", "check_checkpoint_source", "check_selection_class",
    "check_selection_metric", "class_names", "class_weights", "complete_checkpoints", "crop_frames", "detection_class_weights", "evaluation_setup", "describe_device", "describe_selection", "featurize",
    "frame_targets", "hub_repo_name", "implied_by_evaluation_schedule", "limit_and_check_splits", "load_training_data",
    "loss_class_weights", "make_compute_metrics", "mean_and_sd", "make_detection_metrics", "make_score", "options_given", "plot_confusion", "push_folder", "recall_keys",
    "report_row_lengths", "resolve_eval_splits", "resolve_label_column", "resolve_level", "resolve_normal_label",
    "resolve_record_options", "resolve_resume", "run_cli", "warn_shared_patients", "write_model_card", "write_results",
]
