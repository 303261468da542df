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
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import respstf.feature_extraction  # noqa: E402,F401  (registers the extractor that load_models loads)
from respstf.feature_extraction.audio_checks import MIN_SAMPLING_RATE, SHORTEST_RECORDING_SECONDS, check_audio  # noqa: E402
from respstf.hub_dataset import (  # noqa: E402
    LABEL_DESCRIPTIONS, READABLE_FORMATS, example_key, example_recordings, normalize_task, read_recording, task_of_labels,
)
from respstf.modeling import TaskModel, Windows, classify_recording, slide_windows  # noqa: E402
from respstf.modeling import load_models as load_checkpoints  # noqa: E402

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

    def ranked(self) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities)
        return [(self.task_model.labels[i], float(self.probabilities[i])) for i in order]

    def timeline_rows(self) -> list[dict]:
        return self.windows.rows(self.timeline_model.labels) if self.windows is not None else []

    def timeline_segments(self) -> list[tuple[float, float, str, float]]:
        """Consecutive windows with the same top class merged: ``(start_s, end_s, label, mean probability)``."""
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

    def __init__(self, models: dict[str, TaskModel], examples_dir: Path | None = None):
        if not models:
            raise _fail("no model loaded.")
        self.models = models
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
        windows = slide_windows(self.timeline_model, waveform, sampling_rate) if self.timeline_model else None
        probabilities, scalogram, scalogram_note = classify_recording(
            task_model, waveform, sampling_rate, windows if task_model is self.timeline_model else None)
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
