"""Training data: splits, label columns and scalograms computed once per split."""

from __future__ import annotations

import logging
import warnings

import datasets
import numpy as np

import respstf.hub_dataset as hub_dataset
from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset import DatasetSource
from respstf.hub_dataset.labels import DETECTION_LABELS, DETECTION_TASK, POOR_QUALITY_LABEL, frame_label
from respstf.modeling import RespSTFConfig

from .arguments import CV_FOLDS, check_detection_imbalance
from .model_setup import class_names

logger = logging.getLogger("respstf.training")


def load_training_data(source: DatasetSource, task: str | None, label_column: str | None, on_missing: str) -> datasets.DatasetDict:
    """``source`` as a `DatasetDict` that has the ``train`` split a run carves its validation split from. For the event
    detector, an SPRSound release or a folder whose metadata table lists events (``file,label,start,end``, labels naming
    SPRSound event types: `respstf.hub_dataset.folder.load_event_folder`), one row per recording either way."""
    if task == DETECTION_TASK and source.kind not in ("sprsound", "folder"):
        raise ValueError(f"--task {DETECTION_TASK} learns SPRSound's event types from event timestamps: an SPRSound release, "
                         "or a folder with a metadata.csv of file,label,start,end[,patient_id] whose labels are SPRSound "
                         f"event types; --dataset {source.location} is a {source.kind} dataset.")
    data = source.load(task, label_column, on_missing)
    if "train" not in data:
        # Even scoring needs train: validation is carved from it (for SPRSound, the same patients for every task).
        hint = ""
        if source.kind == "sprsound":
            hint = (" (put the release's train folders under the same root, e.g. BioCAS2022/ beside BioCAS2023/); to "
                    f"score a model on {next(iter(data))} alone: python benchmarks/score_interval.py --models <model> "
                    f"--dataset {source.location} --split {next(iter(data))}")
        raise ValueError(f"--dataset {source.location} has no 'train' split (it has {list(data)}): train.py carves "
                         f"its validation split from train, also to score a model{hint}.")
    return data


def carve_validation(train_split: datasets.Dataset, source: DatasetSource, label_column: str, fraction: float,
                     seed: int, on_missing: str = "error", cv_fold: int | None = None) -> datasets.DatasetDict:
    """``train`` and a patient-disjoint ``validation`` split (the same patients for every SPRSound task): about
    ``fraction`` of the patients, or cross-validation fold ``cv_fold`` of :data:`CV_FOLDS` (SPRSound's shipped folds,
    else folds of ``train_split``'s patients made with ``seed``)."""
    if "patient_id" in train_split.column_names:
        unknown = sum(patient is None for patient in train_split["patient_id"])
        if unknown:
            logger.warning(
                "%d of the %d training rows of %s have no patient_id: each such file counts as its own patient, so one "
                "patient's recordings may fall on both sides of the validation split, and selection then favours "
                "models that recognise patients. Give every file a patient_id (a metadata.csv column).",
                unknown, train_split.num_rows, source.location)
    try:
        patients = source.validation_patients(fraction, seed, on_missing, cv_fold)
        if patients is None and cv_fold is not None:
            folds = hub_dataset.patient_folds(train_split, CV_FOLDS, seed, label_column=label_column)
            patients = [patient for patient, fold in folds.items() if fold == cv_fold]
        return hub_dataset.patient_disjoint_split(train_split, fraction, seed, label_column=label_column,
                                                  validation_patients=patients)
    except ValueError as err:
        raise ValueError(f"Cannot carve a validation split from the train split of {source.location}: {err}") from None


def add_validation_split(data: datasets.DatasetDict, source: DatasetSource, label_column: str, fraction: float, seed: int,
                         on_missing: str = "error", cv_fold: int | None = None) -> None:
    """Give ``data`` the ``validation`` split model selection looks at, in place: carved from ``train``
    (`carve_validation`) unless the dataset has its own, which ``cv_fold`` cannot then choose. ``fraction`` 0 (and no
    ``cv_fold``) carves none: every row of ``train`` trains (a recipe chosen beforehand, e.g. on cross-validation)."""
    if "validation" in data:
        if cv_fold is not None:
            raise ValueError(f"--cv_fold {cv_fold}: {source.location} has its own validation split, so no fold of train's "
                             "patients is held out; leave --cv_fold out, or drop that split to cross-validate.")
        return
    if fraction == 0 and cv_fold is None:
        logger.info("--validation_fraction 0: no validation split, all %d rows of train train.", len(data["train"]))
        return
    data["train"], data["validation"] = carve_validation(data["train"], source, label_column, fraction, seed, on_missing,
                                                         cv_fold).values()


