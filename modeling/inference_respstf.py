"""Inference with trained RespSTF checkpoints: load them with what they were trained for, slide an event model over a
recording, and run an event detector (its ``respiratory-event-detection`` pipeline) on it.

Library code of the package (not shipped to the Hub with a checkpoint). The feature extractor is loaded with
``AutoFeatureExtractor``, which knows RespSTF's once ``respstf.feature_extraction`` is imported (it registers the
class), so this module needs nothing outside its folder.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoFeatureExtractor
from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING

from .configuration_respstf import RespSTFConfig
from .modeling_respstf import RespSTFForAudioClassification, RespSTFForAudioFrameClassification, settings_differences
from .pipeline_respstf import RespiratoryEventDetectionPipeline

WINDOW_BATCH = 32  # windows per forward pass (bounds memory on long recordings)
CHECKPOINT_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")


@dataclass
class TaskModel:
    """One loaded classifier with its feature extractor and what it was trained for."""

    key: str  # SPRSound task id ("12") or, for another dataset, the folder name
    level: str  # "event" or "record"
    labels: list[str]
    model: RespSTFForAudioClassification
    extractor: Any  # RespSTFFeatureExtractor (respstf.feature_extraction)
    source: Path
    task: str | None = None  # the config's finetuning_task (an SPRSound task id such as "12") when known

    @property
    def name(self) -> str:
        """How people name it: "Task 1-2" for an SPRSound task (as the SPRSound paper writes them), else the key."""
        return f"Task {self.task[0]}-{self.task[1]}" if self.task and re.fullmatch(r"\d\d", self.task) else self.key

    @property
    def title(self) -> str:
        return f"{self.name} ({self.level} level): {', '.join(self.labels)}"

    @torch.no_grad()
    def probabilities(self, features) -> np.ndarray:
        """Softmax over the classes, ``(batch, num_labels)``."""
        logits = self.model(input_features=features["input_features"], attention_mask=features["attention_mask"]).logits
        return logits.softmax(dim=-1).numpy()


def annotation_level(config: RespSTFConfig, extractor: Any) -> str:
    """What one input of a model is, ``"event"`` or ``"record"``: its config's ``annotation_level``, else (a config
    written before it was recorded) told by how its feature extractor fits an input: zero-padded and masked whole
    recordings, or events repeated to fill a clip."""
    if config.annotation_level is not None:
        return config.annotation_level
    return "record" if extractor.padding_mode == "zero" else "event"


def _load_checkpoint(folder: Path, model_class: type) -> tuple[Any, Any]:
    """``(model, feature extractor)`` of a RespSTF checkpoint folder, checked (`load_task_model` says what raises)."""
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        raise OSError(f"{folder} is not a complete RespSTF checkpoint: missing {', '.join(missing)} "
                      "(expected a save_pretrained folder written by train.py).")
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ValueError(f"{folder / 'config.json'} is not a valid JSON config: {err}") from err
    if model_type != RespSTFConfig.model_type:
        raise ValueError(f"{folder} holds a {model_type!r} model, expected a {RespSTFConfig.model_type!r} model.")
    if RespSTFConfig not in FEATURE_EXTRACTOR_MAPPING:
        raise ValueError("the RespSTF feature extractor is not registered with AutoFeatureExtractor: import "
                         "respstf.feature_extraction before loading a checkpoint.")
    try:
        model, info = model_class.from_pretrained(folder, output_loading_info=True)
        # trust_remote_code=False: the registered class, never the folder's copy of the code, and no prompt.
        extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as err:
        raise ValueError(f"{folder}: the RespSTF model or feature extractor does not load: {err}") from err
    problems = {kind: info[kind] for kind in ("missing_keys", "mismatched_keys") if info.get(kind)}
    if problems:
        raise ValueError(f"{folder}: model.safetensors does not match config.json: {problems}")
    if getattr(extractor, "n_scales", None) != model.config.n_scales:
        raise ValueError(f"{folder}: the feature extractor makes {getattr(extractor, 'n_scales', None)} scales but the "
                         f"model expects {model.config.n_scales}.")
    return model.eval(), extractor


def load_task_model(folder: Path, task_of_labels: Callable[[list[str]], str | None] | None = None) -> TaskModel:
    """Load a RespSTF checkpoint folder with its task and annotation level.

    The task is the config's ``finetuning_task``, else ``task_of_labels(labels)`` where given (the app passes
    ``respstf.hub_dataset.task_of_labels``, which knows the SPRSound label sets); the level is the config's
    `annotation_level` (the config's, else told by how the extractor fits an input).

    Raises:
        OSError: a file of the checkpoint is missing.
        ValueError: the folder holds another kind of model, or its files do not load or do not fit together.
    """
    folder = Path(folder)
    if is_detector(folder):
        raise ValueError(f"{folder} holds an event detector (its config has `detection`), not a classifier of one task: "
                         "load it with load_detector.")
    model, extractor = _load_checkpoint(folder, RespSTFForAudioClassification)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    task = model.config.finetuning_task or (task_of_labels(labels) if task_of_labels else None)
    return TaskModel(task or folder.name, annotation_level(model.config, extractor), labels, model, extractor, folder, task)


def pack_ensemble(folders: Sequence[str | Path], output_dir: str | Path) -> Path:
    """Save the trained checkpoint folders as one ensemble checkpoint in ``output_dir`` (returned): its model
    (`RespSTFForAudioClassification.from_members`, every member's weights in one ``model.safetensors``), the
    feature extractor they share, and the code files, so that one ``from_pretrained`` (or ``pipeline`` with
    ``trust_remote_code=True`` where this package is not installed) loads it and averages the members' probabilities.

    Raises:
        OSError: a folder is not a complete checkpoint.
        ValueError: a folder does not load (`load_task_model`), or its model config or feature extractor differs
            from the first folder's, naming it.
    """
    members = [load_task_model(Path(folder)) for folder in folders]
    if members:
        reference = members[0].extractor.to_dict()
        for member in members[1:]:
            differences = settings_differences(reference, member.extractor.to_dict(), ignored=("auto_map",))
            if differences:
                raise ValueError(f"{member.source}: its feature extractor differs from {members[0].source}'s: {differences}.")
    ensemble = RespSTFForAudioClassification.from_members([member.model for member in members])
    ensemble.save_pretrained(output_dir)
    members[0].extractor.save_pretrained(output_dir)
    return Path(output_dir)


def unpack_member(folder: str | Path, index: int, output_dir: str | Path) -> Path:
    """Save member ``index`` of the ensemble checkpoint ``folder`` (`pack_ensemble`) as a single-model checkpoint in
    ``output_dir`` (returned), the model as it was trained: its weights, the ensemble's config with ``ensemble_size``
    1 and without the ensemble's ``logit_adjustment`` (a decision for the averaged probabilities), and the feature
    extractor; e.g. to fine-tune one fold's model.

    Raises:
        ValueError: ``folder`` is not an ensemble, or has no member ``index``.
    """
    task_model = load_task_model(Path(folder))
    task_model.model.member(index).save_pretrained(output_dir)
    task_model.extractor.save_pretrained(output_dir)
    return Path(output_dir)


def resolve_model_source(spec: str) -> Path:
    """A local folder as is; anything else is taken as a Hub repository id and downloaded.

    Raises:
        OSError: no such folder, or the download failed.
    """
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise OSError(f"--model {spec!r}: no such folder (and it is not a Hub id of the form 'org/name').")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=spec))
    except Exception as err:  # offline, unknown repository, no access: all end the start-up the same way
        raise OSError(
            f"--model {spec!r} is not a local folder, and downloading it from the Hugging Face Hub failed "
            f"({type(err).__name__}: {err}). Without network, pass a local folder such as checkpoints/."
        ) from err


def is_detector(folder: str | Path) -> bool:
    """Whether a checkpoint folder holds an event detector: its ``config.json`` has ``detection`` (what ``train.py
    --task events`` writes), so it loads as `RespSTFForAudioFrameClassification`, not as a task classifier."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("detection") is not None


def checkpoint_folders(folder: Path) -> list[Path]:
    """``folder`` itself when it is a checkpoint, else the checkpoints in its subfolders."""
    if (folder / "config.json").is_file():
        return [folder]
    return sorted(config.parent for config in folder.glob("*/config.json"))


def load_models(spec: str, task_of_labels: Callable[[list[str]], str | None] | None = None) -> dict[str, TaskModel]:
    """Every task model under ``spec`` (one checkpoint folder, a folder of them, or a Hub id of either), keyed by
    task (`load_task_model`); an event detector among them is left out (`load_detector` loads it). Raises OSError or
    ValueError as `load_task_model` does."""
    folder = resolve_model_source(spec)
    found = checkpoint_folders(folder)
    folders = [path for path in found if not is_detector(path)]
    if not folders:
        detectors = f" (only the event detector {', '.join(map(str, found))})" if found else ""
        raise OSError(f"{folder} holds no model{detectors}: expected a checkpoint folder (config.json, "
                      "preprocessor_config.json, model.safetensors) or folders of them such as checkpoints/sprsound-task12/ "
                      "(train.py writes them).")
    models: dict[str, TaskModel] = {}
    for path in folders:
        task_model = load_task_model(path, task_of_labels)
        if task_model.key in models:
            raise ValueError(f"{path} and {models[task_model.key].source} are both models for {task_model.title}; "
                             "keep one.")
        models[task_model.key] = task_model
    return dict(sorted(models.items()))


# -- event detector -----------------------------------------------------------------------------------------------

@dataclass
class EventDetector:
    """A loaded event detector (`RespSTFForAudioFrameClassification` with ``config.detection``) and its
    ``respiratory-event-detection`` pipeline: where a recording holds which adventitious sound, and its record verdict."""

    pipeline: RespiratoryEventDetectionPipeline
    source: Path

    @property
    def extractor(self) -> Any:
        return self.pipeline.feature_extractor

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def labels(self) -> list[str]:
        config = self.pipeline.model.config
        return [config.id2label[i] for i in range(config.num_labels)]

    def features(self, waveform: np.ndarray, sampling_rate: int) -> dict:
        """The pipeline's model inputs for a waveform: the whole recording's scalogram (``truncation=False``), its
        mask and ``duration_seconds``."""
        return self.pipeline.preprocess({"raw": waveform, "sampling_rate": sampling_rate})

    def detect(self, waveform: np.ndarray, sampling_rate: int, features: dict | None = None) -> dict:
        """What the pipeline answers for the waveform with ``return_frame_scores=True``: ``{"events", "record_label",
        "record_scores", "frame_scores"}``. ``features``: this waveform's `features`, when already computed."""
        features = dict(features or self.features(waveform, sampling_rate))  # _forward pops duration_seconds
        return self.pipeline.postprocess(self.pipeline.forward(features), return_frame_scores=True)


def load_detector(folder: str | Path) -> EventDetector:
    """Load an event detector's checkpoint folder into its pipeline. Raises as `load_task_model` does, and ValueError
    when the folder holds a task classifier instead."""
    folder = Path(folder)
    if (folder / "config.json").is_file() and not is_detector(folder):
        raise ValueError(f"{folder} holds no event detector: its config.json has no `detection` (a classifier of one task?).")
    model, extractor = _load_checkpoint(folder, RespSTFForAudioFrameClassification)
    return EventDetector(RespiratoryEventDetectionPipeline(model=model, feature_extractor=extractor, device=-1), folder)


def find_detector(spec: str) -> EventDetector | None:
    """The event detector under ``spec`` (as `load_models` takes it: the checkpoint folder itself or one of its
    subfolders, such as ``checkpoints/sprsound-events``), loaded; None when there is none.

    Raises:
        OSError, ValueError: as `load_detector`; or ``spec`` holds more than one detector.
    """
    detectors = [path for path in checkpoint_folders(resolve_model_source(spec)) if is_detector(path)]
    if len(detectors) > 1:
        raise ValueError(f"{', '.join(map(str, detectors))} are all event detectors; keep one.")
    return load_detector(detectors[0]) if detectors else None


def shares_features(task_model: TaskModel, features: dict, duration: float, detector: EventDetector) -> bool:
    """Whether the detector's whole-recording ``features`` of a recording are what the task model reads of it (a record
    model whose extractor has the detector's settings, on a recording longer than its clip, or as long: then the clip
    neither pads nor crops it), so that `classify_recording` need not compute them again."""
    extractor = task_model.extractor
    if task_model.level != "record" or settings_differences(detector.extractor.to_dict(), extractor.to_dict(),
                                                             ignored=("auto_map",)):
        return False
    return duration > extractor.clip_seconds or features["input_features"].shape[-1] == extractor.n_frames


@dataclass
class Windows:
    """An event model's overlapping windows over one recording."""

    starts_s: np.ndarray  # (N,)
    window_s: float
    probabilities: np.ndarray  # (N, num_labels)
    features: np.ndarray  # (N, n_scales, n_frames): what the model saw in each window
    edges_s: np.ndarray  # (N + 1,): window k is drawn over [edges[k], edges[k+1]], the time nearest its centre

    def rows(self, labels: list[str]) -> list[dict]:
        """One dict per window: its span (the last ends with the recording), top label and probabilities."""
        return [
            {
                "start_s": round(float(start), 3),
                "end_s": round(float(min(start + self.window_s, self.edges_s[-1])), 3),
                "label": labels[int(probs.argmax())],
                "probabilities": {label: round(float(p), 4) for label, p in zip(labels, probs)},
            }
            for start, probs in zip(self.starts_s, self.probabilities)
        ]

    def segments(self, labels: list[str]) -> list[tuple[float, float, str, float]]:
        """Consecutive windows with the same top class merged: ``(start_s, end_s, label, mean probability)``."""
        segments: list[list] = []
        for k, probs in enumerate(self.probabilities):
            label = labels[int(probs.argmax())]
            start, end = self.edges_s[k], self.edges_s[k + 1]
            if segments and segments[-1][2] == label:
                segments[-1][1] = end
                segments[-1][3].append(float(probs.max()))
            else:
                segments.append([start, end, label, [float(probs.max())]])
        return [(float(s), float(e), label, float(np.mean(p))) for s, e, label, p in segments]


def slide_windows(task_model: TaskModel, waveform: np.ndarray, sampling_rate: int) -> Windows:
    """Classify windows of the event model's clip length, every half window (the last one ends at the end)."""
    extractor = task_model.extractor
    duration = len(waveform) / sampling_rate
    window = round(extractor.clip_seconds * sampling_rate)
    hop = window // 2
    if len(waveform) <= window:
        starts = [0]  # the whole recording is one clip, tiled or padded as in training
    else:
        starts = list(range(0, len(waveform) - window + 1, hop))
        end_start = len(waveform) - window
        if starts[-1] < end_start:
            # Less than a quarter hop left: move the last window to the end rather than add a near-copy of it.
            # The first window stays at 0, so a recording barely longer than one window gets two.
            if end_start - starts[-1] < hop / 4 and len(starts) > 1:
                starts[-1] = end_start
            else:
                starts.append(end_start)
    probabilities, features = [], []
    for first in range(0, len(starts), WINDOW_BATCH):
        clips = [waveform[start : start + window] for start in starts[first : first + WINDOW_BATCH]]
        batch = extractor(clips, sampling_rate=sampling_rate, truncation=True, return_tensors="pt")
        probabilities.append(task_model.probabilities(batch))
        features.append(batch["input_features"][:, 0].numpy())
    starts_s = np.asarray(starts) / sampling_rate
    centres = starts_s + min(extractor.clip_seconds, duration) / 2
    edges = np.concatenate([[0.0], (centres[1:] + centres[:-1]) / 2, [duration]])
    return Windows(starts_s, extractor.clip_seconds, np.concatenate(probabilities), np.concatenate(features), edges)


def stitch_windows(windows: Windows, frame_seconds: float, duration: float) -> np.ndarray:
    """One scalogram over the recording: each column is the column the window nearest in time saw."""
    if len(windows.starts_s) == 1:
        return windows.features[0]
    times = (np.arange(math.ceil(duration / frame_seconds)) + 0.5) * frame_seconds
    owner = np.searchsorted(windows.edges_s[1:-1], times, side="right")
    column = np.floor((times - windows.starts_s[owner]) / frame_seconds).astype(int)
    column = column.clip(0, windows.features.shape[-1] - 1)
    return windows.features[owner, :, column].T


def classify_recording(task_model: TaskModel, waveform: np.ndarray, sampling_rate: int,
                       windows: Windows | None = None, features: dict | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Classify a whole recording: ``(probabilities (num_labels,), the scalogram the model saw (n_scales, frames),
    a note saying how the scalogram was made)``.

    An event model is slid over the recording (``windows``: its `slide_windows` when already computed) and its
    window probabilities averaged; a record model reads the recording at once (``features``: what it reads, when
    already computed, see `shares_features`).
    """
    extractor = task_model.extractor
    duration = len(waveform) / sampling_rate
    if task_model.level == "event":
        windows = windows or slide_windows(task_model, waveform, sampling_rate)
        # Each window weighs the stretch of the recording nearest to it, so every moment counts once
        # however closely the last window follows the one before.
        probabilities = np.average(windows.probabilities, axis=0, weights=np.diff(windows.edges_s))
        scalogram = stitch_windows(windows, extractor.frame_seconds, duration)
        count = len(windows.starts_s)
        note = (f"{count} windows of {extractor.clip_seconds:.2f} s; each column is from the window centred nearest to it"
                if count > 1 else f"one {extractor.clip_seconds:.2f} s clip (a shorter recording is repeated to fill it)")
        return probabilities, scalogram, note
    # Recordings up to the training clip length are zero-padded and masked as in training; longer
    # ones are taken whole rather than centre-cropped.
    if features is None:
        features = extractor(waveform, sampling_rate=sampling_rate, truncation=duration <= extractor.clip_seconds,
                             return_tensors="pt")
    note = "the whole recording" + (
        f", zero-padded (and masked) to {extractor.clip_seconds:.1f} s" if duration < extractor.clip_seconds else "")
    return task_model.probabilities(features)[0], features["input_features"][0, 0].numpy(), note
