"""The model and feature extractor a run trains: new (a preset) or from a checkpoint, and its loss's class weights."""

from __future__ import annotations

import logging
import re

import numpy as np
import torch
from transformers import AutoFeatureExtractor

from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset.labels import DETECTION_LABELS, DETECTION_TASK, EVENT_TYPES, FRAME_LABELS, NORMAL_LABEL, detection_rule
from respstf.modeling import RespSTFConfig, RespSTFForAudioClassification, RespSTFForAudioFrameClassification

from .arguments import LEVEL_FEATURES, RECORD_SECONDS

logger = logging.getLogger("respstf.training")

IMBALANCE_SCHEMES = ("weights", "score", "focal", "none")


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


def class_names(config: RespSTFConfig) -> list[str]:
    """A model's classes in id order."""
    return [config.id2label[i] for i in range(config.num_labels)]


def loss_class_weights(train_labels: list[int], label_names: list[str], scheme: str,
                       normal_label: str | None = None) -> list[float] | None:
    """The clip loss's class weights for ``--imbalance scheme`` (None: unweighted), checked against the schemes."""
    if scheme not in IMBALANCE_SCHEMES:
        raise ValueError(f"--imbalance must be one of {', '.join(IMBALANCE_SCHEMES)}; got {scheme!r}.")
    return class_weights(train_labels, label_names, scheme, normal_label) if scheme in ("weights", "score") else None


def check_checkpoint_labels(config: RespSTFConfig, source: str, label_names: list[str], ignore_mismatched: bool) -> None:
    """Refuse a ``--from`` checkpoint whose classes are not the dataset's, unless its head is to be replaced."""
    predicts = class_names(config)
    if predicts == label_names or ignore_mismatched:
        return
    if all(re.fullmatch(r"LABEL_\d+", name) for name in predicts):
        # transformers' names for classes a config never named: the trained head may well be the dataset's.
        advice = (f"if they are the dataset's classes {label_names} in that order, write those names into its "
                  "config.json (id2label and label2id); --ignore-mismatched would throw its trained head away"
                  if len(predicts) == len(label_names) else
                  f"the dataset has {len(label_names)} ({label_names}): pass --ignore-mismatched to replace the head")
        raise ValueError(f"Checkpoint {source} has {len(predicts)} classes without names ({predicts[0]} … {predicts[-1]} "
                         f"in its config.json); {advice}.")
    raise ValueError(f"Checkpoint {source} predicts {predicts} but the dataset's labels are {label_names}; "
                     "pass --ignore-mismatched to replace the classification head.")


# The event detector's record decision before cross-validation chooses it (see respstf.modeling.detection_respstf).
DETECTION_DECISION = {"evidence_seconds": 1.0, "record_logit_adjustment": {"continuous": 0.0, "discontinuous": 0.0, "poor_quality": 0.0}}


def build_model_and_extractor(model_args, feature_args, task, label_names, level, with_frames, training=True):
    """The model (``model_args.preset``, or ``model_args.from_checkpoint``) and feature extractor of a run, their
    config recording the task (``finetuning_task``) and ``annotation_level``. A model to be trained (``training``)
    starts without its parent's ``logit_adjustment``: that decision prior was chosen for the parent's classes and
    data, and would steer validation. For event detection (``task`` ``"events"``) the model is a
    `RespSTFForAudioFrameClassification` over :data:`DETECTION_LABELS` with the record rule in its config, its
    head new unless the parent is a detector (an event model's head starts it: each event type's weights, applied
    to each frame). Returns ``(model, extractor)``."""
    detection = task == DETECTION_TASK
    if detection:
        label_names = DETECTION_LABELS  # the frames' classes; label_names are the rows' record classes
    id2label = dict(enumerate(label_names))
    label2id = {name: i for i, name in enumerate(label_names)}
    settings = dict(loss="focal" if model_args.imbalance == "focal" else "cross_entropy", finetuning_task=task,
                    annotation_level=level)
    if model_args.frequency_focus_frames is not None:  # same weights, each frame's bands from its own stretch
        settings["frequency_focus_frames"] = model_args.frequency_focus_frames
    model_class = RespSTFForAudioFrameClassification if detection else RespSTFForAudioClassification
    if model_args.from_checkpoint:
        source = model_args.from_checkpoint
        config, member_weights = parent_config_and_weights(model_args, training)
        if training and config.logit_adjustment is not None:
            logger.info("--from %s: its logit_adjustment (a decision prior for its own data) is not carried into "
                        "training.", source)
            settings["logit_adjustment"] = None
        new_detector = detection and config.detection is None
        if new_detector and not training:
            raise ValueError(f"--task {DETECTION_TASK} --do_train false: --from {source} is not an event detector (its "
                             "config.json has no detection); train one from it (leave --do_train out).")
        if detection:
            # A detector trained from another starts from the default decision, as a classifier drops its parent's
            # logit_adjustment: the parent's was chosen for its own validation data.
            rule = {**config.detection, **DETECTION_DECISION} if training and config.detection else config.detection
            settings.update(detection=rule or {**detection_rule(), **DETECTION_DECISION}, num_frame_labels=0)
        else:
            settings["detection"] = None  # a classifier fine-tuned from a detector is no detector
            check_checkpoint_labels(config, source, label_names, model_args.ignore_mismatched)
        parent_labels = class_names(config)
        config.id2label, config.label2id = id2label, label2id  # also sets num_labels
        if with_frames and not config.num_frame_labels:
            config.num_frame_labels = len(FRAME_LABELS)  # a new frame head, e.g. an event model moving to records
        for name, value in settings.items():
            setattr(config, name, value)
        set_time_pool(config, model_args.stage_time_pool)
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
        # A fold ensemble's member comes as weights in memory (state_dict); any other parent is read from its folder.
        model = model_class.from_pretrained(None if member_weights else source, config=config, state_dict=member_weights,
                                            ignore_mismatched_sizes=model_args.ignore_mismatched or new_detector)
        if new_detector:
            start_detector_head(model, source, parent_labels, member_weights)
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
    settings.update(n_scales=extractor.n_scales, id2label=id2label, label2id=label2id,
                    num_frame_labels=len(FRAME_LABELS) if with_frames else 0)
    if detection:
        settings["detection"] = {**detection_rule(), **DETECTION_DECISION}
    config = RespSTFConfig.paper(**settings) if model_args.preset == "paper" else RespSTFConfig(**settings)
    set_time_pool(config, model_args.stage_time_pool)
    config._validate()
    return model_class(config), extractor