def resolve_label_column(data: datasets.DatasetDict, source: DatasetSource, label_column: str | None,
                         task: str | None) -> tuple[str, list[str]]:
    """The label column (``label_column``, else the source's default) and its class names, checked against the task."""
    column = label_column or source.default_label_column(task)
    if not label_column and column not in data["train"].features and "label" in data["train"].features:
        column = "label"  # a folder of audio + labels with the task's own labels (checked below)
    feature = data["train"].features.get(column)
    if not isinstance(feature, datasets.ClassLabel):
        raise ValueError(
            f"Label column {column!r} not found as a ClassLabel in {source.location} "
            f"(columns: {data['train'].column_names}); pass --label_column."
        )
    if task and feature.names != hub_dataset.task_labels(task):
        raise ValueError(
            f"Column {column!r} has labels {feature.names}, but task {task} expects {hub_dataset.task_labels(task)}."
        )
    return column, feature.names


def resolve_eval_splits(data: datasets.DatasetDict, eval_split: str | None, location: str) -> list[str]:
    """The split scored once at the end: ``eval_split``, else the dataset's ``inter_test`` (SPRSound) or ``test``."""
    if eval_split == "none":
        return []
    if eval_split is not None:
        if eval_split not in data:
            raise ValueError(f"--eval_split {eval_split!r} not in {location} (splits: {list(data)}).")
        return [eval_split]
    found = [name for name in ("inter_test", "test") if name in data][:1]
    if found:
        logger.info("Split %r is scored once at the end (--eval_split).", found[0])
    else:
        logger.info("%s has no 'inter_test' or 'test' split (splits: %s): no final scoring beyond validation; "
                    "pass --eval_split <split> to score one.", location, list(data))
    return found


def limit_and_check_splits(data: datasets.DatasetDict, scored: list[str], location: str, max_train_samples: int | None,
                           max_eval_samples: int | None, seed: int) -> None:
    """Cut ``train`` (shuffled) and the ``scored`` splits to their row limits, in place; refuse an empty split."""
    if max_train_samples is not None:
        data["train"] = data["train"].shuffle(seed=seed).select(range(min(max_train_samples, len(data["train"]))))
    if max_eval_samples is not None:
        for name in scored:
            data[name] = data[name].select(range(min(max_eval_samples, len(data[name]))))
    for name in ["train", *scored]:
        if len(data[name]) == 0:
            raise ValueError(
                f"Split {name!r} of {location} is empty"
                + (" (too few patients to carve a patient-disjoint validation split)" if name in ("train", "validation") else "")
                + "."
            )


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


def report_row_lengths(prepared: datasets.DatasetDict, extractor: RespSTFFeatureExtractor, new_dataset: bool) -> None:
    """Say how many rows hold too little to hear (shorter than the extractor's ``SHORTEST_SOUND_SECONDS``, or
    silent), and how many the extractor centre-crops to its clip: by design for SPRSound's events (a few are
    longer), but on a new dataset it may cut whole recordings down to an event model's 2 s."""
    for name, split in prepared.items():
        seconds, silent = np.asarray(split["seconds"]), np.asarray(split["silent"], dtype=bool)
        shorter = seconds[seconds < extractor.SHORTEST_SOUND_SECONDS]
        if len(shorter):
            logger.warning("%s: %d of %d rows are shorter than %.1f s (shortest %.0f ms): little for the model to hear "
                           "in them.", name, len(shorter), len(seconds), extractor.SHORTEST_SOUND_SECONDS, shorter.min() * 1000)
        if silent.any():
            logger.warning("%s: %d of %d rows are silent (constant): nothing for the model to hear in them.", name,
                           silent.sum(), len(seconds))
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


