"""RespSTF demo: drop in a stethoscope recording, see what the model hears and where.

    python app.py                        # serve http://127.0.0.1:7860 with the bundled checkpoints/
    python app.py --predict [FILE]       # classify one recording without serving, print the result
    python app.py --model org/name       # a model on the Hugging Face Hub (or a local folder)
    python app.py --port 8000 --examples DIR --share

``--model`` is one ``save_pretrained`` folder, a folder of them (``checkpoints/sprsound-task12/`` …; one
model per SPRSound task), or a Hub repository id of either, downloaded with ``huggingface_hub``. Every
model is loaded once at start-up; a missing or incompatible model stops the app there with a message.

An event detector (``train.py --task events``: a folder whose config has ``detection``, such as
``checkpoints/sprsound-events/``) under ``--model``, or given with ``--detector``, draws the timeline.

For each recording the page shows:
* the selected task's classes with probabilities: a record-level model (tasks 2-1, 2-2) classifies the
  whole recording; an event-level model (tasks 1-1, 1-2) is slid over it and its window probabilities
  are averaged, each window weighted by the stretch of the recording nearest to it;
* the event timeline: the detector's events (type and score) over the waveform, its frame probabilities,
  and beside them its record verdict; without a detector, the event model (task 1-2, else 1-1) classifies
  overlapping windows, drawn over the waveform, so one sees where a wheeze or crackle is;
* the scalogram the selected model saw (its ``input_features``), with time in s and frequency in Hz;
* what each class means.

The images are numpy arrays drawn without a figure (a few ms each). The classify function is also an API
(``api_name="/classify"``): label, scalogram, timeline, explanation, and the timeline as JSON (the detector's
``{"events", "record_label", "record_scores"}``, else the event model's windows)::

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860").predict(handle_file("rec.wav"), api_name="/classify")

On a Hugging Face Space (``requirements.txt`` + the card metadata of README.md) the package is not
installed, so the ``respstf`` modules are loaded from this repository's folders.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
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
import torch  # noqa: E402

import respstf.feature_extraction  # noqa: E402,F401  (registers the extractor that load_models loads)
from respstf.feature_extraction.audio_checks import MIN_SAMPLING_RATE, SHORTEST_RECORDING_SECONDS, check_audio  # noqa: E402
from respstf.hub_dataset import (  # noqa: E402
    LABEL_DESCRIPTIONS, READABLE_FORMATS, example_key, example_recordings, normalize_task, read_recording, task_of_labels,
)
from respstf.modeling import TaskModel, Windows, classify_recording, slide_windows  # noqa: E402
from respstf.modeling import load_models as load_checkpoints  # noqa: E402
from respstf.modeling.images_respstf import save_png, scalogram_image, timeline_image  # noqa: E402
from respstf.modeling.inference_respstf import EventDetector, find_detector, shares_features  # noqa: E402

DATA_DIR = Path(os.environ.get("RESPSTF_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
DEFAULT_MODEL = os.environ.get("RESPSTF_MODEL", str(REPO_ROOT / "checkpoints"))
DEFAULT_EXAMPLES = DATA_DIR / "sprsound" / "example_original_wav"
# A real 15.4 s recording with wheezes (record label CAS) from the release's example folder.
DEFAULT_PREDICT_FILE = DEFAULT_EXAMPLES / "65101170_0.4_0_p2_3246.wav"

MIN_SECONDS = SHORTEST_RECORDING_SECONDS  # the release's shortest recording is 0.3 s
MAX_SECONDS = 120.0  # SPRSound recordings are <= 15.4 s; this bounds the work per request
# Room for MAX_SECONDS of the largest common uncompressed audio (192 kHz, stereo, 32-bit) plus 10 % for headers
# and metadata chunks; gradio refuses a larger upload before storing it.
MAX_UPLOAD_BYTES = int(MAX_SECONDS * 192_000 * 2 * 4 * 1.1)
MAX_LISTED_ANOMALIES = 6  # the explanation names this many non-Normal timeline stretches, then counts the rest
MAX_EXAMPLES = 8
CONCURRENCY = 2  # classifications at a time (the queue holds the rest)
IMAGE_DIR = Path(tempfile.gettempdir()) / "respstf-demo-images"  # the PNGs /classify answers (an hour after last use)

# Record tasks first: they answer "what is in this recording"; the event timeline shows where.
DEFAULT_TASK_ORDER = ("22", "21", "12", "11")
TIMELINE_TASK_ORDER = ("12", "11")

LABEL_COLOURS = {
    "Normal": "#c7d3c2", "Adventitious": "#d7301f", "Rhonchi": "#6a51a3", "Wheeze": "#e31a1c",
    "Stridor": "#fd8d3c", "Coarse Crackle": "#8c510a", "Fine Crackle": "#2171b5", "Wheeze+Crackle": "#ae017e",
    "CAS": "#e31a1c", "DAS": "#2171b5", "CAS & DAS": "#ae017e", "Poor Quality": "#737373",
}


def _fail(message: str) -> SystemExit:
    return SystemExit(f"app.py: {message}")


def load_models(spec: str) -> dict[str, TaskModel]:
    """Every model under ``--model`` (`respstf.modeling.load_models`, SPRSound tasks told by their labels), or stop
    with a message saying what is missing or wrong."""
    try:
        return load_checkpoints(spec, task_of_labels=task_of_labels)
    except (OSError, ValueError) as err:
        raise _fail(str(err)) from err


def load_event_detector(spec: str | None, model_spec: str) -> EventDetector | None:
    """The event detector: ``--detector`` (as ``--model`` takes one, or "none"), else the one under ``--model`` when
    there is one; or stop with a message."""
    if spec is not None and spec.lower() == "none":
        return None
    try:
        detector = find_detector(spec or model_spec)
    except (OSError, ValueError) as err:
        raise _fail(f"--detector: {err}") from err
    if detector is None and spec is not None:
        raise _fail(f"--detector: {spec} holds no event detector (a checkpoint whose config.json has `detection`).")
    return detector


# -- analysis ---------------------------------------------------------------------------------

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
    detector: EventDetector | None = None
    detection: dict | None = None  # the detector's answer, frame scores included (`EventDetector.detect`)

    def ranked(self) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities)
        return [(self.task_model.labels[i], float(self.probabilities[i])) for i in order]

    def timeline_rows(self) -> list[dict] | dict:
        """The timeline as JSON: the detector's answer (no frame scores), else the event model's windows."""
        if self.detection is not None:
            return {key: self.detection[key] for key in ("events", "record_label", "record_scores")}
        return self.windows.rows(self.timeline_model.labels) if self.windows is not None else []

    def timeline_segments(self) -> list[tuple[float, float, str, float]]:
        """What the timeline draws, ``(start_s, end_s, label, score)``: the detector's events, else consecutive windows
        with the same top class merged (score: their mean top probability)."""
        if self.detection is not None:
            return [(e["start"], e["end"], e["label"], e["score"]) for e in self.detection["events"]]
        return self.windows.segments(self.timeline_model.labels) if self.windows is not None else []


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

    def __init__(self, models: dict[str, TaskModel], examples_dir: Path | None = None,
                 detector: EventDetector | None = None):
        if not models:
            raise _fail("no model loaded.")
        self.models, self.detector = models, detector
        self.default_task = next((key for key in DEFAULT_TASK_ORDER if key in models), next(iter(models)))
        event_keys = [key for key in TIMELINE_TASK_ORDER if key in models]
        event_keys += [key for key, m in models.items() if m.level == "event" and key not in event_keys]
        self.timeline_model = models[event_keys[0]] if event_keys else None
        self.examples, self.example_labels, self.annotations = example_recordings(examples_dir, MAX_EXAMPLES)

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
        waveform, sampling_rate, warnings = read_recording(Path(path), name, MIN_SECONDS, MAX_SECONDS)
        task_model = self.models[key]
        extractor = task_model.extractor
        warnings += check_audio(waveform, sampling_rate, name, band=(extractor.fmin, extractor.fmax),
                                trained_sampling_rate=extractor.sampling_rate)
        duration = len(waveform) / sampling_rate
        detection = features = windows = None
        if self.detector is not None:  # the timeline; a record model with the detector's front end shares its scalogram
            features = self.detector.features(waveform, sampling_rate)
            detection = self.detector.detect(waveform, sampling_rate, features)
            features = features if shares_features(task_model, features, duration, self.detector) else None
        elif self.timeline_model is not None:
            windows = slide_windows(self.timeline_model, waveform, sampling_rate)
        probabilities, scalogram, scalogram_note = classify_recording(
            task_model, waveform, sampling_rate, windows if task_model is self.timeline_model else None, features)
        return Analysis(name, duration, sampling_rate, task_model, probabilities, scalogram, scalogram_note,
                        waveform, self.timeline_model, windows, self.annotations.get(example_key(Path(path))), warnings,
                        self.detector, detection)

    def classify(self, audio: str | None, task: str | None = None):
        """Classify a recording: ``(label -> probability, scalogram PNG, timeline PNG, explanation, timeline JSON)``."""
        try:
            analysis = self.analyse(audio, task)
        except ValueError as err:
            raise gr.Error(str(err), title="Cannot classify this recording") from None
        for warning in analysis.warnings:
            gr.Warning(warning)
        label, scalogram, timeline, explanation, rows = self.outputs(analysis)
        # PNG files, each written once (`save_png`), not arrays: gradio rewrites an array's PNG on every request, and
        # a client fetching the same image for another request then gets a truncated file.
        timeline = None if timeline is None else save_png(timeline, IMAGE_DIR)
        return label, save_png(scalogram, IMAGE_DIR), timeline, explanation, rows

    @staticmethod
    def outputs(analysis: Analysis) -> tuple:
        """What the page shows of an analysis, in the order of the ``/classify`` outputs."""
        return (dict(analysis.ranked()), draw_scalogram(analysis), draw_timeline(analysis), explain(analysis),
                analysis.timeline_rows())

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
            with gr.Accordion("Timeline (JSON): the detector's events and verdict, or the event model's windows", open=False):
                rows = gr.JSON(label="windows")
            button.click(
                self.classify, inputs=[audio, task], outputs=[label, scalogram, timeline, explanation, rows],
                api_name="classify", concurrency_limit=CONCURRENCY,
            )
        return blocks


# -- figures and text -------------------------------------------------------------------------

def colours(*label_lists) -> dict[str, str]:
    """Each label's colour: `LABEL_COLOURS`, else matplotlib's colour cycle by its place in its list."""
    return {label: LABEL_COLOURS.get(label, f"C{index % 10}") for labels in label_lists
            for index, label in enumerate(labels)}


def draw_scalogram(analysis: Analysis) -> np.ndarray:
    """The selected model's input: rows are log-spaced wavelet frequencies, drawn on a log axis."""
    extractor = analysis.task_model.extractor
    return scalogram_image(analysis.scalogram, extractor.frame_seconds, extractor.frequencies, analysis.duration,
                           f"What the {analysis.task_model.name} model saw: {analysis.scalogram_note}")


