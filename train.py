"""Train and score RespSTF on an SPRSound task, or fine-tune a trained model on a new respiratory dataset.

Examples::

    # Task 1-2 (event, 7 classes), small preset, on the shared SPRSound copy (CPU is fine)
    python train.py --task 12 --dataset ../shared/data/sprsound --output_dir runs/task12

    # Fine-tune a trained checkpoint on a new labelled folder (its own label set; the head is replaced)
    python train.py --dataset my_recordings/ --from checkpoints/sprsound-task12 --ignore-mismatched \
        --output_dir runs/my-finetune

    # Several GPUs / nodes: the same script through Accelerate
    accelerate launch train.py --task 22 --preset paper --bf16 --output_dir runs/task22-paper

Data: ``--dataset`` is an SPRSound release folder, an ICBHI 2017 folder, a folder saved with
``DatasetDict.save_to_disk``, a Hub dataset id, or a folder of audio + labels (``metadata.csv`` with
``file,label[,start,end]`` or one subfolder per label). Model selection (best epoch, early stopping)
looks only at a patient-disjoint validation split carved from ``train``; ``--eval_split`` (default: the
dataset's ``inter_test`` split on SPRSound, else its ``test`` split, else none) is scored once at the end
and never used for a choice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import evaluate
import numpy as np
import torch
from huggingface_hub import EvalResult, ModelCardData, create_branch, create_repo, get_token, upload_folder
from huggingface_hub import constants as hub_constants
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import (
    AutoFeatureExtractor,
    EarlyStoppingCallback,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import get_last_checkpoint

import respstf.hub_dataset as hub_dataset
from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset.folder import METADATA_FILES
from respstf.hub_dataset.sprsound import find_splits
from respstf.hub_dataset.labels import (
    FRAME_LABELS, NORMAL_LABEL, TASKS, frame_label, normalize_task, record_label_from_frame_labels, record_task_label,
)
from respstf.modeling import RespSTFConfig, RespSTFForAudioClassification

logger = logging.getLogger("respstf.train")
DEFAULT_DATASET = str(Path(__file__).resolve().parent.parent / "shared" / "data" / "sprsound")
# Front-end settings per annotation level: events are short (median 1.2 s, 95% < 2.4 s) and are
# tiled to a 2.05 s clip; recordings (up to 15.4 s) are zero-padded to 16.4 s (64 ms frames) with a frame mask.
LEVEL_FEATURES = {
    "event": dict(hop_length=128, n_frames=128, padding_mode="repeat"),
    "record": dict(hop_length=512, n_frames=256, padding_mode="zero"),
}
# The full length of nearly every SPRSound recording: the clip an event model is widened to for records.
RECORD_SECONDS = 15.36
# Record-task options (None in the arguments: not given), used only on recordings with event timestamps.
RECORD_DEFAULTS = {"record_crop_probability": 0.5, "record_crop_min_seconds": 3.0, "record_pair_probability": 0.0,
                   "frame_supervision": True}
# What the extractor does with an input shorter than its clip, as a model card says it.
SHORTER_INPUT = {"repeat": "a shorter input is repeated to fill it", "zero": "a shorter input is zero-padded (and masked)"}


@dataclass
class DataArguments:
    task: str | None = field(
        default=None,
        metadata={"help": "SPRSound task: 11, 12 (event level), 21, 22 (record level). Leave out for a new dataset with its own labels."},
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
    validation_fraction: float = field(default=0.15, metadata={"help": "Share of train (whole patients) held out for model selection."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the patient-disjoint validation split."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows (quick runs)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows of validation and eval splits."})
    record_crop_probability: float | None = field(
        default=None,
        metadata={"help": "Record tasks with event timestamps: chance that a training recording is replaced by a random "
                  "window of it, labelled from the events inside (default 0.5; 0 = always whole recordings)."},
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
    return parser.parse_args_into_dataclasses(args=argv + implied_by_evaluation_schedule(parser, argv))


def options_given(argv: list[str]) -> set[str]:
    """The options named in ``argv``, spelled ``--name_with_underscores`` (``--eval-steps=5`` gives ``--eval_steps``)."""
    return {"--" + arg[2:].split("=", 1)[0].replace("-", "_") for arg in argv if arg.startswith("--")}


def implied_by_evaluation_schedule(parser: HfArgumentParser, argv: list[str]) -> list[str]:
    """Arguments implied when ``argv`` sets when to evaluate but not when to save. Keeping the best model needs a
    checkpoint at each evaluation, so checkpoints follow a schedule given alone (``--eval_steps`` alone means
    ``--eval_strategy steps``); a run that never evaluates (``--eval_strategy no``) keeps its last weights and
    cannot stop early."""
    given = options_given(argv)
    if not given & {"--eval_strategy", "--eval_steps"}:
        return []
    parsed, _ = parser.parse_known_args(argv)
    if parsed.eval_strategy == "no":
        if "--load_best_model_at_end" in given:
            return []
        logger.info("--eval_strategy no: the last step's weights are kept (no best checkpoint to load) and there is no early stopping.")
        return ["--load_best_model_at_end", "false"]
    implied = [] if "--eval_strategy" in given else ["--eval_strategy", "steps"]
    strategy = parsed.eval_strategy if "--eval_strategy" in given else "steps"
    if "--save_strategy" not in given:
        implied += ["--save_strategy", strategy]
    if strategy == "steps" and not given & {"--save_strategy", "--save_steps"}:
        implied += ["--save_steps", str(parsed.eval_steps or parsed.logging_steps)]
    if implied:
        logger.info("Evaluation schedule given alone: also %s.", " ".join(implied))
    return implied


# -- arguments checked before any data is read ----------------------------------------------------

def check_arguments(data_args: DataArguments, model_args: ModelArguments, training_args) -> None:
    """Refuse options that are out of range, or that would be ignored, before the data is read."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size == 1:
        # What transformers does under torchrun on a machine without GPUs: each process would train alone,
        # believe it is the main one, and write (and push) the same output_dir.
        raise ValueError(f"launched as {launched} processes (WORLD_SIZE={launched}), but they would not train together: "
                         "on a machine without GPUs pass --use_cpu true.")
    if not training_args.do_train and not model_args.from_checkpoint:
        raise ValueError("--do_train false scores a trained model: pass --from <checkpoint>.")
    if not training_args.do_train and model_args.ignore_mismatched:
        raise ValueError("--ignore-mismatched with --do_train false: scoring uses the checkpoint's own head, so leave "
                         "the option out (where the labels differ, the checkpoint was not trained for this dataset).")
    if model_args.preset not in (None, "small", "paper"):
        raise ValueError(f"--preset must be 'small' or 'paper', got {model_args.preset!r}.")
    if model_args.from_checkpoint:
        check_checkpoint_source(model_args.from_checkpoint)
        if model_args.preset is not None:
            raise ValueError(f"--preset: --from {model_args.from_checkpoint} keeps its own size; leave it out, or train "
                             "a new model without --from.")
    for name in ("record_crop_probability", "record_pair_probability"):
        value = getattr(data_args, name)
        if value is not None and not 0 <= value <= 1:
            raise ValueError(f"--{name} must be in [0, 1], got {value}.")
    if data_args.record_crop_min_seconds is not None and data_args.record_crop_min_seconds <= 0:
        raise ValueError(f"--record_crop_min_seconds must be positive, got {data_args.record_crop_min_seconds}.")
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(data_args, name) is not None and getattr(data_args, name) < 1:
            raise ValueError(f"--{name} must be 1 or more (leave it out for all rows), got {getattr(data_args, name)}.")


