"""RespSTF demo: drop in a stethoscope recording, see what the model hears and where.

    python app.py                        # serve http://127.0.0.1:7860 with the bundled checkpoints/
    python app.py --predict [FILE]       # classify one recording without serving, print the result
    python app.py --model org/name       # a model on the Hugging Face Hub (or a local folder)
    python app.py --port 8000 --examples DIR --share

``--model`` is one ``save_pretrained`` folder, a folder of them (``checkpoints/sprsound-task12/`` …; one
model per SPRSound task), or a Hub repository id of either, downloaded with ``huggingface_hub``. Every
model is loaded once at start-up; a missing or incompatible model stops the app there with a message.

For each recording the page shows:
* the selected task's classes with probabilities: a record-level model (tasks 2-1, 2-2) classifies the
  whole recording; an event-level model (tasks 1-1, 1-2) is slid over it and its window probabilities
  are averaged, each window weighted by the stretch of the recording nearest to it;
* the event timeline: the event model (task 1-2, else 1-1) classifies overlapping windows, drawn over
  the waveform, so one sees where a wheeze or crackle is;
* the scalogram the selected model saw (its ``input_features``), with time in s and frequency in Hz;
* what each class means.

The classify function is also an API (``api_name="/classify"``)::

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860").predict(handle_file("rec.wav"), api_name="/classify")

On a Hugging Face Space (``requirements.txt`` + the card metadata of README.md) the package is not
installed, so the ``respstf`` modules are loaded from this repository's folders.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO_ROOT = Path(__file__).resolve().parent


def _import_respstf_from_source() -> None:
    """Make ``respstf.*`` importable from the repository folders when the package is not installed.

    A Space installs ``requirements.txt`` before the repository is copied in, so it cannot
    ``pip install .``; this maps the folders to the same names as pyproject's ``package-dir``.
    """
    if importlib.util.find_spec("respstf") is not None:
        return
    package = types.ModuleType("respstf")
    package.__path__ = []
    sys.modules["respstf"] = package
    for name in ("modeling", "feature_extraction", "hub_dataset"):
        folder = REPO_ROOT / name
        spec = importlib.util.spec_from_file_location(
            f"respstf.{name}", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)


_import_respstf_from_source()

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from respstf.feature_extraction import RespSTFFeatureExtractor  # noqa: E402
from respstf.hub_dataset import (  # noqa: E402
    AUDIO_EXTENSIONS, TASKS, normalize_task, parse_annotation, read_audio, task_of_labels, wav_shortfall,
)
from respstf.modeling import RespSTFConfig, RespSTFForAudioClassification  # noqa: E402

DATA_DIR = Path(os.environ.get("RESPSTF_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
DEFAULT_MODEL = os.environ.get("RESPSTF_MODEL", str(REPO_ROOT / "checkpoints"))
DEFAULT_EXAMPLES = DATA_DIR / "sprsound" / "example_original_wav"
# A real 15.4 s recording with wheezes (record label CAS) from the release's example folder.
DEFAULT_PREDICT_FILE = DEFAULT_EXAMPLES / "65101170_0.4_0_p2_3246.wav"

MIN_SECONDS = 0.25  # shorter than a crackle's context; the release's shortest recording is 0.3 s
MAX_SECONDS = 120.0  # SPRSound recordings are <= 15.4 s; this bounds the work per request
# Room for MAX_SECONDS of the largest common uncompressed audio (192 kHz, stereo, 32-bit) plus 10 % for headers
# and metadata chunks; gradio refuses a larger upload before storing it.
MAX_UPLOAD_BYTES = int(MAX_SECONDS * 192_000 * 2 * 4 * 1.1)
MIN_SAMPLING_RATE = 2000  # below this a recording holds nothing above 1 kHz: most of the band the models read is gone
READABLE_FORMATS = "WAV, FLAC, OGG or MP3"  # what soundfile decodes; FFmpeg, where installed, converts other formats
FFMPEG_TIMEOUT_S = 60
FFMPEG_MESSAGES = 3  # of FFmpeg's error lines shown: a broken MP3 can give dozens
MAX_LISTED_ANOMALIES = 6  # the explanation names this many non-Normal timeline stretches, then counts the rest
SILENCE_PEAK = 1e-4  # peak amplitude below -80 dBFS: nothing was recorded
FULL_SCALE = 0.999  # |sample| at or above this is at the top of its format's range (16-bit PCM tops out at 0.99997)
MIN_CLIPPED_RUN = 3  # samples in a row at full scale: a clipped peak, not a sample that happens to touch it
# A knock on the stethoscope clips a few peaks (4 in 20 s, 0.15 % of the samples, in one ICBHI recording); a
# recording played too loud clips peak after peak (a real SPRSound one at 20x: 9 in 15.4 s, at 50x: 23), or
# clips a long stretch (over 0.5 % of the samples).
MAX_CLIPPED_RUNS_PER_SECOND = 0.5
MAX_CLIPPED_FRACTION = 0.005
EVENT_MODEL_MAX_CLIP_S = 5.0  # a model of unknown task with clips this short is an event-level one
WINDOW_BATCH = 32  # windows per forward pass (bounds memory on long recordings)
MAX_EXAMPLES = 8

# Record tasks first: they answer "what is in this recording"; the event timeline shows where.
DEFAULT_TASK_ORDER = ("22", "21", "12", "11")
TIMELINE_TASK_ORDER = ("12", "11")

CLASS_DESCRIPTIONS = {
    "Normal": "normal breath sounds, no adventitious sound.",
    "Adventitious": "an abnormal sound: a wheeze, rhonchus or stridor (continuous) or crackles (discontinuous).",
    "Rhonchi": "low-pitched, snoring continuous sound, from secretions in the larger airways.",
    "Wheeze": "high-pitched, musical continuous sound from narrowed airways (e.g. asthma, bronchiolitis).",
    "Stridor": "loud, high-pitched continuous sound, mostly on breathing in, from a blocked upper airway (e.g. croup).",
    "Coarse Crackle": "low-pitched, longer popping or bubbling sounds (e.g. secretions, bronchitis).",
    "Fine Crackle": "short, high-pitched crackles, like hair rubbed between fingers (e.g. pneumonia).",
    "Wheeze+Crackle": "a wheeze and crackles in the same breath.",
    "CAS": "continuous adventitious sounds (wheeze, rhonchi or stridor) somewhere in the recording.",
    "DAS": "discontinuous adventitious sounds (crackles) somewhere in the recording.",
    "CAS & DAS": "both continuous and discontinuous adventitious sounds.",
    "Poor Quality": "too noisy or unclear to judge (e.g. friction, crying, talking).",
}
LABEL_COLOURS = {
    "Normal": "#c7d3c2", "Adventitious": "#d7301f", "Rhonchi": "#6a51a3", "Wheeze": "#e31a1c",
    "Stridor": "#fd8d3c", "Coarse Crackle": "#8c510a", "Fine Crackle": "#2171b5", "Wheeze+Crackle": "#ae017e",
    "CAS": "#e31a1c", "DAS": "#2171b5", "CAS & DAS": "#ae017e", "Poor Quality": "#737373",
}


# -- models -----------------------------------------------------------------------------------

@dataclass
class TaskModel:
    """One loaded classifier with its feature extractor and what it was trained for."""

    key: str  # SPRSound task id ("12") or, for another dataset, the folder name
    level: str  # "event" or "record"
    labels: list[str]
    model: RespSTFForAudioClassification
    extractor: RespSTFFeatureExtractor
    source: Path

    @property
    def name(self) -> str:
        return f"Task {self.key[0]}-{self.key[1]}" if self.key in TASKS else self.key

    @property
    def title(self) -> str:
        return f"{self.name} ({self.level} level): {', '.join(self.labels)}"

    @torch.no_grad()
    def probabilities(self, features) -> np.ndarray:
        """Softmax over the classes, ``(batch, num_labels)``."""
        logits = self.model(input_features=features["input_features"], attention_mask=features["attention_mask"]).logits
        return logits.softmax(dim=-1).numpy()


def _fail(message: str) -> SystemExit:
    return SystemExit(f"app.py: {message}")


def load_task_model(folder: Path) -> TaskModel:
    """Load a RespSTF checkpoint folder, or stop with a message saying what is missing or wrong."""
    needed = ("config.json", "preprocessor_config.json", "model.safetensors")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise _fail(f"{folder} is not a complete RespSTF checkpoint: missing {', '.join(missing)} "
                    "(expected a save_pretrained folder written by train.py).")
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise _fail(f"{folder / 'config.json'} is not a valid JSON config: {err}") from err
    if model_type != RespSTFConfig.model_type:
        raise _fail(f"{folder} holds a {model_type!r} model, expected a {RespSTFConfig.model_type!r} model.")
    try:
        model, info = RespSTFForAudioClassification.from_pretrained(folder, output_loading_info=True)
        extractor = RespSTFFeatureExtractor.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as err:
        raise _fail(f"{folder}: the RespSTF model or feature extractor does not load: {err}") from err
    problems = {kind: info[kind] for kind in ("missing_keys", "mismatched_keys") if info.get(kind)}
    if problems:
        raise _fail(f"{folder}: model.safetensors does not match config.json: {problems}")
    if extractor.n_scales != model.config.n_scales:
        raise _fail(f"{folder}: the feature extractor makes {extractor.n_scales} scales but the model expects "
                    f"{model.config.n_scales}.")
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    key = task_of_labels(labels) or folder.name
    if key in TASKS:
        level = TASKS[key]["level"]
    else:
        level = "event" if extractor.clip_seconds <= EVENT_MODEL_MAX_CLIP_S else "record"
    return TaskModel(key, level, labels, model.eval(), extractor, folder)


def resolve_model_source(spec: str) -> Path:
    """A local folder as is; anything else is taken as a Hub repository id and downloaded."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise _fail(f"--model {spec!r}: no such folder (and it is not a Hub id of the form 'org/name').")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=spec))
    except Exception as err:  # offline, unknown repository, no access: all end the start-up the same way
        raise _fail(
            f"--model {spec!r} is not a local folder, and downloading it from the Hugging Face Hub failed "
            f"({type(err).__name__}: {err}). Without network, pass a local folder such as checkpoints/."
        ) from err