def set_time_pool(config: RespSTFConfig, time_pool: list[int] | None) -> None:
    """Give each backbone stage of ``config`` the time pooling of ``time_pool`` (``--stage_time_pool``, one factor a
    stage; None: as it is), its frequency pooling kept: pooling has no weights, so a ``--from`` checkpoint's load as
    they are, with output frames as long as the stem's stride times the factors."""
    if time_pool is None:
        return
    if len(time_pool) != len(config.stage_pool) or any(factor < 1 for factor in time_pool):
        raise ValueError(f"--stage_time_pool {' '.join(map(str, time_pool))}: give one positive factor for each of the "
                         f"model's {len(config.stage_pool)} stages (now {' '.join(str(t) for _, t in config.stage_pool)}).")
    config.stage_pool = [[frequency, time] for (frequency, _), time in zip(config.stage_pool, time_pool)]


def parent_config_and_weights(model_args, training: bool) -> tuple[RespSTFConfig, dict[str, torch.Tensor] | None]:
    """The ``--from`` checkpoint's config, and None for its weights (read from the folder when the model is built); for a
    fold ensemble (the bundled task checkpoints), its member ``--from_member``'s config and weights, as that model was
    trained (`RespSTFForAudioClassification.member`). Raises ValueError for an ensemble when not ``training`` (train.py
    scores one model) or a member it lacks."""
    source = model_args.from_checkpoint
    config = RespSTFConfig.from_pretrained(source)
    if config.ensemble_size == 1:
        return config, None
    if not training:
        raise ValueError(f"--from {source} is an ensemble of {config.ensemble_size} models: train.py scores one model "
                         "(benchmarks/score_interval.py scores an ensemble; training from it fine-tunes its member "
                         "--from_member).")
    if not 0 <= model_args.from_member < config.ensemble_size:
        raise ValueError(f"--from_member {model_args.from_member}: {source} is an ensemble of {config.ensemble_size} models, "
                         f"members 0 to {config.ensemble_size - 1}.")
    logger.info("--from %s is a fold ensemble of %d models: fine-tuning its member %d (--from_member).",
                source, config.ensemble_size, model_args.from_member)
    member = RespSTFForAudioClassification.from_pretrained(source).member(model_args.from_member)
    return member.config, member.state_dict()


def start_detector_head(model: RespSTFForAudioFrameClassification, source: str, parent_labels: list[str],
                        parent_weights: dict[str, torch.Tensor] | None = None) -> None:
    """Start a new detector's frame head from its parent event model's classifier (Task 1-2: the event types), whose
    rows score a pooled event embedding by type; applied to each frame embedding they are a head that already tells
    the types apart. Poor Quality (no parent row) keeps its fresh initialisation. Any other parent: a fresh head.
    ``source``: the parent as the user named it (``--from``); ``parent_weights``: its weights when already in memory (a
    fold ensemble's member), else read from ``source``."""
    if parent_labels != EVENT_TYPES:
        logger.info("--from %s predicts %s, not the event types: the detector's frame head starts fresh.", source, parent_labels)
        return
    if parent_weights is None:
        parent_weights = RespSTFForAudioClassification.from_pretrained(source).state_dict()
    with torch.no_grad():
        rows = [DETECTION_LABELS.index(name) for name in EVENT_TYPES]
        model.classifier.weight[rows] = parent_weights["classifier.weight"]
        model.classifier.bias[rows] = parent_weights["classifier.bias"]
    logger.info("The detector's frame head starts from %s's event classifier (Poor Quality: new).", source)