def resolve_level(data_args: DataArguments, task: str | None, from_checkpoint: str | None = None) -> str:
    """The annotation level the front end is built for: the task's, else ``--level``, else that of the
    ``--from`` checkpoint (told by its padding: a record model's zero padding and frame mask), else event."""
    if data_args.level not in (None, *LEVEL_FEATURES):
        raise ValueError(f"--level must be 'event' or 'record', got {data_args.level!r}.")
    if task and data_args.level not in (None, TASKS[task]["level"]):
        raise ValueError(f"--level {data_args.level}: task {task} is {TASKS[task]['level']} level.")
    if task or data_args.level:
        return TASKS[task]["level"] if task else data_args.level
    if from_checkpoint:
        padding = AutoFeatureExtractor.from_pretrained(from_checkpoint).padding_mode
        return next(level for level, front in LEVEL_FEATURES.items() if front["padding_mode"] == padding)
    return "event"


def resolve_resume(training_args) -> str | None:
    """The checkpoint folder ``--resume_from_checkpoint`` names: ``last`` (or ``true``) is the newest in output_dir."""
    resume = training_args.resume_from_checkpoint
    if resume is None:
        return None
    if not training_args.do_train:
        raise ValueError(f"--resume_from_checkpoint {resume} continues training, but --do_train is false.")
    if resume.lower() in ("last", "true"):
        output_dir = training_args.output_dir
        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {resume}: no checkpoint-* folder in {output_dir} to resume "
                                    "from (leave the option out to train from the start).")
        return last
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume}: no such checkpoint folder.")
    return resume


def hub_repo_name(training_args) -> str:
    """The repo ``--push_to_hub`` creates (``--hub_model_id``, else the output folder's name), checked before training
    so that a bad id or a machine that cannot push fails now rather than after the run; no network is used here."""
    name = training_args.hub_model_id or Path(os.path.abspath(training_args.output_dir)).name  # a link's own name
    try:
        validate_repo_id(name)
    except HFValidationError as err:
        raise ValueError(f"--push_to_hub: {name!r} is not a Hub repo id ({err}); pass --hub_model_id org/name.") from None
    if hub_constants.HF_HUB_OFFLINE:
        raise ValueError("--push_to_hub needs the network, but HF_HUB_OFFLINE is set: unset it, or push the output "
                         "folder later (e.g. `hf upload`).")
    if not (training_args.hub_token or get_token()):
        raise ValueError("--push_to_hub needs a Hub token: log in (`hf auth login`) or pass --hub_token.")
    if training_args.hub_strategy != "every_save" or training_args.hub_always_push:
        logger.warning("--hub_strategy / --hub_always_push are ignored: train.py pushes the output folder once, at the end.")
    return name


# -- data ---------------------------------------------------------------------------------------

def dataset_kind(dataset: str) -> str:
    """What ``--dataset`` names: ``"saved"`` (a `save_to_disk` folder of a DatasetDict or a Dataset), ``"sprsound"``
    (a release folder, per ``find_splits``), ``"icbhi"``, ``"folder"`` (audio + labels), ``"file"`` (an error) or
    ``"hub"`` (a dataset id)."""
    source = Path(dataset)
    if not source.is_dir():
        return "file" if source.exists() else "hub"
    if (source / "dataset_dict.json").is_file() or (source / "state.json").is_file():
        return "saved"  # a DatasetDict or one Dataset; checked first: its folders could pass for an SPRSound layout
    if hub_dataset.is_icbhi_release(source):
        return "icbhi"
    if any((source / name).is_file() for name in METADATA_FILES):
        return "folder"
    try:
        find_splits(source)
    except FileNotFoundError:
        return "folder"
    return "sprsound"


def load_data(data_args: DataArguments, task: str | None) -> datasets.DatasetDict:
    """The dataset as a `DatasetDict` with undecoded audio, whatever form ``--dataset`` takes."""
    source, kind = Path(data_args.dataset), dataset_kind(data_args.dataset)
    if kind == "saved":
        data = datasets.load_from_disk(str(source))
        if isinstance(data, datasets.Dataset):  # one split saved alone
            data = datasets.DatasetDict(train=data)
    elif kind == "sprsound":
        if task is None:
            raise ValueError(f"{source} is an SPRSound release: pass --task 11, 12, 21 or 22.")
        data = hub_dataset.load_sprsound(source, task=task, decode=False, on_missing=data_args.on_missing)
    elif kind == "icbhi":
        data = hub_dataset.load_icbhi(source, level=icbhi_level(data_args), decode=False,
                                      on_missing=data_args.on_missing)
    elif kind == "folder":
        names = hub_dataset.task_labels(task) if task else None
        data = hub_dataset.load_audio_folder(source, label_names=names, decode=False, on_missing=data_args.on_missing)
    elif kind == "file":
        raise ValueError(f"--dataset {source} is a file; expected a folder or a Hub dataset id.")
    else:
        data = datasets.load_dataset(data_args.dataset, TASKS[task]["level"] if task else None)
    if "train" not in data:
        # Even scoring needs train: validation is carved from it (for SPRSound, the same patients for every task).
        hint = ""
        if kind == "sprsound":
            hint = (" (put the release's train folders under the same root, e.g. BioCAS2022/ beside BioCAS2023/); to "
                    f"score a model on {next(iter(data))} alone: python benchmarks/score_interval.py --models <model> "
                    f"--dataset {data_args.dataset} --split {next(iter(data))}")
        raise ValueError(f"--dataset {data_args.dataset} has no 'train' split (it has {list(data)}): train.py carves "
                         f"its validation split from train, also to score a model{hint}.")
    return data.cast_column("audio", datasets.Audio(decode=False))