def load_models(spec: str) -> dict[str, TaskModel]:
    """Every task model under ``spec`` (one checkpoint folder or a folder of them), keyed by task."""
    folder = resolve_model_source(spec)
    if (folder / "config.json").is_file():
        folders = [folder]
    else:
        folders = sorted(config.parent for config in folder.glob("*/config.json"))
    if not folders:
        raise _fail(f"{folder} holds no model: expected a checkpoint folder (config.json, preprocessor_config.json, "
                    "model.safetensors) or folders of them such as checkpoints/sprsound-task12/ (train.py writes them).")
    models: dict[str, TaskModel] = {}
    for path in folders:
        task_model = load_task_model(path)
        if task_model.key in models:
            raise _fail(f"{path} and {models[task_model.key].source} are both models for {task_model.title}; keep one.")
        models[task_model.key] = task_model
    return dict(sorted(models.items()))


# -- analysis ---------------------------------------------------------------------------------

@dataclass
class Windows:
    """An event model's overlapping windows over one recording."""

    starts_s: np.ndarray  # (N,)
    window_s: float
    probabilities: np.ndarray  # (N, num_labels)
    features: np.ndarray  # (N, n_scales, n_frames): what the model saw in each window
    edges_s: np.ndarray  # (N + 1,): window k is drawn over [edges[k], edges[k+1]], the time nearest its centre


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