def draw_timeline(analysis: Analysis) -> np.ndarray | None:
    """The detector's events over the waveform, its frame probabilities under it, its record verdict beside; else
    the event model's windows (top class behind the waveform, probabilities under it); None without either."""
    annotated = analysis.annotated_events or []
    annotated_types = [event["type"] for event in annotated]
    if analysis.detection is not None:
        detection, frames = analysis.detection, analysis.detection["frame_scores"]
        probabilities = np.asarray(frames["scores"])
        edges = np.minimum(np.arange(len(probabilities) + 1) * frames["frame_seconds"], analysis.duration)
        return timeline_image(
            analysis.waveform, analysis.sampling_rate, analysis.timeline_segments(),
            colours(frames["labels"], list(detection["record_scores"]), annotated_types),
            f"Event timeline ({analysis.detector.name} detector): each event's type and mean probability; "
            f"its frame probabilities ({frames['frame_seconds']:.3f} s frames) under the waveform",
            (edges, probabilities, frames["labels"]), detection["record_scores"],
            f"Record verdict: {detection['record_label']}", annotated)
    if analysis.windows is None:
        return None
    windows, labels = analysis.windows, analysis.timeline_model.labels
    return timeline_image(
        analysis.waveform, analysis.sampling_rate, analysis.timeline_segments(), colours(labels, annotated_types),
        f"Event timeline ({analysis.timeline_model.name} model, {windows.window_s:.2f} s windows): "
        "colour = top class of the window nearest in time", (windows.edges_s, windows.probabilities, labels),
        annotated=annotated)


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
    detection = analysis.detection
    if detection is not None:
        verdict = detection["record_label"]
        lines.append(f"**Event detector ({analysis.detector.name})**: the whole recording is **{verdict}** "
                     f"({detection['record_scores'][verdict]:.0%}).")
    if detection is not None or analysis.windows is not None:
        anomalies = [s for s in analysis.timeline_segments() if s[2] != "Normal"]
        where = ", ".join(f"{label} at {start:.1f}–{end:.1f} s" + (f" ({score:.2f})" if detection else "")
                          for start, end, label, score in anomalies[:MAX_LISTED_ANOMALIES])
        if len(anomalies) > MAX_LISTED_ANOMALIES:
            where += f" … and {len(anomalies) - MAX_LISTED_ANOMALIES} more (see the timeline)"
        heading = (f"Timeline ({analysis.detector.name} detector)" if detection is not None
                   else f"Timeline ({analysis.timeline_model.name} model)")
        empty = "no adventitious sound found." if detection is not None else "every window is Normal."
        lines.append(f"{heading}: {where}." if where else f"{heading}: {empty}")
    lines.append("\n**What the classes mean**")
    lines += [f"- **{label}**: {LABEL_DESCRIPTIONS[label]}" for label in task_model.labels if label in LABEL_DESCRIPTIONS]
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
    if analysis.detection is not None:
        print(f"Record verdict ({analysis.detector.name} detector): {rows['record_label']} "
              f"({', '.join(f'{name} {p:.3f}' for name, p in rows['record_scores'].items())})")
        print(f"Timeline ({analysis.detector.name} detector, {len(rows['events'])} events):")
    elif timeline is not None:
        print(f"Timeline ({analysis.timeline_model.name} model, {len(rows)} windows of {analysis.windows.window_s:.2f} s):")
    if timeline is not None:
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
    parser.add_argument("--detector", help="event detector folder for the timeline, or 'none' (default: the one under "
                                           "--model, such as checkpoints/sprsound-events/, when there is one)")
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
    demo = RespSTFDemo(load_models(args.model), args.examples, load_event_detector(args.detector, args.model))
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
    # One thread per classification running at once: more oversubscribes the cores (torch's threads then spin, idle).
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // CONCURRENCY))
    demo.build().launch(server_name=args.host, server_port=args.port, share=args.share, allowed_paths=allowed,
                        max_file_size=MAX_UPLOAD_BYTES)


if __name__ == "__main__":
    main()