def icbhi_level(data_args: DataArguments) -> str:
    """ICBHI's rows follow the label asked for: one per recording for ``diagnosis``, else one per cycle."""
    patient_column = hub_dataset.ICBHI_LABEL_COLUMNS["patient"]
    return "patient" if data_args.label_column == patient_column else "cycle"


def default_label_column(data_args: DataArguments, task: str | None) -> str:
    if task:
        return TASKS[task]["column"]
    if dataset_kind(data_args.dataset) == "icbhi":
        return hub_dataset.ICBHI_LABEL_COLUMNS["cycle"]  # without --label_column, ICBHI loads cycles
    return "label"


def sprsound_validation_patients(data_args: DataArguments) -> list[str] | None:
    """On an SPRSound release, the validation patients of every task: those the record-level split
    (stratified by the 5 record classes) chooses. One set for all four tasks, so a model fine-tuned from
    another task's model (the recipe's 12 -> 22 -> 21 -> 22) never validates on patients that trained it.
    None for other datasets (each task carves its own split)."""
    if dataset_kind(data_args.dataset) != "sprsound":
        return None
    records = hub_dataset.load_sprsound(data_args.dataset, level="record", splits=["train"], decode=False, progress=False,
                                        on_missing=data_args.on_missing)["train"]
    carved = hub_dataset.patient_disjoint_split(records, data_args.validation_fraction, data_args.split_seed, label_column="task22")
    return sorted({patient for patient in carved["validation"]["patient_id"] if patient is not None})


def carve_validation(train_split: datasets.Dataset, data_args: DataArguments, label_column: str) -> datasets.DatasetDict:
    """``train`` and a patient-disjoint ``validation`` split (the same patients for every SPRSound task)."""
    if "patient_id" in train_split.column_names:
        unknown = sum(patient is None for patient in train_split["patient_id"])
        if unknown:
            logger.warning(
                "%d of the %d training rows of %s have no patient_id: each such file counts as its own patient, so one "
                "patient's recordings may fall on both sides of the validation split, and selection then favours "
                "models that recognise patients. Give every file a patient_id (a metadata.csv column).",
                unknown, train_split.num_rows, data_args.dataset)
    try:
        return hub_dataset.patient_disjoint_split(
            train_split, data_args.validation_fraction, data_args.split_seed, label_column=label_column,
            validation_patients=sprsound_validation_patients(data_args),
        )
    except ValueError as err:
        raise ValueError(f"Cannot carve a validation split from the train split of {data_args.dataset}: {err}") from None


def resolve_label_column(data: datasets.DatasetDict, data_args: DataArguments, task: str | None) -> tuple[str, list[str]]:
    column = data_args.label_column or default_label_column(data_args, task)
    if not data_args.label_column and column not in data["train"].features and "label" in data["train"].features:
        column = "label"  # a folder of audio + labels with the task's own labels (checked below)
    feature = data["train"].features.get(column)
    if not isinstance(feature, datasets.ClassLabel):
        raise ValueError(
            f"Label column {column!r} not found as a ClassLabel in {data_args.dataset} "
            f"(columns: {data['train'].column_names}); pass --label_column."
        )
    if task and feature.names != hub_dataset.task_labels(task):
        raise ValueError(
            f"Column {column!r} has labels {feature.names}, but task {task} expects {hub_dataset.task_labels(task)}."
        )
    return column, feature.names


def resolve_eval_splits(data: datasets.DatasetDict, data_args: DataArguments) -> list[str]:
    """The split scored once at the end: ``--eval_split``, else the dataset's ``inter_test`` (SPRSound) or ``test``."""
    if data_args.eval_split == "none":
        return []
    if data_args.eval_split is not None:
        if data_args.eval_split not in data:
            raise ValueError(f"--eval_split {data_args.eval_split!r} not in {data_args.dataset} (splits: {list(data)}).")
        return [data_args.eval_split]
    found = [name for name in ("inter_test", "test") if name in data][:1]
    if found:
        logger.info("Split %r is scored once at the end (--eval_split).", found[0])
    else:
        logger.info("%s has no 'inter_test' or 'test' split (splits: %s): no final scoring beyond validation; "
                    "pass --eval_split <split> to score one.", data_args.dataset, list(data))
    return found


def warn_shared_patients(data: datasets.DatasetDict, scored: list[str]) -> None:
    """Say when a scored split holds patients of ``train`` (possible in a new dataset's own split column): its
    Score then measures recordings of patients the model learned from, not new patients."""
    if "patient_id" not in data["train"].column_names:
        return
    trained = {patient for patient in data["train"]["patient_id"] if patient is not None}
    for name in scored:
        shared = sorted(trained.intersection(data[name]["patient_id"]))
        if shared:
            logger.warning("%s: %d of its patients are also in train (e.g. %s): its Score is not on unseen patients.",
                           name, len(shared), ", ".join(map(str, shared[:5])))


def resolve_record_options(data_args: DataArguments, model_args: ModelArguments, record_data: bool) -> None:
    """Fill in the record-task options left out (:data:`RECORD_DEFAULTS`), warning about those given where they do
    nothing: ``record_data`` is False unless the rows are recordings with event timestamps (SPRSound 21 and 22)."""
    holders = {name: data_args if hasattr(data_args, name) else model_args for name in RECORD_DEFAULTS}
    given = [f"--{name}" for name, holder in holders.items() if getattr(holder, name) is not None]
    if given and not record_data:
        logger.warning("%s ignored: they apply to recordings with event timestamps (SPRSound tasks 21 and 22).", ", ".join(given))
    for name, holder in holders.items():
        if getattr(holder, name) is None:
            setattr(holder, name, RECORD_DEFAULTS[name])