@dataclass
class Analysis:
    """Everything the page shows about one recording."""

    name: str
    duration: float
    sampling_rate: int
    task_model: TaskModel
    probabilities: np.ndarray  # (num_labels,)
    scalogram: np.ndarray  # (n_scales, frames) exactly as the selected model saw it
    scalogram_note: str
    waveform: np.ndarray
    timeline_model: TaskModel | None
    windows: Windows | None
    annotated_events: list[dict] | None
    warnings: list[str]  # what the user should know about the result (also in the explanation)

    def ranked(self) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities)
        return [(self.task_model.labels[i], float(self.probabilities[i])) for i in order]

    def timeline_rows(self) -> list[dict]:
        if self.windows is None:
            return []
        labels = self.timeline_model.labels
        return [
            {
                "start_s": round(float(start), 3),
                "end_s": round(float(min(start + self.windows.window_s, self.duration)), 3),
                "label": labels[int(probs.argmax())],
                "probabilities": {label: round(float(p), 4) for label, p in zip(labels, probs)},
            }
            for start, probs in zip(self.windows.starts_s, self.windows.probabilities)
        ]

    def timeline_segments(self) -> list[tuple[float, float, str, float]]:
        """Consecutive windows with the same top class merged: ``(start_s, end_s, label, mean probability)``."""
        if self.windows is None:
            return []
        segments: list[list] = []
        for k, probs in enumerate(self.windows.probabilities):
            label = self.timeline_model.labels[int(probs.argmax())]
            start, end = self.windows.edges_s[k], self.windows.edges_s[k + 1]
            if segments and segments[-1][2] == label:
                segments[-1][1] = end
                segments[-1][3].append(float(probs.max()))
            else:
                segments.append([start, end, label, [float(probs.max())]])
        return [(float(s), float(e), label, float(np.mean(p))) for s, e, label, p in segments]


def too_long(name: str, seconds: float | None = None) -> ValueError:
    """The refusal of a recording longer than MAX_SECONDS (``seconds``: its length where known)."""
    if seconds is None:
        length = f"over {MAX_SECONDS:.0f} s"
    else:  # one just past the limit is not said to be at it
        length = f"{seconds:.1f} s" if round(seconds, 1) > MAX_SECONDS else f"just over {MAX_SECONDS:.0f} s"
    return ValueError(f"{name} is {length} long: this demo accepts at most {MAX_SECONDS:.0f} s; "
                      "cut the recording into shorter parts.")


def read_named(path: Path, name: str) -> tuple[np.ndarray, int]:
    """``read_audio``, naming the file as the user knows it in errors, not by the server's upload path."""
    try:
        return read_audio(str(path))
    except ValueError as err:
        raise ValueError(str(err).replace(str(path), name)) from None


