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
looks only at a patient-disjoint validation split carved from ``train``; ``--eval_split`` (default
``inter_test``) is scored once at the end and never used for a choice.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import evaluate
import numpy as np
import torch
from huggingface_hub import EvalResult, ModelCardData, create_repo, upload_folder
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import (
    AutoFeatureExtractor,
    EarlyStoppingCallback,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)
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
METRIC_PATH = str(Path(hub_dataset.__file__).parent / "sprsound_score")
DEFAULT_DATASET = str(Path(__file__).resolve().parent.parent / "shared" / "data" / "sprsound")
# Front-end settings per annotation level: events are short (median 1.2 s, 95% < 2.4 s) and are
# tiled to a 2.05 s clip; recordings (up to 15.4 s) are zero-padded to 16.4 s (64 ms frames) with a frame mask.
LEVEL_FEATURES = {
    "event": dict(hop_length=128, n_frames=128, padding_mode="repeat"),
    "record": dict(hop_length=512, n_frames=256, padding_mode="zero"),
}


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
    eval_split: str = field(default="inter_test", metadata={"help": "Split scored once at the end (never used for selection); 'none' to skip."})
    validation_fraction: float = field(default=0.15, metadata={"help": "Share of train (whole patients) held out for model selection."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the patient-disjoint validation split."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows (quick runs)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows of validation and eval splits."})
    record_crop_probability: float = field(
        default=0.5,
        metadata={"help": "Record tasks with event timestamps: chance that a training recording is replaced by a random "
                  "window of it, labelled from the events inside (0 = always whole recordings)."},
    )
    record_crop_min_seconds: float = field(default=3.0, metadata={"help": "Shortest such window (seconds)."})
    record_pair_probability: float = field(
        default=0.0,
        metadata={"help": "Chance that such a window is followed by a window of another training recording, the pair "
                  "labelled from the events of both (e.g. a wheeze then a crackle: CAS & DAS)."},
    )


@dataclass
class ModelArguments:
    preset: str = field(default="small", metadata={"help": "'small' (CPU-trainable) or 'paper' (sized like the paper's model)."})
    from_checkpoint: str | None = field(
        default=None, metadata={"aliases": ["--from"], "help": "Start from this RespSTF checkpoint (folder or Hub id)."}
    )
    ignore_mismatched: bool = field(
        default=False,
        metadata={"aliases": ["--ignore-mismatched", "--ignore_mismatched_sizes"], "help": "Replace the checkpoint's head when its label set differs."},
    )
    imbalance: str = field(
        default="weights",
        metadata={"help": "Class imbalance: 'weights' (inverse sqrt frequency), 'score' (Normal and non-Normal weigh "
                  "half each, like SP and SE in the Score), 'focal', or 'none'."},
    )
    frame_supervision: bool = field(
        default=True, metadata={"help": "Record tasks: also learn frame labels from the event timestamps."}
    )
    early_stopping_patience: int = field(default=5, metadata={"help": "Evaluations without a better validation Score before stopping."})