def report_row_lengths(prepared: datasets.DatasetDict, extractor: RespSTFFeatureExtractor, new_dataset: bool) -> None:
    """Say how many rows hold too little to hear (shorter than the extractor's ``SHORTEST_SOUND_SECONDS``, or
    silent), and how many the extractor centre-crops to its clip: by design for SPRSound's events (a few are
    longer), but on a new dataset it may cut whole recordings down to an event model's 2 s."""
    for name, split in prepared.items():
        seconds, silent = np.asarray(split["seconds"]), np.asarray(split["silent"], dtype=bool)
        shorter = seconds[seconds < extractor.SHORTEST_SOUND_SECONDS]
        if len(shorter) or silent.any():
            logger.warning("%s: %d of %d rows are shorter than %.1f s (shortest %.0f ms) and %d are silent (constant): "
                           "little or nothing for the model to hear in them.", name, len(shorter), len(seconds),
                           extractor.SHORTEST_SOUND_SECONDS, (shorter.min() if len(shorter) else 0) * 1000, silent.sum())
        longer = seconds[seconds > extractor.clip_seconds + 0.5 / extractor.sampling_rate]
        if not len(longer):
            continue
        advice = (
            f". To learn from whole recordings, fine-tune a record model (e.g. --from checkpoints/sprsound-task22) or pass "
            f"--level record (from an event model, with --n_frames: frames of {extractor.frame_seconds * 1000:g} ms)"
            if new_dataset else ""
        )
        logger.log(logging.WARNING if new_dataset else logging.INFO,
                   "%s: %d of %d rows are longer than the model's %.2f s clip (median %.2f s, longest %.2f s) and are "
                   "centre-cropped to it%s.", name, len(longer), len(seconds), extractor.clip_seconds,
                   np.median(longer), longer.max(), advice)


def frame_targets(events: list[dict], duration_s: float, extractor: RespSTFFeatureExtractor) -> np.ndarray:
    """Per-frame classes (:data:`FRAME_LABELS`) of one recording from its events; -100 outside events."""
    targets = np.full(extractor.n_frames, -100, dtype=np.int64)
    # The extractor centre-crops recordings longer than its clip; shift the events the same way.
    offset = extractor.crop_start(round(duration_s * extractor.sampling_rate)) / extractor.sampling_rate
    for event in events:
        first = max(0, int(round((event["start_s"] - offset) / extractor.frame_seconds)))
        last = min(extractor.n_frames, int(round((event["end_s"] - offset) / extractor.frame_seconds)))
        targets[first:last] = frame_label(event["type"])
    return targets


def featurize(
    split: datasets.Dataset, extractor: RespSTFFeatureExtractor, label_column: str, with_frames: bool, device: str = "cpu"
) -> datasets.Dataset:
    """Scalograms computed once, batched (``datasets.map``) on ``device``, kept next to the labels and to each
    row's length before it was fitted to the clip (``seconds``)."""

    def compute(batch):
        clips = [hub_dataset.read_audio(audio) for audio in batch["audio"]]
        for row, (array, rate) in enumerate(clips):
            # Checked here, naming the row; the extractor would only say "audio input <n>" of a batch.
            if len(array) * extractor.sampling_rate < extractor.min_samples * rate:
                where = ", ".join(f"{key} {batch[key][row]}" for key in ("recording_id", "start_s", "end_s") if key in batch)
                raise ValueError(
                    f"{split.split or 'dataset'} row ({where or batch['audio'][row].get('path')}): {len(array) / rate * 1000:.1f} "
                    f"ms of audio, shorter than the {extractor.min_samples / extractor.sampling_rate * 1000:.0f} ms the "
                    "model's smallest wavelet spans; leave the row out or widen its segment."
                )
        out = {"labels": batch[label_column], "seconds": [len(array) / rate for array, rate in clips],
               "silent": [bool(np.ptp(array) == 0) for array, _ in clips]}
        rates = {rate for _, rate in clips}
        with warnings.catch_warnings():
            # The extractor's warnings about short or silent inputs would name a row by its place in the batch:
            # report_row_lengths reports such rows once per split instead.
            warnings.filterwarnings("ignore", message=r"audio input \d+ is (constant|\d+ ms long)", category=UserWarning)
            # truncation=True: an event or recording longer than the clip is centre-cropped on purpose (see frame_targets).
            if len(rates) == 1:
                features = extractor([array for array, _ in clips], sampling_rate=rates.pop(), truncation=True, device=device)
                out["input_features"] = list(features["input_features"])
                out["attention_mask"] = list(features["attention_mask"])
            else:  # mixed-rate datasets (e.g. ICBHI): resample clip by clip
                parts = [extractor(array, sampling_rate=rate, truncation=True, device=device) for array, rate in clips]
                out["input_features"] = [p["input_features"][0] for p in parts]
                out["attention_mask"] = [p["attention_mask"][0] for p in parts]
        if with_frames:
            out["frame_labels"] = [frame_targets(e, d, extractor) for e, d in zip(batch["events"], batch["duration_s"])]
        return out

    keep = [c for c in split.column_names if c not in ("audio",)]
    return split.map(compute, batched=True, batch_size=32, remove_columns=keep + ["audio"], desc="CWT scalograms")


# A window's label counts an event type only when at least this much of it is inside: a sliver of a
# crackle cut at the window's edge is not evidence a listener could hear.
MIN_EVENT_SECONDS_IN_CROP = 0.25