def read_recording(path: Path, name: str) -> tuple[np.ndarray, int, list[str]]:
    """Decode an upload with soundfile where it reads the file (one longer than MAX_SECONDS is refused from its
    header, before it is decoded), else with FFmpeg, whatever the file's extension. Returns the waveform, its
    sampling rate and warnings about what was read (a WAV cut short, a file FFmpeg found damaged)."""
    try:
        header = sf.info(str(path))
    except (RuntimeError, TypeError) as err:
        if not path.is_file():
            raise ValueError(f"{name}: audio file not found.") from None
        # M4A or WebM from a phone or browser, G.722 inside a WAV, an M4A named .mp3, ... or not audio at all.
        return read_with_ffmpeg(path, name, soundfile_error=str(err).replace(str(path), name))
    if header.duration > MAX_SECONDS:
        raise too_long(name, header.duration)
    waveform, sampling_rate = read_named(path, name)  # says why a file whose header soundfile reads does not decode
    shortfall = wav_shortfall(path)  # soundfile decodes what is there without a word
    if not shortfall:
        return waveform, sampling_rate, []
    declared, present = shortfall
    return waveform, sampling_rate, [f"{name} is cut short: its header announces {declared:,} bytes of audio, the file "
                                     f"holds {present:,} ({present / declared:.0%}); only the part present is classified."]


def read_with_ffmpeg(path: Path, name: str, soundfile_error: str) -> tuple[np.ndarray, int, list[str]]:
    """Convert a file soundfile does not read to WAV with FFmpeg (``soundfile_error`` says why soundfile did not);
    returns as `read_recording` does."""
    unreadable = (f"{name}: not a readable audio file (corrupt, truncated or not audio): expected a {READABLE_FORMATS} "
                  "recording")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ValueError(f"{unreadable} (other formats need FFmpeg, which is not installed here). "
                         f"soundfile: {soundfile_error}")
    unreadable += " or another format FFmpeg decodes"
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "decoded.wav"
        # -t: an over-long recording is decoded only just past the limit before it is refused.
        command = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-t", str(MAX_SECONDS + 1),
                   "-c:a", "pcm_f32le", str(wav)]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ValueError(f"{unreadable}; FFmpeg did not decode it within {FFMPEG_TIMEOUT_S} s.") from None
        lines = completed.stderr.replace(str(path), name).strip().splitlines()
        # FFmpeg's first few messages (the first is the cause), once each, without "[demuxer @ 0x...]" prefixes.
        reason = "; ".join(list(dict.fromkeys(re.sub(r"^\[[^\]]*\] ", "", line) for line in lines))[:FFMPEG_MESSAGES])
        if completed.returncode != 0:
            if any("matches no streams" in line for line in lines):  # the -map of a file without audio
                raise ValueError(f"{name} holds no audio track: expected an audio recording.")
            raise ValueError(f"{unreadable}. FFmpeg: {reason or 'no message'}")
        waveform, sampling_rate = read_named(wav, name)
    if len(waveform) > MAX_SECONDS * sampling_rate:
        raise too_long(name)
    # With -v error, anything FFmpeg says on success is about damage it decoded past.
    damaged = f"{name} looks damaged: FFmpeg decoded it with errors ({reason}); only what decoded is classified."
    return waveform, sampling_rate, [damaged] if reason else []


def check_recording(
    waveform: np.ndarray, sampling_rate: int, name: str, extractor: RespSTFFeatureExtractor
) -> list[str]:
    """Refuse recordings the model cannot judge, saying why; return warnings about what it judges with less to go on."""
    duration = len(waveform) / sampling_rate
    if duration < MIN_SECONDS:
        length = f"{duration:.2f} s" if round(duration, 2) < MIN_SECONDS else f"just under {MIN_SECONDS} s"
        raise ValueError(f"{name} is {length} long: the shortest recording accepted is {MIN_SECONDS} s.")
    if duration > MAX_SECONDS:
        raise too_long(name, duration)
    band = f"{extractor.fmin:.0f}–{extractor.fmax:.0f} Hz"
    if sampling_rate < MIN_SAMPLING_RATE:
        raise ValueError(f"{name} is sampled at {sampling_rate} Hz, so it holds nothing above "
                         f"{sampling_rate / 2:.0f} Hz: too little of the {band} the model reads. Expected a recording "
                         f"sampled at {MIN_SAMPLING_RATE} Hz or more ({extractor.sampling_rate} Hz or more for the full "
                         "band).")
    if not np.isfinite(waveform).all():
        raise ValueError(f"{name} holds NaN or infinite samples: expected finite audio.")
    # Around the mean: a recording that is only a DC offset holds no sound either.
    peak = float(np.abs(waveform - waveform.mean()).max())
    if peak < SILENCE_PEAK:
        raise ValueError(f"{name} is silent (peak amplitude {peak:.1e} around its mean, below {SILENCE_PEAK:.0e}): "
                         "nothing to classify; record again with the stethoscope on the chest.")
    warnings = []
    if sampling_rate / 2 < extractor.fmax:
        warnings.append(f"{name} is sampled at {sampling_rate} Hz, so sounds above {sampling_rate / 2:.0f} Hz are "
                        f"missing: the model reads {band} (it was trained on {extractor.sampling_rate} Hz recordings) "
                        "and may miss high-pitched sounds.")
    at_full_scale = np.abs(waveform) >= FULL_SCALE
    edges = np.diff(at_full_scale.astype(np.int8), prepend=0, append=0)
    runs = int(np.sum(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1) >= MIN_CLIPPED_RUN))
    share = float(at_full_scale.mean())
    if share > MAX_CLIPPED_FRACTION or runs >= max(3, MAX_CLIPPED_RUNS_PER_SECOND * duration):
        warnings.append(f"{name} is clipped: {runs} peaks ({share:.1%} of its samples) are cut off at full scale. "
                        "Clipping adds sounds the chest did not make, so this result is unreliable; record again with "
                        "less gain or a lighter touch.")
    return warnings