@dataclass
class FeatureArguments:
    n_scales: int | None = field(default=None, metadata={"help": "CWT scales (default 64 small / 128 paper)."})
    hop_length: int | None = field(default=None, metadata={"help": "Samples per frame (default by level)."})
    n_frames: int | None = field(default=None, metadata={"help": "Frames per example (default by level)."})
    fmin: float = field(default=50.0, metadata={"help": "Lowest CWT centre frequency (Hz)."})
    fmax: float = field(default=3900.0, metadata={"help": "Highest CWT centre frequency (Hz)."})


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
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Keep the epoch with the best validation Score."})
    metric_for_best_model: str = field(default="score", metadata={"help": "Selection metric (official SPRSound Score)."})
    greater_is_better: bool = field(default=True, metadata={"help": "Higher Score is better."})
    num_train_epochs: float = field(default=20.0, metadata={"help": "Epochs."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warm-up steps (a float < 1 is a fraction of training)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device for training."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Batch size per device for evaluation."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best is always kept)."})
    logging_steps: float = field(default=20, metadata={"help": "Log every N steps."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder to resume from, or 'last' for the newest in output_dir."}
    )


def parse_args(argv: list[str] | None = None):
    parser = HfArgumentParser((DataArguments, ModelArguments, FeatureArguments, RespSTFTrainingArguments))
    parser.description = __doc__.split("\n\n")[0]
    return parser.parse_args_into_dataclasses(args=argv)


# -- data ---------------------------------------------------------------------------------------

def is_sprsound_release(folder: Path) -> bool:
    """An SPRSound layout (per ``find_splits``) and not a generic folder with a labels table."""
    if any((folder / name).is_file() for name in METADATA_FILES):
        return False
    try:
        find_splits(folder)
    except FileNotFoundError:
        return False
    return True


def load_data(data_args: DataArguments, task: str | None) -> datasets.DatasetDict:
    """The dataset as a `DatasetDict` with undecoded audio, whatever form ``--dataset`` takes."""
    source = Path(data_args.dataset)
    if source.is_dir() and (source / "dataset_dict.json").is_file():
        data = datasets.load_from_disk(str(source))
    elif source.is_dir() and is_sprsound_release(source):
        if task is None:
            raise ValueError(f"{source} is an SPRSound release: pass --task 11, 12, 21 or 22.")
        data = hub_dataset.load_sprsound(source, task=task, decode=False)
    elif source.is_dir() and hub_dataset.is_icbhi_release(source):
        data = hub_dataset.load_icbhi(source, level=icbhi_level(data_args), decode=False)
    elif source.is_dir():
        names = hub_dataset.task_labels(task) if task else None
        data = hub_dataset.load_audio_folder(source, label_names=names, decode=False)
    elif source.exists():
        raise ValueError(f"--dataset {source} is a file; expected a folder or a Hub dataset id.")
    else:
        data = datasets.load_dataset(data_args.dataset, TASKS[task]["level"] if task else None)
    if "train" not in data:
        raise ValueError(f"--dataset {data_args.dataset} has no 'train' split (it has {list(data)}).")
    return data.cast_column("audio", datasets.Audio(decode=False))


def icbhi_level(data_args: DataArguments) -> str:
    """ICBHI's rows follow the label asked for: one per recording for ``diagnosis``, else one per cycle."""
    patient_column = hub_dataset.ICBHI_LABEL_COLUMNS["patient"]
    return "patient" if data_args.label_column == patient_column else "cycle"


def default_label_column(data_args: DataArguments, task: str | None) -> str:
    if task:
        return TASKS[task]["column"]
    if hub_dataset.is_icbhi_release(data_args.dataset):
        return hub_dataset.ICBHI_LABEL_COLUMNS["cycle"]  # without --label_column, ICBHI loads cycles
    return "label"


def sprsound_validation_patients(data_args: DataArguments) -> list[str] | None:
    """On an SPRSound release, the validation patients of every task: those the record-level split
    (stratified by the 5 record classes) chooses. One set for all four tasks, so a model fine-tuned from
    another task's model (the recipe's 12 -> 22 -> 21 -> 22) never validates on patients that trained it.
    None for other datasets (each task carves its own split)."""
    source = Path(data_args.dataset)
    if not (source.is_dir() and is_sprsound_release(source)):
        return None
    records = hub_dataset.load_sprsound(source, level="record", splits=["train"], decode=False, progress=False)["train"]
    carved = hub_dataset.patient_disjoint_split(records, data_args.validation_fraction, data_args.split_seed, label_column="task22")
    return sorted({patient for patient in carved["validation"]["patient_id"] if patient is not None})


def carve_validation(train_split: datasets.Dataset, data_args: DataArguments, label_column: str) -> datasets.DatasetDict:
    """``train`` and a patient-disjoint ``validation`` split (the same patients for every SPRSound task)."""
    try:
        return hub_dataset.patient_disjoint_split(
            train_split, data_args.validation_fraction, data_args.split_seed, label_column=label_column,
            validation_patients=sprsound_validation_patients(data_args),
        )
    except ValueError as err:
        raise ValueError(f"Cannot carve a validation split from the train split of {data_args.dataset}: {err}") from None


def resolve_label_column(data: datasets.DatasetDict, data_args: DataArguments, task: str | None) -> tuple[str, list[str]]:
    column = data_args.label_column or default_label_column(data_args, task)
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
    """Scalograms computed once, batched (``datasets.map``) on ``device``, kept next to the labels."""

    def compute(batch):
        clips = [hub_dataset.read_audio(audio) for audio in batch["audio"]]
        out = {"labels": batch[label_column]}
        rates = {rate for _, rate in clips}
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


def normal_class(label_names: list[str]) -> int:
    """The class the Score's SP is about: ``Normal``, else class 0 (e.g. a new dataset's ``Healthy``)."""
    return label_names.index(NORMAL_LABEL) if NORMAL_LABEL in label_names else 0


def class_weights(labels: list[int], label_names: list[str], scheme: str) -> list[float]:
    """Per-class loss weights, normalised to mean 1.

    ``weights``: inverse square-root class frequency (absent classes get the largest weight).
    ``score``: the Normal class and all other classes together weigh half each, every non-Normal
    sample alike, as SP and SE do in the official Score.
    """
    counts = np.bincount(labels, minlength=len(label_names)).astype(float)
    if scheme == "score":
        normal = normal_class(label_names)
        others = counts.sum() - counts[normal]
        weights = np.full(len(counts), 1 / max(others, 1))
        weights[normal] = 1 / max(counts[normal], 1)
    else:
        weights = 1 / np.sqrt(np.maximum(counts, 1))
    return (weights / weights.mean()).round(4).tolist()


def build_model_and_extractor(model_args, feature_args, task, label_names, train_labels, level, with_frames):
    id2label = dict(enumerate(label_names))
    label2id = {name: i for i, name in enumerate(label_names)}
    if model_args.imbalance not in IMBALANCE_SCHEMES:
        raise ValueError(f"--imbalance must be one of {', '.join(IMBALANCE_SCHEMES)}; got {model_args.imbalance!r}.")
    loss_settings = {
        "loss": "focal" if model_args.imbalance == "focal" else "cross_entropy",
        "class_weights": class_weights(train_labels, label_names, model_args.imbalance)
        if model_args.imbalance in ("weights", "score") else None,
    }
    if model_args.from_checkpoint:
        source = model_args.from_checkpoint
        config = RespSTFConfig.from_pretrained(source)
        if [config.id2label[i] for i in range(config.num_labels)] != label_names and not model_args.ignore_mismatched:
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
        model = RespSTFForAudioClassification.from_pretrained(
            source, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched
        )
        extractor = AutoFeatureExtractor.from_pretrained(source)
        if feature_args.hop_length and feature_args.hop_length != extractor.hop_length:
            raise ValueError(
                f"--hop_length {feature_args.hop_length} differs from the checkpoint's {extractor.hop_length}: "
                "its convolutions were learned at that frame rate."
            )
        if feature_args.n_frames:  # a longer or shorter clip at the same frame rate (e.g. events -> recordings)
            extractor.n_frames = feature_args.n_frames
            extractor.padding_mode = LEVEL_FEATURES[level]["padding_mode"]
        return model, extractor
    if model_args.preset not in ("small", "paper"):
        raise ValueError(f"--preset must be 'small' or 'paper', got {model_args.preset!r}.")
    front = dict(LEVEL_FEATURES[level])
    front["n_scales"] = feature_args.n_scales or (128 if model_args.preset == "paper" else 64)
    for name in ("hop_length", "n_frames"):
        if getattr(feature_args, name):
            front[name] = getattr(feature_args, name)
    extractor = RespSTFFeatureExtractor(fmin=feature_args.fmin, fmax=feature_args.fmax, **front)
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


def make_compute_metrics(label_names: list[str]):
    metric = evaluate.load(METRIC_PATH, keep_in_memory=True)
    normal = normal_class(label_names)

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        result = metric.compute(
            predictions=logits.argmax(-1), references=eval_pred.label_ids, normal_label=normal, label_names=label_names
        )
        flat = {key: float(result[key]) for key in ("score", "se", "sp", "as", "hs")}
        for name, recall in result["per_class_recall"].items():
            flat[f"recall_{re.sub(r'[^0-9a-zA-Z]+', '_', name).strip('_').lower()}"] = float(recall)
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
    chosen = "best epoch"
    if seeds:
        listed = ", ".join(map(str, seeds["validation_score_by_seed"]))
        chosen += (f" of each of seeds {listed}, then the mean of their weights (a uniform soup), above each seed on validation"
                   if seeds["kept"] == "soup" else f"; seed {seeds['kept']} of seeds {listed}")
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

Classes (`id2label`): {', '.join(f'{i} = {name}' for i, name in enumerate(label_names))}.

## Measured scores (official SPRSound Score)

Selection ({chosen}) used only the patient-disjoint validation split carved from `train`.{sprsound_splits if task else ''}

| split | Score | SE | SP | AS | HS | rows |
|---|---|---|---|---|---|---|
{rows}

## Use

```python
from transformers import pipeline
classify = pipeline("audio-classification", model="{repo_id or '<this folder or repo id>'}", trust_remote_code=True)
classify({{"raw": waveform, "sampling_rate": 8000}})  # or a file path (needs ffmpeg)
```

The feature extractor resamples any rate to 8 kHz and fits each input to {extractor.n_frames} frames
({extractor.clip_seconds:.2f} s), as in training: a longer input is centre-cropped,
with a warning (call the feature extractor with `truncation=False` to keep it whole). With `respstf` installed no
`trust_remote_code` is needed.
"""
    (output_dir / "README.md").write_text(card)


def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, feature_args, training_args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    task = normalize_task(data_args.task) if data_args.task else None
    if not training_args.do_train and not model_args.from_checkpoint:
        raise ValueError("--do_train false scores a trained model: pass --from <checkpoint>.")
    if model_args.from_checkpoint:
        check_checkpoint_source(model_args.from_checkpoint)
    for name in ("record_crop_probability", "record_pair_probability"):
        if not 0 <= getattr(data_args, name) <= 1:
            raise ValueError(f"--{name} must be in [0, 1], got {getattr(data_args, name)}.")
    if data_args.record_crop_min_seconds <= 0:
        raise ValueError(f"--record_crop_min_seconds must be positive, got {data_args.record_crop_min_seconds}.")
    set_seed(training_args.seed)

    data = load_data(data_args, task)
    label_column, label_names = resolve_label_column(data, data_args, task)
    level = TASKS[task]["level"] if task else "event"
    with_frames = model_args.frame_supervision and "events" in data["train"].column_names and level == "record"

    if "validation" not in data:
        data["train"], data["validation"] = carve_validation(data["train"], data_args, label_column).values()
    if data_args.max_train_samples:
        data["train"] = data["train"].shuffle(seed=training_args.seed).select(range(min(data_args.max_train_samples, len(data["train"]))))
    eval_splits = [] if data_args.eval_split == "none" else [data_args.eval_split]
    for name in eval_splits:
        if name not in data:
            raise ValueError(f"--eval_split {name!r} not in {data_args.dataset} (splits: {list(data)}).")
    for name in ["validation", *eval_splits]:
        if data_args.max_eval_samples:
            data[name] = data[name].select(range(min(data_args.max_eval_samples, len(data[name]))))
    for name in ["train", "validation", *eval_splits]:
        if len(data[name]) == 0:
            raise ValueError(
                f"Split {name!r} of {data_args.dataset} is empty"
                + (" (too few patients to carve a patient-disjoint validation split)" if name in ("train", "validation") else "")
                + "."
            )

    model, extractor = build_model_and_extractor(
        model_args, feature_args, task, label_names, data["train"][label_column], level, with_frames
    )
    logger.info("model: %s parameters; features %s", f"{model.num_parameters():,}", extractor.to_dict())
    featurized = (["train"] if training_args.do_train else []) + ["validation", *eval_splits]
    prepared = datasets.DatasetDict(
        {name: featurize(data[name], extractor, label_column, with_frames, str(training_args.device)) for name in featurized}
    ).with_format("torch")

    train_dataset = prepared["train"] if training_args.do_train else None
    if train_dataset is not None and with_frames and data_args.record_crop_probability > 0:
        train_dataset = RecordCrops(
            train_dataset, task, label_names, data_args.record_crop_probability,
            min_frames=round(data_args.record_crop_min_seconds / extractor.frame_seconds),
            min_event_frames=round(MIN_EVENT_SECONDS_IN_CROP / extractor.frame_seconds),
            pair_probability=data_args.record_pair_probability,
        )
    training_args.label_names = ["labels"]  # frame_labels are an input of the loss, not a prediction target
    push = training_args.push_to_hub
    training_args.push_to_hub = False  # pushed below, with our model card and the code files
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=prepared["validation"],
        compute_metrics=make_compute_metrics(label_names),
        callbacks=[EarlyStoppingCallback(model_args.early_stopping_patience)]
        if model_args.early_stopping_patience and training_args.eval_strategy != "no"
        else [],
    )
    output_dir = Path(training_args.output_dir)
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"  # autocast in training and scoring
    device = describe_device(training_args.device, precision)
    cropped = isinstance(train_dataset, RecordCrops)
    summary = {
        "task": task, "labels": label_names, "dataset": data_args.dataset,
        "preset": None if model_args.from_checkpoint else model_args.preset,  # a fine-tuned model has its parent's
        "from": model_args.from_checkpoint, "parameters": model.num_parameters(), "train_rows": 0,
        "global_step": 0, "train_runtime_s": None, "device": device,
        "record_crop_probability": data_args.record_crop_probability if cropped else 0.0,
        "record_pair_probability": data_args.record_pair_probability if cropped else 0.0,
        "results": {},
    }
    if training_args.do_train:
        resume = training_args.resume_from_checkpoint
        if resume == "last":
            resume = get_last_checkpoint(training_args.output_dir)
        train_result = trainer.train(resume_from_checkpoint=resume)
        summary.update(train_rows=len(train_dataset), global_step=train_result.global_step,
                       train_runtime_s=train_result.metrics.get("train_runtime"))
    in_place = Path(model_args.from_checkpoint or "").resolve() == output_dir.resolve()
    if not training_args.do_train and in_place and (output_dir / "results.json").is_file():
        summary = json.loads((output_dir / "results.json").read_text())  # scoring a trained run: keep how it was trained
    if training_args.do_train or not in_place:
        trainer.save_model(str(output_dir))
        extractor.save_pretrained(str(output_dir))
        (output_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle: ship safetensors/JSON only
    for name in ["validation", *eval_splits]:
        prediction = trainer.predict(prepared[name], metric_key_prefix=name)
        metrics = {key.removeprefix(f"{name}_"): value for key, value in prediction.metrics.items()}
        metrics["rows"] = len(prepared[name])
        metrics["device"] = device
        summary["results"][name] = metrics
        plot_confusion(metrics["confusion_matrix"], label_names, f"{name}: Score {metrics['score']:.3f}", output_dir / f"confusion_{name}.png")
    write_results(output_dir, summary)
    repo_url = None
    if push:
        # The id the Hub gives back has the namespace a bare --hub_model_id lacks: the card's snippet loads it.
        repo_url = create_repo(training_args.hub_model_id or output_dir.name, exist_ok=True,
                               private=training_args.hub_private_repo, token=training_args.hub_token)
    write_model_card(output_dir, summary, repo_url and repo_url.repo_id)
    for name, r in summary["results"].items():
        logger.info("%s: Score %.3f (SE %.3f, SP %.3f, AS %.3f, HS %.3f)", name, r["score"], r["se"], r["sp"], r["as"], r["hs"])
    if push:
        upload_folder(repo_id=repo_url.repo_id, folder_path=str(output_dir), ignore_patterns=["checkpoint-*", "runs/*"],
                      token=training_args.hub_token, commit_message=f"respstf train.py on {Path(summary['dataset']).name}")
        logger.info("pushed to %s", repo_url)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