class RecordCrops(torch.utils.data.Dataset):
    """Training recordings of a record task, each drawn whole or, with probability ``probability``, as
    a random window (at least ``min_frames`` frames) moved to the start of the clip and labelled by the
    record rule applied to the events inside it (a record's class is fixed by its events' types). Each
    epoch then shows new, correctly labelled examples, and the model must find *where* the evidence is.
    With probability ``pair_probability`` the window is followed by a window of another random training
    recording, and the pair is labelled from the events of both (so CAS & DAS examples are also made
    from a wheeze of one child and a crackle of another). Poor Quality recordings (no events) and
    windows without an annotated event stay whole.

    Items are those of ``records`` in torch format: ``input_features`` ``(1, F, T)``, ``attention_mask``
    ``(T,)``, ``frame_labels`` ``(T,)`` (:data:`FRAME_LABELS`, -100 outside events) and ``labels``.
    """

    def __init__(self, records: datasets.Dataset, task: str, label_names: list[str], probability: float,
                 min_frames: int, min_event_frames: int, pair_probability: float = 0.0):
        self.records, self.task, self.label_names = records, task, label_names
        self.probability, self.min_frames, self.min_event_frames = probability, max(1, min_frames), max(1, min_event_frames)
        self.pair_probability = pair_probability

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.draw(self.records[index])

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """A batch read in one go (as the data loader asks when the dataset offers it)."""
        return [self.draw(item) for item in self.records.__getitems__(indices)]

    def window(self, item: dict[str, torch.Tensor], max_frames: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A random window of ``item``'s audio, ``min_frames`` to ``max_frames`` long: its features ``(1, F, size)``
        and frame labels ``(size,)`` (event slivers shorter than ``min_event_frames`` set to -100), or None when
        no event is in it (or the recording is too short)."""
        length = int(item["attention_mask"].sum())
        if min(length, max_frames) < self.min_frames:
            return None
        size = int(torch.randint(self.min_frames, min(length, max_frames) + 1, ()))
        start = int(torch.randint(0, length - size + 1, ()))
        frame_labels = item["frame_labels"][start : start + size].clone()
        classes, counts = frame_labels[frame_labels >= 0].unique(return_counts=True)
        present = classes[counts >= self.min_event_frames]
        if len(present) == 0:
            return None
        frame_labels[~torch.isin(frame_labels, present)] = -100  # slivers left out of the label are not targets either
        return item["input_features"][..., start : start + size], frame_labels

    def draw(self, item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``item`` whole, or a labelled window (or pair of windows) of it (see the class docstring)."""
        length = int(item["attention_mask"].sum())
        if length <= self.min_frames or float(torch.rand(())) >= self.probability:
            return item
        clip_frames = item["attention_mask"].numel()
        paired = self.pair_probability > 0 and float(torch.rand(())) < self.pair_probability
        first = self.window(item, clip_frames - self.min_frames if paired else length)
        if first is None:
            return item
        windows = [first]
        if paired:
            other = self.records[int(torch.randint(len(self.records), ()))]
            second = self.window(other, clip_frames - first[1].numel())
            windows += [second] if second is not None else []
        features = torch.cat([features for features, _ in windows], dim=-1)
        frame_labels = torch.cat([labels for _, labels in windows])
        size = frame_labels.numel()
        present = frame_labels[frame_labels >= 0].unique().tolist()
        record_label = record_task_label(record_label_from_frame_labels(present), self.task)
        crop = {
            "input_features": torch.zeros_like(item["input_features"]),
            "attention_mask": torch.zeros_like(item["attention_mask"]),
            "frame_labels": torch.full_like(item["frame_labels"], -100),
            "labels": torch.tensor(self.label_names.index(record_label), dtype=item["labels"].dtype),
        }
        crop["input_features"][..., :size] = features
        crop["attention_mask"][:size] = 1
        crop["frame_labels"][:size] = frame_labels
        return crop


class TrainingClock(TrainerCallback, ExportableState):
    """Seconds spent training, kept in each checkpoint's ``trainer_state.json``, so that a run resumed after a kill
    reports its whole training time rather than the last segment's."""

    def __init__(self, seconds_before: float = 0.0):
        self.seconds_before, self.started = seconds_before, time.time()

    @classmethod
    def resumed_from(cls, checkpoint: str | None) -> TrainingClock:
        """The clock as ``checkpoint`` left it (zero for a fresh run, or a checkpoint saved without one)."""
        state_file = Path(checkpoint or "") / "trainer_state.json"
        saved = json.loads(state_file.read_text()).get("stateful_callbacks", {}) if checkpoint and state_file.is_file() else {}
        return cls(**saved[cls.__name__]["args"]) if cls.__name__ in saved else cls()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()
        # A checkpoint saved without this clock has no entry for it, and the Trainer's next save looks it up.
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    def state(self) -> dict:
        return {"args": {"seconds_before": self.seconds_before + time.time() - self.started}, "attributes": {}}


# -- model --------------------------------------------------------------------------------------

IMBALANCE_SCHEMES = ("weights", "score", "focal", "none")


def check_checkpoint_source(source: str) -> None:
    """Refuse a ``--from`` that is neither a checkpoint folder nor a Hub repo id, before any data is read (left to
    transformers, a mistyped local path reads as a failed Hub download)."""
    path = Path(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--from {source}: the folder has no config.json; expected a saved model "
                                    "(e.g. checkpoints/sprsound-task12 or a train.py output folder).")
    elif path.exists():
        raise FileNotFoundError(f"--from {source} is a file; expected a checkpoint folder or a Hub repo id ('org/name').")
    elif path.parent != Path(".") and path.parent.is_dir():
        raise FileNotFoundError(f"--from {source}: no folder {path.name!r} in {path.parent}/.")
    else:
        try:
            validate_repo_id(source)
        except HFValidationError:
            raise FileNotFoundError(f"--from {source}: no such checkpoint folder, and not a Hub repo id ('org/name').") from None


def resolve_normal_label(label_names: list[str], normal_label: str | None = None) -> str:
    """The class the Score's SP is about: ``normal_label`` (checked against the labels), else ``Normal``, else the
    one class named normal or healthy in any case (e.g. a new dataset's ``Healthy``)."""
    if normal_label is not None:
        if normal_label not in label_names:
            raise ValueError(f"--normal_label {normal_label!r} is not one of the dataset's labels {label_names}.")
        if NORMAL_LABEL in label_names and normal_label != NORMAL_LABEL:
            # The official metric takes the class named Normal as Normal whatever it is told; refuse now, not after training.
            raise ValueError(f"--normal_label {normal_label!r}: the dataset has a class named {NORMAL_LABEL!r}, which the "
                             "Score always takes as the normal class; leave --normal_label out or rename that class.")
        return normal_label
    if NORMAL_LABEL in label_names:
        return NORMAL_LABEL
    found = [name for name in label_names if name.lower() in ("normal", "healthy")]
    if len(found) != 1:
        raise ValueError(
            f"Which of the labels {label_names} is the normal class (the Score's SP is its recall)? "
            + (f"Both {found} could be; " if found else "None is named Normal or Healthy; ")
            + "pass --normal_label <label>."
        )
    return found[0]


def class_weights(labels: list[int], label_names: list[str], scheme: str, normal_label: str | None = None) -> list[float]:
    """Per-class loss weights, normalised to mean 1.

    ``weights``: inverse square-root class frequency (absent classes get the largest weight).
    ``score``: the normal class (see :func:`resolve_normal_label`) and all other classes together weigh half
    each, every non-normal sample alike, as SP and SE do in the official Score.
    """
    counts = np.bincount(labels, minlength=len(label_names)).astype(float)
    if scheme == "score":
        normal = label_names.index(resolve_normal_label(label_names, normal_label))
        others = counts.sum() - counts[normal]
        weights = np.full(len(counts), 1 / max(others, 1))
        weights[normal] = 1 / max(counts[normal], 1)
    else:
        weights = 1 / np.sqrt(np.maximum(counts, 1))
    return (weights / weights.mean()).round(4).tolist()


def align_with_model(data: datasets.DatasetDict, label_column: str, label_names: list[str], source: str):
    """Scoring a model: the dataset's classes renumbered as the model's, so a test set lacking some of them (a
    folder of Normal and Wheeze recordings for a 7-class model) fits its head. Returns ``(data, label_names)``."""
    model_labels = class_names(RespSTFConfig.from_pretrained(source))
    if label_names == model_labels:
        return data, label_names
    unknown = [name for name in label_names if name not in model_labels]
    if unknown:
        raise ValueError(f"--do_train false: the dataset's classes {unknown} are not among {source}'s {model_labels}; "
                         "that model was not trained for them.")
    return data.align_labels_with_mapping({name: i for i, name in enumerate(model_labels)}, label_column), model_labels


def class_names(config: RespSTFConfig) -> list[str]:
    """A model's classes in id order."""
    return [config.id2label[i] for i in range(config.num_labels)]


def build_model_and_extractor(model_args, feature_args, task, label_names, train_labels, level, with_frames, normal_label=None):
    id2label = dict(enumerate(label_names))
    label2id = {name: i for i, name in enumerate(label_names)}
    if model_args.imbalance not in IMBALANCE_SCHEMES:
        raise ValueError(f"--imbalance must be one of {', '.join(IMBALANCE_SCHEMES)}; got {model_args.imbalance!r}.")
    loss_settings = {
        "loss": "focal" if model_args.imbalance == "focal" else "cross_entropy",
        "class_weights": class_weights(train_labels, label_names, model_args.imbalance, normal_label)
        if model_args.imbalance in ("weights", "score") else None,
    }
    if model_args.from_checkpoint:
        source = model_args.from_checkpoint
        config = RespSTFConfig.from_pretrained(source)
        if class_names(config) != label_names and not model_args.ignore_mismatched:
            raise ValueError(
                f"Checkpoint {source} predicts {list(config.id2label.values())} but the dataset's labels are {label_names}; "
                "pass --ignore-mismatched to replace the classification head."
            )
        config.id2label, config.label2id = id2label, label2id  # also sets num_labels
        if with_frames and not config.num_frame_labels:
            config.num_frame_labels = len(FRAME_LABELS)  # a new frame head, e.g. an event model moving to records
        for name, value in loss_settings.items():
            setattr(config, name, value)
        config._validate()
        extractor = AutoFeatureExtractor.from_pretrained(source)
        for name in ("hop_length", "n_scales", "fmin", "fmax"):
            given = getattr(feature_args, name)
            if given is not None and given != getattr(extractor, name):
                raise ValueError(
                    f"--{name} {given:g} differs from the checkpoint's {getattr(extractor, name):g}: its convolutions "
                    "learned that front end; leave it out, or train a new model without --from."
                )
        record_padding = LEVEL_FEATURES["record"]["padding_mode"]
        if level == "record" and not feature_args.n_frames and extractor.padding_mode != record_padding:
            raise ValueError(
                f"--from {source} is an event model: its {extractor.clip_seconds:.2f} s clips would centre-crop every "
                f"recording (and leave no room for record crops). Pass --n_frames for a record clip at its frame rate, e.g. "
                f"--n_frames {round(RECORD_SECONDS / extractor.frame_seconds)} ({RECORD_SECONDS} s, as "
                "benchmarks/sprsound_score.py's task22-base does)."
            )
        if feature_args.n_frames:  # a longer or shorter clip at the same frame rate (e.g. events -> recordings)
            extractor.n_frames = feature_args.n_frames
            extractor.padding_mode = LEVEL_FEATURES[level]["padding_mode"]
        model = RespSTFForAudioClassification.from_pretrained(
            source, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched
        )
        return model, extractor
    front = dict(LEVEL_FEATURES[level])
    front["n_scales"] = feature_args.n_scales or (128 if model_args.preset == "paper" else 64)
    for name in ("hop_length", "n_frames"):
        if getattr(feature_args, name):
            front[name] = getattr(feature_args, name)
    for name in ("fmin", "fmax"):  # left out: the extractor's own defaults
        if getattr(feature_args, name) is not None:
            front[name] = getattr(feature_args, name)
    extractor = RespSTFFeatureExtractor(**front)
    settings = dict(
        n_scales=extractor.n_scales, id2label=id2label, label2id=label2id,
        num_frame_labels=len(FRAME_LABELS) if with_frames else 0, **loss_settings,
    )
    config = RespSTFConfig.paper(**settings) if model_args.preset == "paper" else RespSTFConfig(**settings)
    return RespSTFForAudioClassification(config), extractor


# -- scoring and reports --------------------------------------------------------------------------

def describe_device(device, precision: str | None = None) -> str:
    """A device as a person reads it in a results table: the GPU's name, or CPU with its thread count, and
    the arithmetic when given (``"fp32"``, or ``"bf16"`` / ``"fp16"`` for mixed precision)."""
    device, threads = torch.device(device), torch.get_num_threads()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type.upper()} ({threads} thread{'s' if threads > 1 else ''})"
    return f"{name}, {precision}" if precision else name


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
    metric = evaluate.load(hub_dataset.SPRSOUND_SCORE_PATH, keep_in_memory=True)
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