def task_key(task: str, known: dict) -> str:
    """The key of a loaded model: ``task`` itself where a model has that name (one from a folder is keyed by its
    name), else a task id in any spelling `normalize_task` takes ("2-2", as the page writes it, -> "22")."""
    if task in known:
        return task
    try:
        return normalize_task(task)
    except ValueError:
        return task  # reported as unknown by the caller


class RespSTFDemo:
    """The loaded models and the functions the page and the API call."""

    def __init__(self, models: dict[str, TaskModel], examples_dir: Path | None = None):
        if not models:
            raise _fail("no model loaded.")
        self.models = models
        self.default_task = next((key for key in DEFAULT_TASK_ORDER if key in models), next(iter(models)))
        event_keys = [key for key in TIMELINE_TASK_ORDER if key in models]
        event_keys += [key for key, m in models.items() if m.level == "event" and key not in event_keys]
        self.timeline_model = models[event_keys[0]] if event_keys else None
        self.examples, self.example_labels, self.annotations = find_examples(examples_dir)

    def analyse(self, path: str | Path, task: str | None = None) -> Analysis:
        """Classify one audio file with the task's model (and the event timeline). Raises ValueError on bad input."""
        key = task_key(task, self.models) if task is not None else self.default_task
        if key not in self.models:
            known = ", ".join(known_key if model.name == known_key else f"{known_key} ({model.name})"
                              for known_key, model in self.models.items())
            raise ValueError(f"Unknown task {task!r}: this app has models for {known}.")
        if path is None:
            raise ValueError(f"No recording: upload a {READABLE_FORMATS} file or record one with the microphone.")
        name = Path(path).name
        waveform, sampling_rate, warnings = read_recording(Path(path), name)
        task_model = self.models[key]
        warnings += check_recording(waveform, sampling_rate, name, task_model.extractor)
        duration = len(waveform) / sampling_rate
        windows = slide_windows(self.timeline_model, waveform, sampling_rate) if self.timeline_model else None
        extractor = task_model.extractor
        if task_model.level == "event":
            if task_model is not self.timeline_model:
                windows_of_task = slide_windows(task_model, waveform, sampling_rate)
            else:
                windows_of_task = windows
            # Each window weighs the stretch of the recording nearest to it, so every moment counts once
            # however closely the last window follows the one before.
            probabilities = np.average(windows_of_task.probabilities, axis=0, weights=np.diff(windows_of_task.edges_s))
            scalogram = stitch_windows(windows_of_task, extractor.frame_seconds, duration)
            count = len(windows_of_task.starts_s)
            scalogram_note = (
                f"{count} windows of {extractor.clip_seconds:.2f} s; each column is from the window centred nearest to it"
                if count > 1 else f"one {extractor.clip_seconds:.2f} s clip (a shorter recording is repeated to fill it)"
            )
        else:
            # Recordings up to the training clip length are zero-padded and masked as in training; longer
            # ones are taken whole rather than centre-cropped.
            features = extractor(waveform, sampling_rate=sampling_rate, truncation=duration <= extractor.clip_seconds,
                                 return_tensors="pt")
            probabilities = task_model.probabilities(features)[0]
            scalogram = features["input_features"][0, 0].numpy()
            scalogram_note = "the whole recording" + (
                f", zero-padded (and masked) to {extractor.clip_seconds:.1f} s" if duration < extractor.clip_seconds else ""
            )
        return Analysis(name, duration, sampling_rate, task_model, probabilities, scalogram, scalogram_note,
                        waveform, self.timeline_model, windows, self.annotations.get(example_key(Path(path))), warnings)

    def classify(self, audio: str | None, task: str | None = None):
        """Classify a recording: ``(label -> probability, scalogram image, timeline image, explanation, timeline rows)``."""
        try:
            analysis = self.analyse(audio, task)
        except ValueError as err:
            raise gr.Error(str(err), title="Cannot classify this recording") from None
        for warning in analysis.warnings:
            gr.Warning(warning)
        return self.outputs(analysis)

    @staticmethod
    def outputs(analysis: Analysis) -> tuple:
        """What the page shows of an analysis, in the order of the ``/classify`` outputs."""
        return (
            dict(analysis.ranked()),
            render(plot_scalogram(analysis)),
            render(plot_timeline(analysis)) if analysis.windows is not None else None,
            explain(analysis),
            analysis.timeline_rows(),
        )

    def build(self) -> gr.Blocks:
        """The page; the Classify button is the ``/classify`` API."""
        with gr.Blocks(title="RespSTF: respiratory sound classifier", delete_cache=(3600, 3600)) as blocks:
            gr.Markdown(
                "# RespSTF: what does the stethoscope hear?\n"
                f"Drop in a chest recording ({READABLE_FORMATS}; other formats when FFmpeg is installed; sampled at "
                f"{MIN_SAMPLING_RATE / 1000:.0f} kHz or more, 8 kHz or more for the full band; mono or stereo; "
                f"{MIN_SECONDS}–{MAX_SECONDS:.0f} s) or record one. The model (CWT scalogram → Inception-residual "
                "CNN with spatio-temporal focusing and self-attention, trained on the SPRSound paediatric "
                "recordings) says which sounds it hears, and the timeline shows where. "
                "*A research demo, not a medical device.*"
            )
            with gr.Row():
                with gr.Column(scale=1):
                    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Recording")
                    task = gr.Dropdown(
                        choices=[(m.title, key) for key, m in self.models.items()],
                        value=self.default_task,
                        label="Task",
                        visible=len(self.models) > 1,
                    )
                    button = gr.Button("Classify", variant="primary")
                    if self.examples:
                        gr.Examples(examples=[[str(p)] for p in self.examples], inputs=[audio],
                                    example_labels=self.example_labels, label="SPRSound example recordings")
                with gr.Column(scale=1):
                    label = gr.Label(label="What the model hears")
                    explanation = gr.Markdown(label="Explanation")
            timeline = gr.Image(label="Event timeline", format="png", type="numpy", interactive=False, elem_id="timeline")
            scalogram = gr.Image(label="Scalogram the model saw", format="png", type="numpy", interactive=False,
                                 elem_id="scalogram")
            with gr.Accordion("Timeline windows (JSON)", open=False):
                rows = gr.JSON(label="windows")
            button.click(
                self.classify, inputs=[audio, task], outputs=[label, scalogram, timeline, explanation, rows],
                api_name="classify", concurrency_limit=2,
            )
        return blocks


