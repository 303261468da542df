"""What the demo draws: the scalogram and the event timeline as numpy images (`TimeImage`), no figure per request.

Library code of the package (not shipped to the Hub with a checkpoint).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_WIDTH = 1100  # pixels; the plots span [PLOT_LEFT, IMAGE_WIDTH - right margin)
PLOT_LEFT = 86
TIMELINE_STRIP = (26, 48)  # the rows of `timeline_image`'s strip of segments
TIMELINE_RIGHT = 250  # `timeline_image`'s right margin: the record verdict and which colour is which class


@functools.lru_cache(maxsize=None)
def rgb(colour: str) -> tuple[int, int, int]:
    """A matplotlib colour ("#e31a1c", "C3", "white") as 8-bit RGB."""
    from matplotlib.colors import to_rgb

    return tuple(round(255 * channel) for channel in to_rgb(colour))


@functools.lru_cache(maxsize=None)
def colour_table(name: str = "magma") -> np.ndarray:
    """A matplotlib colormap as a ``(256, 3)`` uint8 lookup table."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size)


def _tick_step(span: float, most: int) -> float:
    return next((step for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if span / step <= most), 200.0)


class TimeImage:
    """An RGB image of panels over one time axis (``seconds`` across the plot's columns), drawn with numpy and its
    text with PIL: a few milliseconds, where a matplotlib figure per request took ~100 ms of CPU."""

    def __init__(self, seconds: float, height: int, right: int, width: int = IMAGE_WIDTH, left: int = PLOT_LEFT):
        self.pixels = np.full((height, width, 3), 255, np.uint8)
        self.seconds, self.x0, self.x1 = max(seconds, 1e-6), left, width - right
        self.texts: list[tuple] = []

    def x(self, seconds: float) -> int:
        """The pixel column where ``seconds`` falls; a span ``[start, end)`` covers columns ``x(start)`` to ``x(end) - 1``."""
        return self.x0 + int(round(min(max(seconds / self.seconds, 0.0), 1.0) * (self.x1 - self.x0)))

    def column_seconds(self) -> np.ndarray:
        """The time at the centre of each plot column, ``(x1 - x0,)``."""
        return (np.arange(self.x1 - self.x0) + 0.5) * self.seconds / (self.x1 - self.x0)

    def fill(self, top: int, bottom: int, left: int, right: int, colour: str, alpha: float = 1.0) -> None:
        region = self.pixels[top:bottom, left:right]
        region[:] = (region * (1 - alpha) + np.asarray(rgb(colour)) * alpha).round().astype(np.uint8)

    def text(self, x: float, y: float, text: str, colour: str = "#222222", anchor: str = "lm", size: int = 11) -> None:
        """Text at ``(x, y)``, ``anchor`` as PIL reads it ("lm": left, middle); drawn last, over the panels."""
        self.texts.append(((x, y), text, rgb(colour), anchor, size))

    def frame(self, top: int, bottom: int, label: str = "") -> None:
        """A grey box around the plot columns of ``[top, bottom)`` and its label left of it."""
        grey = np.asarray(rgb("#9a9a9a"), np.uint8)
        self.pixels[[top, bottom - 1], self.x0 - 1 : self.x1 + 1] = grey
        self.pixels[top:bottom, [self.x0 - 1, self.x1]] = grey
        if label:
            self.text(self.x0 - 6, (top + bottom) / 2, label, anchor="rm")

    def time_axis(self, top: int, extra: str = "") -> None:
        """Ticks and their times under ``top``, and the axis' name."""
        step = _tick_step(self.seconds, 16)
        for tick in np.arange(0, self.seconds + 1e-9, step):
            x = min(self.x(tick), self.x1 - 1)
            self.pixels[top : top + 4, x] = 90
            self.text(x, top + 5, f"{tick:g}", anchor="mt")
        self.text((self.x0 + self.x1) / 2, top + 24, "time (s)" + extra, anchor="mt")

    def spans(self, top: int, bottom: int, segments: Sequence[tuple[float, float, str, float]], colours: dict[str, str],
              alpha: Callable[[float], float] | None = None, labelled: bool = False) -> None:
        """Each ``(start, end, label, score)`` as a box of its label's colour over its time; ``alpha(score)`` blends it
        (solid when None); ``labelled``: "label score" written in the box where it fits, clear of its top 3 rows."""
        for start, end, label, score in segments:
            left, right = self.x(start), self.x(end)
            self.fill(top, bottom, left, right, colours[label], 1.0 if alpha is None else alpha(score))
            text = f"{label} {score:.2f}"
            if labelled and right - left >= 6.5 * len(text) + 6:
                dark = np.dot(rgb(colours[label]), (0.299, 0.587, 0.114)) < 140
                self.text((left + right) / 2, (top + bottom) / 2 + 2, text, "white" if dark else "#111111", "mm", 10)

    def envelope(self, top: int, bottom: int, waveform: np.ndarray, colour: str = "#252525") -> None:
        """The waveform as its min/max per pixel column, symmetric about the middle of ``[top, bottom)``; each column
        reaches the next one's first sample, so that a few samples per column still draw a connected line."""
        width = self.x1 - self.x0
        edges = np.minimum((np.arange(width) * len(waveform)) // width, len(waveform) - 1)
        following = waveform[np.append(edges[1:], len(waveform) - 1)]
        low = np.minimum(np.minimum.reduceat(waveform, edges), following)
        high = np.maximum(np.maximum.reduceat(waveform, edges), following)
        scale = float(np.max(np.abs(waveform))) or 1.0
        middle, half = (top + bottom - 1) / 2, (bottom - top - 2) / 2
        rows = np.arange(top, bottom)[:, None]
        inside = (rows >= np.floor(middle - high / scale * half)) & (rows <= np.ceil(middle - low / scale * half))
        self.pixels[top:bottom, self.x0 : self.x1][inside] = rgb(colour)

    def stacked(self, top: int, bottom: int, edges_s: np.ndarray, probabilities: np.ndarray, colours: list[str]) -> None:
        """Class probabilities stacked bottom-up per time bin (``bin k`` over ``[edges_s[k], edges_s[k + 1])``)."""
        bins = np.searchsorted(edges_s, self.column_seconds(), side="right").clip(1, len(probabilities)) - 1
        cumulative = np.cumsum(probabilities, axis=1)[bins]  # (columns, classes)
        cumulative /= cumulative[:, -1:].clip(min=1e-9)
        heights = (bottom - np.arange(top, bottom) - 0.5) / (bottom - top)  # 0 at the bottom, 1 at the top
        classes = (heights[:, None, None] > cumulative[None]).sum(-1).clip(max=len(colours) - 1)
        self.pixels[top:bottom, self.x0 : self.x1] = np.asarray([rgb(c) for c in colours], np.uint8)[classes]

    def bars(self, top: int, left: int, scores: dict[str, float], colours: dict[str, str], title: str) -> None:
        """Horizontal bars of ``scores`` (label: probability) from ``(left, top)``, the top one's label larger."""
        self.text(left, top + 8, title, anchor="lm", size=12)
        best = max(scores, key=scores.get)
        for row, (label, score) in enumerate(scores.items()):
            y = top + 26 + 20 * row
            self.fill(y, y + 14, left, left + 6 + round(90 * score), colours.get(label, "#777777"))
            self.text(left + 102, y + 7, f"{label} {score:.0%}", anchor="lm", size=12 if label == best else 10)

    def image(self) -> np.ndarray:
        """The image as an ``(height, width, 3)`` uint8 array, texts drawn."""
        from PIL import Image, ImageDraw

        canvas = Image.fromarray(self.pixels)
        draw = ImageDraw.Draw(canvas)
        for position, text, colour, anchor, size in self.texts:
            draw.text(position, text, fill=colour, anchor=anchor, font=_font(size))
        return np.asarray(canvas)


def scalogram_image(features: np.ndarray, frame_seconds: float, frequencies: Sequence[float], duration: float,
                    title: str) -> np.ndarray:
    """A scalogram ``(n_scales, frames)`` (rows: log-spaced frequencies, highest first) as an RGB image through the
    magma lookup table: time in s across, frequency in Hz up on a log axis, a colour bar on the right."""
    rows_px, top = max(2, 256 // len(features)), 26
    height = rows_px * len(features)
    image = TimeImage(features.shape[1] * frame_seconds, top + height + 42, right=110)
    low, high = float(features.min()), float(features.max())
    levels = ((features - low) * (255 / max(high - low, 1e-9))).round().astype(np.uint8)
    columns = np.minimum((image.column_seconds() / frame_seconds).astype(int), features.shape[1] - 1)
    image.pixels[top : top + height, image.x0 : image.x1] = colour_table("magma")[np.repeat(levels[:, columns], rows_px, 0)]
    image.frame(top - 1, top + height + 1)
    logs = np.log10(np.asarray(frequencies, dtype=float))
    step = (logs[0] - logs[-1]) / max(len(logs) - 1, 1)
    for hertz in (50, 100, 200, 500, 1000, 2000, 4000):
        row = (logs[0] - np.log10(hertz)) / step if step else 0.0
        if -0.5 <= row <= len(logs) - 0.5:
            y = top + round((row + 0.5) * rows_px)
            image.pixels[y, image.x0 - 5 : image.x0 - 1] = 90
            image.text(image.x0 - 8, y, str(hertz), anchor="rm")
    image.text(8, top + height / 2, "Hz (log)", anchor="lm")
    if image.seconds > duration + frame_seconds:  # zero padding after the recording
        x = image.x(duration)
        image.pixels[top : top + height : 6, x] = 255
        image.pixels[top + 1 : top + height : 6, x] = 255
        before = x - image.x0 > 100  # room for the text left of the line
        image.text(x - 4 if before else x + 4, top + height - 8, "end of recording", colour="white",
                   anchor="rm" if before else "lm", size=10)
    bar = image.x1 + 14
    image.pixels[top : top + height, bar : bar + 14] = colour_table("magma")[np.linspace(255, 0, height).astype(int)][:, None]
    image.text(bar + 18, top + 4, f"{high:.1f}", anchor="lt", size=10)
    image.text(bar + 18, top + height - 4, f"{low:.1f}", anchor="lb", size=10)
    image.text(bar + 18, top + height / 2, "log|CWT|\nstd.", anchor="lm", size=10)
    image.text(image.x0, 12, title, anchor="lm", size=12)
    image.time_axis(top + height + 2)
    return image.image()


def timeline_image(waveform: np.ndarray, sampling_rate: int, segments: Sequence[tuple[float, float, str, float]],
                   colours: dict[str, str], title: str, scores: tuple[np.ndarray, np.ndarray, list[str]] | None = None,
                   verdict: dict[str, float] | None = None, verdict_title: str = "",
                   annotated: Sequence[dict] | None = None) -> np.ndarray:
    """The event timeline as an RGB image: ``segments`` ``(start_s, end_s, label, score)`` as solid boxes labelled
    "label score" in the strip at rows `TIMELINE_STRIP` and, blended by score, behind the waveform; ``scores``
    ``(edges_s (bins + 1,), probabilities (bins, classes), labels)`` stacked under it; ``annotated`` events
    (``{"type", "start_s", "end_s"}``) in a row of their own; on the right the ``verdict`` (record class:
    probability) as bars, and which colour is which class. ``colours``: label -> matplotlib colour, for every label."""
    duration = len(waveform) / sampling_rate
    top, bottom = TIMELINE_STRIP
    height = bottom + 116 + (64 if scores is not None else 0) + (22 if annotated else 0) + 42
    image = TimeImage(duration, height, right=TIMELINE_RIGHT)
    image.text(image.x0, 11, title, anchor="lm", size=12)
    image.spans(top, bottom, segments, colours, labelled=True)
    image.frame(top - 1, bottom + 1, "events")
    top, bottom = bottom + 4, bottom + 114
    image.spans(top, bottom, segments, colours, alpha=lambda score: 0.15 + 0.45 * score)
    image.envelope(top, bottom, np.asarray(waveform, dtype=np.float32))
    image.frame(top - 1, bottom + 1, "waveform")
    legend = list(dict.fromkeys(label for _, _, label, _ in segments))
    if scores is not None:
        edges, probabilities, labels = scores
        top, bottom = bottom + 4, bottom + 64
        image.stacked(top, bottom, np.asarray(edges), np.asarray(probabilities), [colours[label] for label in labels])
        image.frame(top - 1, bottom + 1, "probability")
        legend = list(dict.fromkeys(legend + list(labels)))
    if annotated:
        top, bottom = bottom + 4, bottom + 22
        image.spans(top, bottom, [(e["start_s"], e["end_s"], e["type"], 1.0) for e in annotated], colours, labelled=False)
        image.frame(top - 1, bottom + 1, "annotated")
        legend = list(dict.fromkeys(legend + [event["type"] for event in annotated]))
    image.time_axis(bottom + 2)
    left, y = image.x1 + 24, TIMELINE_STRIP[0]
    if verdict:
        image.bars(y - 8, left, verdict, colours, verdict_title)
        y += 30 + 20 * len(verdict)
    for index, label in enumerate(legend):
        x, row = left + 112 * (index % 2), y + 16 * (index // 2)
        image.fill(row, row + 10, x, x + 10, colours[label])
        image.text(x + 14, row + 5, label, anchor="lm", size=10)
    return image.image()


_LAST_PRUNE: dict[Path, float] = {}


def save_png(image: np.ndarray, folder: Path, max_age_s: float = 3600.0) -> Path:
    """``image`` as ``folder/<sha1 of its PNG>.png``, written once, under a temporary name renamed into place: a server
    answering the same image to concurrent requests never rewrites a file another is reading (gradio's own saving
    of an image array does, and a client then downloads a truncated PNG). Every minute at most, files older than
    ``max_age_s`` are deleted."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="png")
    data = buffer.getvalue()
    path = folder / f"{hashlib.sha1(data).hexdigest()}.png"
    try:
        os.utime(path)  # used again: ages from now (never touch() a name a prune may just have deleted: an empty PNG)
        return path
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    descriptor, staging = tempfile.mkstemp(dir=folder, prefix=".staging-")
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(staging, path)
    now = time.time()
    if now - _LAST_PRUNE.get(folder, 0.0) > 60:
        _LAST_PRUNE[folder] = now
        for entry in os.scandir(folder):
            try:
                if now - entry.stat().st_mtime > max_age_s:
                    Path(entry.path).unlink(missing_ok=True)
            except FileNotFoundError:  # another request's prune got there first
                continue
    return path