def describe_selection(training_args, from_checkpoint: str | None) -> str | None:
    """Which weights a run keeps, as its card says: the best on validation, None for the last step's, or for a run
    that only scores (``--do_train false``) the choice made when ``from_checkpoint`` was trained."""
    if not training_args.do_train:
        return f"made when `{from_checkpoint}` was trained"
    if not training_args.load_best_model_at_end:
        return None
    return "best epoch" if training_args.eval_strategy == "epoch" else "best evaluation"


def write_results(output_dir: Path, summary: dict) -> None:
    """``output_dir/results.json``: a run's summary (how it was trained, its measured scores)."""
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2, default=float))


def write_model_card(output_dir: Path, summary: dict, repo_id: str | None = None) -> None:
    """``output_dir/README.md`` from a run's summary (task, labels, dataset, parent, measured scores); the usage
    snippet loads ``repo_id`` when the folder is pushed to the Hub under that id."""
    task, label_names, results = summary["task"], summary["labels"], summary["results"]
    task_text = f"SPRSound Task {task[0]}-{task[1]} ({TASKS[task]['level']} level)" if task else "a custom respiratory-sound dataset"
    rows = "\n".join(
        f"| {split} | {r['score']:.3f} | {r['se']:.3f} | {r['sp']:.3f} | {r['as']:.3f} | {r['hs']:.3f} | {r['rows']} |"
        for split, r in results.items()
    )
    # A local parent is named by its folder (an absolute path says nothing on the Hub, nor on another
    # machine: the run may have been trained elsewhere); a Hub id as given.
    parent = summary["from"]
    if parent and (Path(parent).is_dir() or Path(parent).is_absolute()):
        parent = Path(parent).resolve().name
    seeds = summary.get("seed_selection")  # set by benchmarks/sprsound_score.py --seeds
    selection = summary.get("selection", "best epoch")  # a results.json from before "selection" was kept: best epoch
    if selection or seeds:
        chosen = selection or "last training step"
        if seeds:
            listed = ", ".join(map(str, seeds["validation_score_by_seed"]))
            chosen += (f" of each of seeds {listed}, then the mean of their weights (a uniform soup), above each seed on validation"
                       if seeds["kept"] == "soup" else f"; seed {seeds['kept']} of seeds {listed}")
        validation_text = f"Selection ({chosen}) used only the patient-disjoint validation split carved from `train`."
    else:
        validation_text = ("These are the weights of the last training step (none was chosen on validation); validation is "
                           "a patient-disjoint split carved from `train`.")
    normal_text = f" The Score's specificity (SP) is the recall of `{summary['normal_label']}`." if not task and "normal_label" in summary else ""
    extractor = RespSTFFeatureExtractor.from_pretrained(output_dir)
    sprsound_splits = """
`inter_test` is the SPRSound 2022 inter-patient test set (patients never seen in training); the
paper's BioCAS 2023 test set was not available, so these numbers are not directly comparable to its
0.810 / 0.667 / 0.744 / 0.608."""
    dataset_name = Path(summary["dataset"]).name
    # model-index: the Hub shows each split's Score on the model page.
    metadata = ModelCardData(
        library_name="transformers", pipeline_tag="audio-classification", license="apache-2.0",
        tags=["audio-classification", "respiratory-sound", "stethoscope", *(["sprsound"] if task else []), "cwt", "respstf"],
        metrics=["sprsound_score"], model_name=repo_id or output_dir.name,
        eval_results=[
            EvalResult(task_type="audio-classification", dataset_type=dataset_name, dataset_name=dataset_name, dataset_split=split,
                       metric_type="sprsound_score", metric_name="Score", metric_value=round(r["score"], 4))
            for split, r in results.items()
        ] or None,
    )
    card = f"""---
{metadata.to_yaml()}
---

# RespSTF — {task_text}

A RespSTF model (CWT scalogram + Inception-residual CNN with spatio-temporal focusing and multi-head
attention; after Ngo et al., IEEE BioCAS 2023, arXiv 2306.14929) trained with `train.py` of the
`respstf` package on `{dataset_name}`{f' starting from `{parent}`' if parent else ''}.

Classes (`id2label`): {', '.join(f'{i} = {name}' for i, name in enumerate(label_names))}.{normal_text}

## Measured scores (official SPRSound Score)

{validation_text}{sprsound_splits if task else ''}

| split | Score | SE | SP | AS | HS | rows |
|---|---|---|---|---|---|---|
{rows}

## Use

```python
from transformers import pipeline
classify = pipeline("audio-classification", model="{repo_id or '<this folder or repo id>'}", trust_remote_code=True)
classify({{"raw": waveform, "sampling_rate": 8000}})  # or a file path (needs ffmpeg)
```

It needs `torch`, `scipy` and `transformers` 4.54 or later (with 4.50-4.53, also pass `pipeline` the same folder
or repo as `feature_extractor=`).

The feature extractor resamples any rate to 8 kHz and fits each input to {extractor.n_frames} frames
({extractor.clip_seconds:.2f} s), as in training: {SHORTER_INPUT[extractor.padding_mode]}, a longer one is centre-cropped,
with a warning (call the feature extractor with `truncation=False` to keep it whole). With `respstf` installed and
imported (`import respstf.modeling, respstf.feature_extraction`) no `trust_remote_code` is needed.
"""
    (output_dir / "README.md").write_text(card)