def example_key(path: Path) -> tuple[str, int]:
    """How an upload is recognised as an example recording: gradio keeps the file name and the bytes."""
    return path.stem, path.stat().st_size


def find_examples(folder: Path | None) -> tuple[list[Path], list[str], dict[tuple[str, int], list[dict]]]:
    """Up to MAX_EXAMPLES recordings of ``folder``, one record class after another when annotated.

    Returns the files, their labels for the page, and the annotated events of every annotated recording
    of the folder (drawn on the timeline when that recording is classified), by :func:`example_key`.
    """
    if folder is None or not Path(folder).is_dir():
        return [], [], {}
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
    by_label: dict[str, list[Path]] = {}
    annotations: dict[tuple[str, int], list[dict]] = {}
    record_labels: dict[Path, str] = {}
    for path in files:
        annotation = path.with_suffix(".json")
        label = "not annotated"
        if annotation.is_file():
            try:
                label, annotations[example_key(path)] = parse_annotation(annotation)
            except ValueError:
                pass  # an unreadable annotation only costs the example its label
        record_labels[path] = label
        by_label.setdefault(label, []).append(path)
    chosen: list[Path] = []
    while len(chosen) < min(MAX_EXAMPLES, len(files)):
        for group in by_label.values():
            if group and len(chosen) < MAX_EXAMPLES:
                chosen.append(group.pop(0))
    labels = [f"{record_labels[p]} (annotated): {p.name}" if example_key(p) in annotations else p.name for p in chosen]
    return chosen, labels, annotations


# -- figures and text -------------------------------------------------------------------------

def _colour(label: str, labels: list[str]) -> str:
    if label in LABEL_COLOURS:
        return LABEL_COLOURS[label]
    return f"C{labels.index(label) % 10}"


