"""Train and score RespSTF on an SPRSound task, or fine-tune a trained model on a new respiratory dataset.

Examples::

    # Task 1-2 (event, 7 classes), small preset, on the shared SPRSound copy (CPU is fine)
    python train.py --task 12 --dataset ../shared/data/sprsound --output_dir runs/task12

    # Fine-tune a trained checkpoint on a new labelled folder (its own label set; the head is replaced)
    python train.py --dataset my_recordings/ --from checkpoints/sprsound-task12 --ignore-mismatched \
        --output_dir runs/my-finetune

    # Several GPUs / nodes: the same script through Accelerate
    accelerate launch train.py --task 22 --preset paper --bf16 --output_dir runs/task22-paper

Data: ``--dataset`` is an SPRSound release folder, an ICBHI 2017 folder, a folder saved with ``DatasetDict.save_to_disk``,
a Hub dataset id, or a folder of audio + labels (``metadata.csv`` with ``file,label[,start,end]`` or one subfolder per
label). Model selection (best epoch, early stopping) looks only at a patient-disjoint validation split carved from
``train``; ``--eval_split`` (default: the dataset's ``inter_test`` split on SPRSound, else its ``test`` split, else
none) is scored once at the end and never used for a choice. Each scored split's answers go to predictions_<split>.npz.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from transformers import EarlyStoppingCallback, HfArgumentParser, IntervalStrategy, TrainingArguments, set_seed

from respstf import training
from respstf.hub_dataset import DETECTION_TASK, DatasetSource, normalize_task

logger = logging.getLogger("respstf.train")
DEFAULT_DATASET = str(Path(os.environ.get("RESPSTF_DATA_DIR", Path(__file__).resolve().parent.parent / "shared" / "data")) / "sprsound")


@dataclass
class DataArguments:
    task: str | None = field(
        default=None,
        metadata={"help": "SPRSound task: 11, 12 (event level), 21, 22 (record level), or 'events' (an event detector over whole "
                  "recordings). Leave out for a new dataset with its own labels."},
    )
    dataset: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": "SPRSound release folder, ICBHI 2017 folder, save_to_disk folder, Hub dataset id, or folder of audio + labels."},
    )
    label_column: str | None = field(
        default=None,
        metadata={"help": "Label column (default: the task's column; on ICBHI 'cycle_label', or 'diagnosis' for one row per recording; else 'label')."},
    )
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Split scored once at the end (never used for selection). Default: 'inter_test' where the "
                  "dataset has it (SPRSound), else 'test', else none; 'none' to skip."},
    )
    normal_label: str | None = field(
        default=None,
        metadata={"help": "The class the Score's specificity (SP) is about. Default: 'Normal', else the one class named "
                  "normal or healthy (any case); a dataset without such a class must name it."},
    )
    level: str | None = field(
        default=None,
        metadata={"help": "A dataset without --task: 'event' (the default; each row fitted to a 2.05 s clip) or 'record' "
                  "(whole recordings, zero-padded to 16.4 s with a frame mask). With --from, the checkpoint's level; "
                  "its clip length stays unless --n_frames."},
    )
    on_missing: str = field(
        default="error",
        metadata={"aliases": ["--on-missing"], "help": "A listed audio file that is missing, not audio or cannot be "
                  "decoded: 'error' (the default) or 'skip' (counted and named in a warning)."},
    )
    validation_fraction: float = field(
        default=0.15,
        metadata={"help": "Share of train (whole patients) held out for model selection; 0 trains on all of train (with "
                  "--eval_strategy no: the last weights, epochs chosen beforehand, e.g. on --cv_fold runs)."},
    )
    cv_fold: int | None = field(
        default=None,
        metadata={"help": "Validate on cross-validation fold K (0-4) of train's patients instead: on SPRSound the folds "
                  "shipped with the package (the same for every task), else 5 folds of the dataset's patients."},
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the patient-disjoint validation split."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows (quick runs)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows of validation and eval splits."})
    record_crop_probability: float | None = field(
        default=None,
        metadata={"help": "Record tasks with event timestamps and --task events: chance that a training recording is "
                  "replaced by a random window of it, labelled from the events inside (default 0.5, for --task events "
                  "0; 0 = always whole recordings)."},
    )
    record_crop_min_seconds: float | None = field(default=None, metadata={"help": "Shortest such window (default 3 seconds)."})
    record_pair_probability: float | None = field(
        default=None,
        metadata={"help": "Chance that such a window is followed by a window of another training recording, the pair "
                  "labelled from the events of both (e.g. a wheeze then a crackle: CAS & DAS; default 0)."},
    )


@dataclass
class ModelArguments:
    preset: str | None = field(
        default=None,
        metadata={"help": "Size of a new model: 'small' (the default; CPU-trainable) or 'paper' (sized like the paper's "
                  "model). Not with --from: a checkpoint keeps its size."},
    )
    from_checkpoint: str | None = field(
        default=None, metadata={"aliases": ["--from"], "help": "Start from this RespSTF checkpoint (folder or Hub id)."}
    )
    from_member: int = field(default=0, metadata={"help": "With --from a fold ensemble (a bundled task checkpoint): the member to fine-tune."})
    ignore_mismatched: bool = field(
        default=False,
        metadata={"aliases": ["--ignore_mismatched_sizes"], "help": "Replace the checkpoint's head when its label set differs."},
    )
    imbalance: str = field(
        default="weights",
        metadata={"help": "Class imbalance: 'weights' (inverse sqrt frequency), 'score' (the normal class and the others "
                  "weigh half each, like SP and SE in the Score), 'focal', or 'none'."},
    )
    frame_supervision: bool | None = field(
        default=None, metadata={"help": "Record tasks: also learn frame labels from the event timestamps (default true)."}
    )
    frequency_focus_frames: int | None = field(
        default=None,
        metadata={"help": "Backbone frames (odd) each frame's frequency focusing reads, e.g. 9 (2.3 s at 256 ms frames) "
                  "for an event detector over whole recordings. Default: the --from checkpoint's, else the whole input."},
    )
    stage_time_pool: list[int] | None = field(
        default=None,
        metadata={"help": "Time pooling after each backbone stage, one factor a stage (the model's own: 2 2 2), e.g. 2 2 1 "
                  "for an event detector's output frames of 128 ms instead of 256 ms; also with --from (no weights change)."},
    )
    adventitious_loss_weight: float = field(
        default=0.0,
        metadata={"help": "--task events: add this times a frame loss on adventitious (any event type but Normal) against "
                  "Normal, both groups of frames weighing alike (default 0: none)."},
    )
    early_stopping_patience: int = field(default=5, metadata={"help": "Evaluations without a better validation Score before stopping."})


@dataclass
class FeatureArguments:
    """The front end of a new model; a --from checkpoint keeps its own (only --n_frames may change its clip)."""

    n_scales: int | None = field(default=None, metadata={"help": "CWT scales (default 64 small / 128 paper)."})
    hop_length: int | None = field(default=None, metadata={"help": "Samples per frame (default by level)."})
    n_frames: int | None = field(
        default=None, metadata={"help": "Frames per example (default by level; with --from, the checkpoint's)."}
    )
    fmin: float | None = field(default=None, metadata={"help": "Lowest CWT centre frequency (default 50 Hz)."})
    fmax: float | None = field(default=None, metadata={"help": "Highest CWT centre frequency (default 3900 Hz)."})


@dataclass
class RespSTFTrainingArguments(TrainingArguments):
    """`TrainingArguments` with defaults that suit this model (see ``--help`` for all of them)."""

    output_dir: str = field(default="runs/respstf", metadata={"help": "Where checkpoints, the final model and results go."})
    do_train: bool = field(
        default=True,
        metadata={"help": "'false' scores the --from model on validation and --eval_split without training "
                  "(e.g. a model trained on another machine); the scores are merged into output_dir/results.json."},
    )
    eval_strategy: str = field(default="epoch", metadata={"help": "When to score the validation split."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save a checkpoint (resume granularity)."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Keep the checkpoint with the best validation --metric_for_best_model (at each evaluation)."})
    metric_for_best_model: str = field(
        default="score",
        metadata={"help": "Selection metric: score (official SPRSound Score), se, sp, as, hs, loss or recall_<class>."},
    )
    greater_is_better: bool | None = field(
        default=None, metadata={"help": "Default: lower is better for a loss, higher for every other metric."}
    )
    num_train_epochs: float = field(default=20.0, metadata={"help": "Epochs."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    # A fraction of training: transformers 5 takes it as a float warmup_steps, 4.x as warmup_ratio.
    if "warmup_ratio" in TrainingArguments.__dataclass_fields__:
        warmup_ratio: float = field(default=0.05, metadata={"help": "Warm-up, as a fraction of training."})
    else:
        warmup_steps: float = field(default=0.05, metadata={"help": "Warm-up steps (a float < 1 is a fraction of training)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device for training."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Batch size per device for evaluation."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best is always kept)."})
    logging_steps: float = field(default=20, metadata={"help": "Log every N steps."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "A checkpoint folder to resume from, or 'last' (or 'true') for the newest in output_dir."},
    )
    push_to_hub: bool = field(
        default=False,
        metadata={"help": "Upload the output folder (model, card, results; no checkpoint-* folders) to --hub_model_id "
                  "(default: the output folder's name) once, at the end of the run; --hub_revision names a branch."},
    )


def parse_args(argv: list[str] | None = None):
    parser = HfArgumentParser((DataArguments, ModelArguments, FeatureArguments, RespSTFTrainingArguments))
    parser.description = __doc__.split("\n\n")[0]
    argv = list(sys.argv[1:] if argv is None else argv)
    return parser.parse_args_into_dataclasses(args=argv + training.implied_by_evaluation_schedule(parser, argv))


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    data_args, model_args, feature_args, training_args = parse_args(argv)
    # Under torchrun / accelerate launch every process runs this script: one of them reports.
    logging.getLogger("respstf").setLevel(logging.INFO if training_args.should_log else logging.ERROR)
    task = normalize_task(data_args.task) if data_args.task else None
    detection = task == DETECTION_TASK  # frames' classes to learn; rows keep their record label for validation
    training.check_arguments(data_args, model_args, training_args)
    if not model_args.from_checkpoint:  # a checkpoint keeps its own size
        model_args.preset = model_args.preset or "small"
    level = training.resolve_level(data_args.level, task, model_args.from_checkpoint)
    resume = training.resolve_resume(training_args)
    repo_name = training.hub_repo_name(training_args) if training_args.push_to_hub else None
    set_seed(training_args.seed)

    source = DatasetSource.detect(data_args.dataset)
    with training_args.main_process_first(desc="loading the dataset"):
        data = training.load_training_data(source, task, data_args.label_column, data_args.on_missing)
    label_column, label_names = training.resolve_label_column(data, source, data_args.label_column, task)
    if not training_args.do_train and not detection:
        data, label_names = training.align_with_model(data, label_column, label_names, model_args.from_checkpoint)
    normal_label = training.resolve_normal_label(label_names, data_args.normal_label)
    logger.info("Classes %s; the Score's SP is the recall of %r.", label_names, normal_label)
    training.check_selection_metric(training_args.metric_for_best_model, label_names, detection)
    record_data = level == "record" and "events" in data["train"].column_names and not detection
    training.resolve_record_options(data_args, model_args, record_data, detection)
    with_frames = record_data and model_args.frame_supervision

    training.add_validation_split(data, source, label_column, data_args.validation_fraction, data_args.split_seed,
                                  data_args.on_missing, data_args.cv_fold)
    eval_splits = training.resolve_eval_splits(data, data_args.eval_split, data_args.dataset)
    scored = [name for name in ["validation", *eval_splits] if name in data]  # no validation: --validation_fraction 0
    training.warn_shared_patients(data, scored)
    training.limit_and_check_splits(data, scored, data_args.dataset, data_args.max_train_samples,
                                    data_args.max_eval_samples, training_args.seed)
    if "validation" in data:
        training.check_selection_class(training_args.metric_for_best_model, label_names, data["validation"][label_column])

    class_weights = (training.detection_class_weights(data["train"], model_args.imbalance) if detection else
                     training.loss_class_weights(data["train"][label_column], label_names, model_args.imbalance, normal_label))
    model, extractor = training.build_model_and_extractor(model_args, feature_args, task, label_names, level, with_frames,
                                                          training_args.do_train)
    cropped = training_args.do_train and (with_frames or detection) and data_args.record_crop_probability > 0
    crop_frames = training.crop_frames(extractor, data_args.record_crop_min_seconds) if cropped else None
    logger.info("model: %s parameters; features %s", f"{model.num_parameters():,}", extractor.to_dict())
    featurized = (["train"] if training_args.do_train else []) + scored
    # Each process computes the scalograms on its own device, at the same time (the device is part of the cache key).
    prepared = datasets.DatasetDict({name: training.featurize(data[name], extractor, label_column, with_frames,
                                                              str(training_args.device), detection) for name in featurized})
    training.report_row_lengths(prepared, extractor, new_dataset=task is None)
    prepared = prepared.remove_columns(["seconds", "silent"]).with_format("torch")

    train_dataset = prepared["train"] if training_args.do_train else None
    if cropped:
        train_dataset = training.RecordCrops(train_dataset, task, label_names, data_args.record_crop_probability,
                                             *crop_frames, pair_probability=data_args.record_pair_probability)
    training_args.label_names, compute_metrics = training.evaluation_setup(model, extractor, label_names, normal_label)
    training_args.push_to_hub = False  # pushed below, with our model card and the code files
    clock = training.TrainingClock.resumed_from(resume)
    if "validation" not in prepared:  # --validation_fraction 0: nothing to evaluate on (also when only scoring)
        training_args.eval_strategy = IntervalStrategy.NO
    stopping = model_args.early_stopping_patience and training_args.eval_strategy != "no"
    trainer = training.RespSTFTrainer(
        model=model, args=training_args, train_dataset=train_dataset, eval_dataset=prepared.get("validation"),
        compute_metrics=compute_metrics, class_weights=class_weights, adventitious_loss_weight=model_args.adventitious_loss_weight,
        callbacks=[clock, *([EarlyStoppingCallback(model_args.early_stopping_patience)] if stopping else [])],
    )
    output_dir = Path(training_args.output_dir)
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"  # autocast in training and scoring
    device = training.describe_device(training_args.device, precision)
    summary = {
        "task": task, "labels": label_names, "normal_label": normal_label, "dataset": data_args.dataset,
        "preset": model_args.preset,  # None for a fine-tuned model: it has its parent's
        "from": model_args.from_checkpoint, "cv_fold": data_args.cv_fold, "parameters": model.num_parameters(), "train_rows": 0, "global_step": 0,
        "train_runtime_s": None, "device": device,
        "selection": training.describe_selection(training_args, model_args.from_checkpoint),
        "record_crop_probability": data_args.record_crop_probability if cropped else 0.0,
        "record_pair_probability": data_args.record_pair_probability if cropped else 0.0,
        "adventitious_loss_weight": model_args.adventitious_loss_weight,
        "results": {},
    }
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=resume)
        summary.update(train_rows=len(train_dataset), global_step=train_result.global_step,
                       train_runtime_s=clock.seconds_before + train_result.metrics["train_runtime"])
    in_place = Path(model_args.from_checkpoint or "").resolve() == output_dir.resolve()
    if not training_args.do_train and in_place and (output_dir / "results.json").is_file():
        summary = json.loads((output_dir / "results.json").read_text())  # scoring a trained run: keep how it was trained
    if training_args.do_train or not in_place:
        trainer.save_model(str(output_dir))  # called by every process; the main one writes
        if trainer.is_world_process_zero():
            extractor.save_pretrained(str(output_dir))
            (output_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle: ship safetensors/JSON only
    for name in scored:
        prediction = trainer.predict(prepared[name], metric_key_prefix=name)  # every process takes its share
        metrics = {key.removeprefix(f"{name}_"): value for key, value in prediction.metrics.items()}
        summary["results"][name] = {**metrics, "rows": len(prepared[name]), "device": device}
        if trainer.is_world_process_zero():  # the rows' answers, for choices made on cross-validation
            training.write_predictions(output_dir, name, prediction)
    if not trainer.is_world_process_zero():
        return summary
    for name in scored:
        metrics = summary["results"][name]
        training.plot_confusion(metrics["confusion_matrix"], label_names, f"{name}: Score {metrics['score']:.3f}",
                                output_dir / f"confusion_{name}.png")
    training.write_results(output_dir, summary)
    # The folder is complete before any upload; the card's snippet names the repo once its full id is known.
    card_repo_id = repo_name if repo_name and "/" in repo_name else None
    training.write_model_card(output_dir, summary, card_repo_id)
    for name, r in summary["results"].items():
        logger.info("%s: Score %.3f (SE %.3f, SP %.3f, AS %.3f, HS %.3f)", name, r["score"], r["se"], r["sp"], r["as"], r["hs"])
    if repo_name:
        training.push_folder(output_dir, summary, repo_name, card_repo_id, training_args)
    return summary


if __name__ == "__main__":
    training.run_cli(main)