def push_folder(output_dir: Path, summary: dict, repo_name: str, card_repo_id: str | None, training_args) -> None:
    """Upload ``output_dir`` (no Trainer ``checkpoint-*`` folders) to the Hub repo ``repo_name``, created if needed."""
    # The id the Hub gives back has the namespace a bare --hub_model_id lacks: the card's snippet loads it.
    repo_id = create_repo(repo_name, exist_ok=True, private=training_args.hub_private_repo, token=training_args.hub_token).repo_id
    if repo_id != card_repo_id:
        write_model_card(output_dir, summary, repo_id)
    if training_args.hub_revision:
        create_branch(repo_id, branch=training_args.hub_revision, exist_ok=True, token=training_args.hub_token)
    upload_folder(repo_id=repo_id, folder_path=str(output_dir), ignore_patterns=["checkpoint-*", "runs/*"],
                  token=training_args.hub_token, revision=training_args.hub_revision,
                  commit_message=f"respstf train.py on {Path(summary['dataset']).name}")
    logger.info("pushed to %s%s", repo_id, f" (branch {training_args.hub_revision})" if training_args.hub_revision else "")


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    data_args, model_args, feature_args, training_args = parse_args(argv)
    # Under torchrun / accelerate launch every process runs this script: one of them reports.
    logging.getLogger("respstf").setLevel(logging.INFO if training_args.should_log else logging.ERROR)
    task = normalize_task(data_args.task) if data_args.task else None
    check_arguments(data_args, model_args, training_args)
    if not model_args.from_checkpoint:  # a checkpoint keeps its own size
        model_args.preset = model_args.preset or "small"
    level = resolve_level(data_args, task, model_args.from_checkpoint)
    resume = resolve_resume(training_args)
    repo_name = hub_repo_name(training_args) if training_args.push_to_hub else None
    set_seed(training_args.seed)

    with training_args.main_process_first(desc="loading the dataset"):
        data = load_data(data_args, task)
    label_column, label_names = resolve_label_column(data, data_args, task)
    if not training_args.do_train:
        data, label_names = align_with_model(data, label_column, label_names, model_args.from_checkpoint)
    normal_label = resolve_normal_label(label_names, data_args.normal_label)
    logger.info("Classes %s; the Score's SP is the recall of %r.", label_names, normal_label)
    check_selection_metric(training_args.metric_for_best_model, label_names)
    record_data = level == "record" and "events" in data["train"].column_names
    resolve_record_options(data_args, model_args, record_data)
    with_frames = record_data and model_args.frame_supervision

    if "validation" not in data:
        data["train"], data["validation"] = carve_validation(data["train"], data_args, label_column).values()
    if data_args.max_train_samples is not None:
        data["train"] = data["train"].shuffle(seed=training_args.seed).select(range(min(data_args.max_train_samples, len(data["train"]))))
    eval_splits = resolve_eval_splits(data, data_args)
    warn_shared_patients(data, ["validation", *eval_splits])
    for name in ["validation", *eval_splits]:
        if data_args.max_eval_samples is not None:
            data[name] = data[name].select(range(min(data_args.max_eval_samples, len(data[name]))))
    for name in ["train", "validation", *eval_splits]:
        if len(data[name]) == 0:
            raise ValueError(
                f"Split {name!r} of {data_args.dataset} is empty"
                + (" (too few patients to carve a patient-disjoint validation split)" if name in ("train", "validation") else "")
                + "."
            )
    check_selection_class(training_args.metric_for_best_model, label_names, data["validation"][label_column])

    model, extractor = build_model_and_extractor(
        model_args, feature_args, task, label_names, data["train"][label_column], level, with_frames, normal_label
    )
    crop_min_frames = round(data_args.record_crop_min_seconds / extractor.frame_seconds)
    cropped = training_args.do_train and with_frames and data_args.record_crop_probability > 0
    if cropped and crop_min_frames >= extractor.n_frames:
        raise ValueError(
            f"--record_crop_min_seconds {data_args.record_crop_min_seconds:g}: no window that long fits the model's "
            f"{extractor.clip_seconds:.2f} s clip, so no recording would be cropped; pass a longer --n_frames or "
            "--record_crop_probability 0."
        )
    logger.info("model: %s parameters; features %s", f"{model.num_parameters():,}", extractor.to_dict())
    featurized = (["train"] if training_args.do_train else []) + ["validation", *eval_splits]
    # Each process computes the scalograms on its own device, at the same time (the device is part of the cache key).
    prepared = datasets.DatasetDict(
        {name: featurize(data[name], extractor, label_column, with_frames, str(training_args.device)) for name in featurized}
    )
    report_row_lengths(prepared, extractor, new_dataset=task is None)
    prepared = prepared.remove_columns(["seconds", "silent"]).with_format("torch")

    train_dataset = prepared["train"] if training_args.do_train else None
    if cropped:
        train_dataset = RecordCrops(
            train_dataset, task, label_names, data_args.record_crop_probability, min_frames=crop_min_frames,
            min_event_frames=round(MIN_EVENT_SECONDS_IN_CROP / extractor.frame_seconds),
            pair_probability=data_args.record_pair_probability,
        )
    training_args.label_names = ["labels"]  # frame_labels are an input of the loss, not a prediction target
    training_args.push_to_hub = False  # pushed below, with our model card and the code files
    clock = TrainingClock.resumed_from(resume)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=prepared["validation"],
        compute_metrics=make_compute_metrics(label_names, normal_label),
        callbacks=[clock, *([EarlyStoppingCallback(model_args.early_stopping_patience)]
                            if model_args.early_stopping_patience and training_args.eval_strategy != "no" else [])],
    )
    output_dir = Path(training_args.output_dir)
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"  # autocast in training and scoring
    device = describe_device(training_args.device, precision)
    summary = {
        "task": task, "labels": label_names, "normal_label": normal_label, "dataset": data_args.dataset,
        "preset": model_args.preset,  # None for a fine-tuned model: it has its parent's
        "from": model_args.from_checkpoint, "parameters": model.num_parameters(), "train_rows": 0,
        "global_step": 0, "train_runtime_s": None, "device": device, "selection": describe_selection(training_args, model_args.from_checkpoint),
        "record_crop_probability": data_args.record_crop_probability if cropped else 0.0,
        "record_pair_probability": data_args.record_pair_probability if cropped else 0.0,
        "results": {},
    }
    if training_args.do_train:
        if resume:
            logger.info("Resuming from %s.", resume)
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
    for name in ["validation", *eval_splits]:
        prediction = trainer.predict(prepared[name], metric_key_prefix=name)  # every process takes its share
        metrics = {key.removeprefix(f"{name}_"): value for key, value in prediction.metrics.items()}
        metrics["rows"] = len(prepared[name])
        metrics["device"] = device
        summary["results"][name] = metrics
    if not trainer.is_world_process_zero():
        return summary
    for name in ["validation", *eval_splits]:
        metrics = summary["results"][name]
        plot_confusion(metrics["confusion_matrix"], label_names, f"{name}: Score {metrics['score']:.3f}", output_dir / f"confusion_{name}.png")
    write_results(output_dir, summary)
    # The folder is complete before any upload; the card's snippet names the repo once its full id is known.
    card_repo_id = repo_name if repo_name and "/" in repo_name else None
    write_model_card(output_dir, summary, card_repo_id)
    for name, r in summary["results"].items():
        logger.info("%s: Score %.3f (SE %.3f, SP %.3f, AS %.3f, HS %.3f)", name, r["score"], r["se"], r["sp"], r["as"], r["hs"])
    if repo_name:
        push_folder(output_dir, summary, repo_name, card_repo_id, training_args)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