def render(figure: Figure) -> np.ndarray:
    """An RGB image of a matplotlib figure (object API: safe with concurrent requests, unlike pyplot)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def plot_scalogram(analysis: Analysis) -> Figure:
    """The selected model's input: rows are log-spaced wavelet frequencies, so the image is drawn on a log10 axis."""
    extractor = analysis.task_model.extractor
    features = analysis.scalogram
    log_frequencies = np.log10(extractor.frequencies)  # highest first, evenly spaced
    half_row = (log_frequencies[0] - log_frequencies[-1]) / (len(log_frequencies) - 1) / 2
    extent = (0, features.shape[1] * extractor.frame_seconds, log_frequencies[-1] - half_row, log_frequencies[0] + half_row)
    figure = Figure(figsize=(11, 3.4), dpi=100)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.9)
    axes = figure.add_subplot()
    image = axes.imshow(features, cmap="magma", aspect="auto", origin="upper", extent=extent, interpolation="nearest")
    ticks = [f for f in (50, 100, 200, 500, 1000, 2000, 4000) if extent[2] <= np.log10(f) <= extent[3]]
    axes.set_yticks(np.log10(ticks), [str(f) for f in ticks])
    axes.set_xlabel("time (s)")
    axes.set_ylabel("frequency (Hz, log scale)")
    axes.set_title(f"What the {analysis.task_model.name} model saw: {analysis.scalogram_note}", fontsize=10)
    if extent[1] > analysis.duration + extractor.frame_seconds:
        axes.axvline(analysis.duration, color="white", linestyle="--", linewidth=1)
        axes.text(analysis.duration, extent[2] + half_row, "end of recording ", color="white", fontsize=8, ha="right",
                  va="bottom")
    figure.colorbar(image, ax=axes, pad=0.01, label="log |CWT|, standardised")
    return figure