def frame_targets(events: list[dict], duration_s: float, extractor: RespSTFFeatureExtractor,
                  detection: bool = False) -> np.ndarray:
    """Per-frame classes of one recording from its events, -100 outside events: :data:`FRAME_LABELS` (a record
    model's frame head), or with ``detection`` the event types of :data:`DETECTION_LABELS`, where every frame of a
    recording without events (Poor Quality: too poor to annotate) is Poor Quality."""
    targets = np.full(extractor.n_frames, -100, dtype=np.int64)
    # The extractor centre-crops recordings longer than its clip; shift the events the same way.
    offset = extractor.crop_start(round(duration_s * extractor.sampling_rate)) / extractor.sampling_rate
    if detection and not events:
        targets[:min(extractor.n_frames, int(round(duration_s / extractor.frame_seconds)))] = DETECTION_LABELS.index(POOR_QUALITY_LABEL)
    for event in events:
        first = max(0, int(round((event["start_s"] - offset) / extractor.frame_seconds)))
        last = min(extractor.n_frames, int(round((event["end_s"] - offset) / extractor.frame_seconds)))
        targets[first:last] = DETECTION_LABELS.index(event["type"]) if detection else frame_label(event["type"])
    return targets


def detection_class_weights(split: datasets.Dataset, scheme: str) -> list[float] | None:
    """The event detector's frame-loss class weights (:data:`DETECTION_LABELS`) for ``--imbalance scheme``: inverse
    square-root of each class's annotated seconds in ``split`` (proportional to its frames; Poor Quality: the whole
    of such recordings), those of the classes present scaled to mean 1; None for ``none``.

    A class with no annotated seconds in ``split`` (Poor Quality in a new dataset, whose listed recordings all have
    events; a rare type in a small one) gets weight 1, the mean: it has no training target, so its weight changes no
    training loss, and a validation frame of it counts as much as an average one in the evaluation loss."""
    check_detection_imbalance(scheme)
    if scheme == "none":
        return None
    seconds = np.zeros(len(DETECTION_LABELS))
    for events, duration_s in zip(split["events"], split["duration_s"]):
        if not events:
            seconds[DETECTION_LABELS.index(POOR_QUALITY_LABEL)] += duration_s
        for event in events:
            seconds[DETECTION_LABELS.index(event["type"])] += event["end_s"] - event["start_s"]
    present = seconds > 0
    weights = np.ones(len(DETECTION_LABELS))
    if present.any():
        weights[present] = 1 / np.sqrt(seconds[present])
        weights[present] /= weights[present].mean()
    return weights.round(4).tolist()


def featurize(
    split: datasets.Dataset, extractor: RespSTFFeatureExtractor, label_column: str, with_frames: bool, device: str = "cpu",
    detection: bool = False,
) -> datasets.Dataset:
    """Scalograms computed once, batched (``datasets.map``) on ``device``, kept next to the labels and to each
    row's length before it was fitted to the clip (``seconds``). With ``detection`` (an event detector's rows) the
    ``labels`` are the frames' classes (`frame_targets`) and ``record_labels`` the rows' ``label_column``."""

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
            # The extractor's warnings about short, silent or clipped inputs would name a row by its place in the batch:
            # report_row_lengths reports short and silent rows once per split instead.
            warnings.filterwarnings("ignore", message=r"audio input \d+ is (constant|\d+ ms long|clipped)", category=UserWarning)
            # truncation=True: an event or recording longer than the clip is centre-cropped on purpose (see frame_targets).
            if len(rates) == 1:
                features = extractor([array for array, _ in clips], sampling_rate=rates.pop(), truncation=True, device=device)
                out["input_features"] = list(features["input_features"])
                out["attention_mask"] = list(features["attention_mask"])
            else:  # mixed-rate datasets (e.g. ICBHI): resample clip by clip
                parts = [extractor(array, sampling_rate=rate, truncation=True, device=device) for array, rate in clips]
                out["input_features"] = [p["input_features"][0] for p in parts]
                out["attention_mask"] = [p["attention_mask"][0] for p in parts]
        if detection:
            out["record_labels"] = out["labels"]
            out["labels"] = [frame_targets(e, d, extractor, detection=True) for e, d in zip(batch["events"], batch["duration_s"])]
        elif with_frames:
            out["frame_labels"] = [frame_targets(e, d, extractor) for e, d in zip(batch["events"], batch["duration_s"])]
        return out

    keep = [c for c in split.column_names if c not in ("audio",)]
    return split.map(compute, batched=True, batch_size=32, remove_columns=keep + ["audio"], desc="CWT scalograms")
