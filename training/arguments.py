"""Checks and defaults of train.py's arguments, made before any data is read."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import AutoFeatureExtractor, HfArgumentParser

from respstf.hub_dataset import DETECTION_TASK, normalize_task, task_spec
from respstf.modeling import RespSTFConfig, annotation_level

logger = logging.getLogger("respstf.training")
CV_FOLDS = 5  # patient folds of cross-validation (--cv_fold 0 … 4)

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
# The event detector's: whole recordings unless asked (its recipe trains on them).
DETECTION_DEFAULTS = {"record_crop_probability": 0.0, "record_crop_min_seconds": 3.0, "record_pair_probability": 0.0}


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


def check_detection_imbalance(scheme: str) -> None:
    """Refuse an ``--imbalance`` scheme the event detector's frame loss does not have."""
    if scheme not in ("weights", "none"):
        raise ValueError(f"--imbalance {scheme}: event detection weighs its frame classes by 'weights' (inverse sqrt of "
                         "their annotated seconds) or 'none'.")


def check_arguments(data_args, model_args, training_args) -> None:
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
    if training_args.label_smoothing_factor:
        # The Trainer's smoother would replace the model's loss: the class weights and the frame loss would be dropped.
        raise ValueError(f"--label_smoothing_factor {training_args.label_smoothing_factor:g}: RespSTF's loss smooths "
                         "labels itself (RespSTFConfig.label_smoothing, kept with its class weights and frame loss); "
                         "leave the option out.")
    detection = bool(data_args.task) and normalize_task(data_args.task) == DETECTION_TASK
    if detection:
        check_detection_imbalance(model_args.imbalance)
    if model_args.adventitious_loss_weight and not detection:
        raise ValueError(f"--adventitious_loss_weight {model_args.adventitious_loss_weight:g}: a frame loss of the event "
                         "detector; pass --task events, or leave the option out.")
    if model_args.adventitious_loss_weight < 0:
        raise ValueError(f"--adventitious_loss_weight must be 0 or more, got {model_args.adventitious_loss_weight:g}.")
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
    if data_args.cv_fold is not None and not 0 <= data_args.cv_fold < CV_FOLDS:
        raise ValueError(f"--cv_fold must be one of 0 … {CV_FOLDS - 1} (the patient folds), got {data_args.cv_fold}.")
    if data_args.validation_fraction == 0:  # all of train trains: nothing is held out to choose weights on
        if data_args.cv_fold is not None:
            raise ValueError(f"--validation_fraction 0 with --cv_fold {data_args.cv_fold}: the fold's patients would be held "
                             "out after all; leave one of them out.")
        if training_args.do_train and training_args.eval_strategy != "no":
            raise ValueError("--validation_fraction 0 leaves no validation split to choose weights on: pass "
                             "--eval_strategy no (the last step's weights are kept; choose the epochs beforehand, e.g. on "
                             "--cv_fold runs).")
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(data_args, name) is not None and getattr(data_args, name) < 1:
            raise ValueError(f"--{name} must be 1 or more (leave it out for all rows), got {getattr(data_args, name)}.")


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


def resolve_level(level: str | None, task: str | None, from_checkpoint: str | None = None) -> str:
    """The annotation level the front end is built for: the task's, else ``level`` (``--level``), else the
    ``--from`` checkpoint's (`respstf.modeling.annotation_level`), else event."""
    if level not in (None, *LEVEL_FEATURES):
        raise ValueError(f"--level must be 'event' or 'record', got {level!r}.")
    if task and level not in (None, task_spec(task)["level"]):
        raise ValueError(f"--level {level}: task {task} is {task_spec(task)['level']} level.")
    if task or level:
        return task_spec(task)["level"] if task else level
    if from_checkpoint:
        config, extractor = RespSTFConfig.from_pretrained(from_checkpoint), AutoFeatureExtractor.from_pretrained(from_checkpoint)
        return annotation_level(config, extractor)
    return "event"


def complete_checkpoints(output_dir: str | Path) -> dict[int, Path]:
    """The ``checkpoint-<step>`` folders of ``output_dir`` whose save finished, by step. The Trainer writes
    ``trainer_state.json`` last, so a folder whose ``trainer_state.json`` parses and names the folder's step is
    complete; a run killed during a save leaves a newer folder that is not."""
    complete = {}
    for folder in Path(output_dir).glob("checkpoint-*"):
        try:
            step = json.loads((folder / "trainer_state.json").read_text())["global_step"]
        except (OSError, ValueError, KeyError):
            continue
        if folder.name == f"checkpoint-{step}":
            complete[step] = folder
    return complete


def resolve_resume(training_args) -> str | None:
    """The checkpoint folder ``--resume_from_checkpoint`` names: ``last`` (or ``true``) is the newest complete one in
    output_dir (a newer folder whose save a kill cut short is passed over, with a warning)."""
    resume = training_args.resume_from_checkpoint
    if resume is None:
        return None
    if not training_args.do_train:
        raise ValueError(f"--resume_from_checkpoint {resume} continues training, but --do_train is false.")
    if resume.lower() in ("last", "true"):
        output_dir = training_args.output_dir
        complete = complete_checkpoints(output_dir)
        if not complete:
            raise FileNotFoundError(f"--resume_from_checkpoint {resume}: no complete checkpoint-* folder in {output_dir} "
                                    "to resume from (leave the option out to train from the start).")
        resume = str(complete[max(complete)])
        for folder in sorted(set(Path(output_dir).glob("checkpoint-*")) - set(complete.values())):
            logger.warning("%s is incomplete (no readable trainer_state.json: its save was cut short): not resumed from.", folder)
    elif not Path(resume).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume}: no such checkpoint folder.")
    logger.info("Resuming from %s.", resume)
    return resume


def resolve_record_options(data_args, model_args, record_data: bool, detection: bool = False) -> None:
    """Fill in the record-task options left out (:data:`RECORD_DEFAULTS`; :data:`DETECTION_DEFAULTS` for the event
    detector, whose frame targets always come from the events), warning about those given where they do nothing:
    ``record_data`` is False unless the rows are recordings with event timestamps (SPRSound 21 and 22)."""
    defaults = DETECTION_DEFAULTS if detection else RECORD_DEFAULTS
    holders = {name: data_args if hasattr(data_args, name) else model_args for name in RECORD_DEFAULTS}
    ignored = [f"--{name}" for name, holder in holders.items()
               if getattr(holder, name) is not None and not (name in defaults and (record_data or detection))]
    if ignored:
        applies = "recordings with event timestamps (SPRSound tasks 21 and 22)" + ("" if detection else ", or --task events")
        logger.warning("%s ignored: they apply to %s.", ", ".join(ignored), applies)
    for name, holder in holders.items():
        if getattr(holder, name) is None:
            setattr(holder, name, defaults.get(name, RECORD_DEFAULTS[name]))