def plot_timeline(analysis: Analysis) -> Figure:
    """The waveform with each window's top class behind it, and the class probabilities under it."""
    windows, labels = analysis.windows, analysis.timeline_model.labels
    rows = 3 if analysis.annotated_events else 2
    figure = Figure(figsize=(11, 1.6 * rows + 0.6), dpi=100)
    grid = figure.add_gridspec(rows, 1, height_ratios=[2, 1.4, 0.5][:rows], left=0.085, right=0.86, top=0.93,
                               bottom=0.55 / (1.6 * rows + 0.6), hspace=0.12)
    wave_axes = figure.add_subplot(grid[0])
    probability_axes = figure.add_subplot(grid[1], sharex=wave_axes)
    # Min/max envelope per pixel column: the waveform's shape without drawing every sample.
    waveform = analysis.waveform
    step = max(1, len(waveform) // 2000)
    blocks = waveform[: len(waveform) // step * step].reshape(-1, step)
    times = np.arange(len(blocks)) * step / analysis.sampling_rate
    wave_axes.fill_between(times, blocks.min(axis=1), blocks.max(axis=1), color="#252525", linewidth=0.4)
    wave_axes.set_ylabel("amplitude")
    # Few artists (one per class, one for all windows): drawing cost stays flat on long recordings.
    top = windows.probabilities.argmax(axis=1)
    wave_axes.broken_barh(
        list(zip(windows.edges_s[:-1], np.diff(windows.edges_s))), (0, 1),
        facecolors=[to_rgba(_colour(labels[k], labels), 0.15 + 0.45 * p) for k, p in zip(top, windows.probabilities.max(axis=1))],
        transform=wave_axes.get_xaxis_transform(),
    )
    stacked = np.vstack([windows.probabilities, windows.probabilities[-1:]]).T  # step plot needs N + 1 points
    probability_axes.stackplot(windows.edges_s, stacked, step="post", labels=labels,
                               colors=[_colour(label, labels) for label in labels])
    probability_axes.vlines(windows.edges_s[1:-1], 0, 1, colors="white", linewidth=0.5)
    wave_axes.set_title(
        f"Event timeline ({analysis.timeline_model.name} model, {windows.window_s:.2f} s windows): "
        "colour = top class of the window nearest in time", fontsize=10)
    probability_axes.set_ylim(0, 1)
    probability_axes.set_ylabel("probability")
    probability_axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    last_axes = probability_axes
    if analysis.annotated_events:
        annotation_axes = figure.add_subplot(grid[2], sharex=wave_axes)
        for event in analysis.annotated_events:
            annotation_axes.axvspan(event["start_s"], event["end_s"], color=_colour(event["type"], labels), alpha=0.8)
            if event["end_s"] - event["start_s"] < analysis.duration / 25:
                continue  # too narrow for its name; the colour says it
            annotation_axes.text((event["start_s"] + event["end_s"]) / 2, 0.5, event["type"], ha="center",
                                 va="center", fontsize=7, clip_on=True)
        annotation_axes.set_yticks([])
        annotation_axes.set_ylabel("annotated", rotation=0, ha="right", va="center")
        last_axes = annotation_axes
    for axes in figure.axes[:-1]:
        axes.tick_params(labelbottom=False)
    last_axes.set_xlabel("time (s)")
    wave_axes.set_xlim(0, analysis.duration)
    return figure


def explain(analysis: Analysis) -> str:
    """A short plain-language reading of the result."""
    task_model = analysis.task_model
    (top, probability), *_ = analysis.ranked()
    lines = [f"**{task_model.name} ({task_model.level} level)** — the model hears **{top}** ({probability:.0%})."]
    if task_model.level == "record":
        lines.append(f"It classified the whole {analysis.duration:.1f} s recording at once.")
    else:
        lines.append(f"The {task_model.level}-level model classified {task_model.extractor.clip_seconds:.2f} s windows; "
                     "the probabilities are their average, each window weighted by the stretch of the recording "
                     "nearest to it.")
    lines += [f"**Note:** {warning}" for warning in analysis.warnings]
    if analysis.windows is not None:
        anomalies = [s for s in analysis.timeline_segments() if s[2] != "Normal"]
        where = ", ".join(f"{label} at {start:.1f}–{end:.1f} s"
                          for start, end, label, _ in anomalies[:MAX_LISTED_ANOMALIES])
        if len(anomalies) > MAX_LISTED_ANOMALIES:
            where += f" … and {len(anomalies) - MAX_LISTED_ANOMALIES} more (see the timeline)"
        heading = f"Timeline ({analysis.timeline_model.name} model)"
        lines.append(f"{heading}: {where}." if where else f"{heading}: every window is Normal.")
    lines.append("\n**What the classes mean**")
    lines += [f"- **{label}**: {CLASS_DESCRIPTIONS[label]}" for label in task_model.labels if label in CLASS_DESCRIPTIONS]
    lines.append("\n*Research demo trained on SPRSound (children, 8 kHz stethoscope recordings); not a diagnosis.*")
    return "\n".join(lines)


# -- command line -----------------------------------------------------------------------------

def predict(demo: RespSTFDemo, path: Path, task: str | None, output_dir: Path) -> None:
    """Run the page's classification once and print what the page shows; write its images as PNG."""
    from PIL import Image

    analysis = demo.analyse(path, task)
    _, scalogram, timeline, _, rows = demo.outputs(analysis)
    print(f"Recording: {path} ({analysis.duration:.2f} s at {analysis.sampling_rate} Hz)")
    print(f"Model: {analysis.task_model.title}, from {analysis.task_model.source}")
    for warning in analysis.warnings:
        print(f"Warning: {warning}")
    for name, probability in analysis.ranked():
        print(f"  {name:<16} {probability:6.3f}")
    output_dir.mkdir(parents=True, exist_ok=True)
    if timeline is not None:
        print(f"Timeline ({analysis.timeline_model.name} model, {len(rows)} windows of {analysis.windows.window_s:.2f} s):")
        for start, end, name, probability in analysis.timeline_segments():
            print(f"  {start:6.2f}–{end:6.2f} s  {name} ({probability:.2f})")
        timeline_path = output_dir / f"{path.stem}_timeline.png"
        Image.fromarray(timeline).save(timeline_path)
        print(f"Timeline plot: {timeline_path}")
    scalogram_path = output_dir / f"{path.stem}_scalogram.png"
    Image.fromarray(scalogram).save(scalogram_path)
    print(f"Scalogram: {scalogram_path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="checkpoint folder, folder of task checkpoints, or Hub id (default: env RESPSTF_MODEL "
                             "or the bundled checkpoints/)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to serve on (default 127.0.0.1; env GRADIO_SERVER_NAME, as Spaces set it)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="port (default 7860; env GRADIO_SERVER_PORT)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    parser.add_argument("--examples", type=Path, default=DEFAULT_EXAMPLES,
                        help=f"folder of example recordings (default {DEFAULT_EXAMPLES}, when present)")
    parser.add_argument("--predict", nargs="?", const=DEFAULT_PREDICT_FILE, type=Path, metavar="FILE",
                        help="classify FILE (default: a SPRSound example recording) without serving, and exit")
    parser.add_argument("--task", help="task for --predict: 11, 12, 21, 22 or as the page writes them, 1-1 … 2-2 "
                                       "(default: the first loaded of 2-2, 2-1, 1-2, 1-1)")
    parser.add_argument("--output-dir", type=Path, default=Path(tempfile.gettempdir()) / "respstf-predict",
                        help="where --predict writes the scalogram and timeline PNGs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    demo = RespSTFDemo(load_models(args.model), args.examples)
    if args.predict is not None:
        if not args.predict.is_file():
            raise _fail(f"--predict {args.predict}: no such file (the default is a recording of the shared "
                        f"SPRSound data; pass a {READABLE_FORMATS} file).")
        try:
            predict(demo, args.predict, args.task, args.output_dir)
        except ValueError as err:
            raise _fail(str(err)) from None
        return
    allowed = [str(args.examples)] if demo.examples else None
    demo.build().launch(server_name=args.host, server_port=args.port, share=args.share, allowed_paths=allowed,
                        max_file_size=MAX_UPLOAD_BYTES)


if __name__ == "__main__":
    main()
