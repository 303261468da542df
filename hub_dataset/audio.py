"""Audio reading, cutting and encoding with soundfile, and the `datasets.Audio` decoder check.

Everything here works without FFmpeg but `read_recording` of a format soundfile does not read: rows are built from
encoded bytes, and `read_audio` decodes them (or any file) with libsndfile. Only `decode=True` datasets need
torchcodec + FFmpeg, which `datasets.Audio` uses to decode (and resample) on access. `read_recording` reads one
recording a user gives (the demo's uploads) with `respstf.modeling.audio_file_respstf`, the file reader the
checkpoints' pipelines ship: soundfile where it can, FFmpeg for other formats.
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from respstf.feature_extraction.audio_checks import check_audio
from respstf.modeling.audio_file_respstf import decode_file, decode_present, read_audio_file, wav_shortfall

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is tool debris to ignore (``.ipynb_checkpoints``, ``.DS_Store``,
    macOS ``._x.wav`` and ``__MACOSX``), never data."""
    return name.startswith((".", "__"))


class UnreadableAudioError(ValueError):
    """An audio file that cannot be decoded (corrupt, truncated, empty or not audio at all), or whose audio holds
    nothing to learn from (``reason``: NaN/Inf samples, silence)."""

    def __init__(self, message: str, reason: str = "unreadable audio"):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keeps the reason when a worker process hands the error back
        return type(self), (str(self), self.reason)


# Read each subtype as the integer/float type that holds it exactly, so cut events stay lossless.
_READ_DTYPE = {"PCM_S8": "int16", "PCM_U8": "int16", "PCM_16": "int16", "PCM_24": "int32", "PCM_32": "int32",
               "DOUBLE": "float64"}
_FLAC_SUBTYPES = {"PCM_S8", "PCM_16", "PCM_24"}  # what libsndfile's FLAC encoder can hold losslessly


def _source_name(source) -> str:
    if isinstance(source, dict):
        return str(source.get("path") or "<audio bytes>")
    if isinstance(source, (bytes, bytearray)):
        return "<audio bytes>"
    return str(source)


def read_audio(source, mono: bool = True) -> tuple[np.ndarray, int]:
    """Decode audio with soundfile (no FFmpeg needed) at its native sampling rate.

    Args:
        source: a file path, the file's bytes, or an undecoded `datasets.Audio` value
            ``{"bytes": ..., "path": ...}`` (what rows hold with ``decode=False``).
        mono: average the channels (the default); otherwise return ``(frames, channels)``.

    Returns:
        ``(waveform, sampling_rate)`` with a float32 waveform in [-1, 1].

    Raises:
        ValueError: naming the file when it is missing, empty, corrupt or not audio.
        TypeError: for anything else, e.g. a row's audio already decoded by ``datasets`` (``decode=True``).
    """
    if not isinstance(source, (str, os.PathLike, bytes, bytearray, dict)):
        decoded = "a decoded `datasets.Audio` value" if hasattr(source, "get_all_samples") else type(source).__name__
        raise TypeError(
            f"read_audio takes a file path, the file's bytes or an undecoded {{'bytes', 'path'}} value, got {decoded}. "
            "Load the dataset with decode=False (or cast_column('audio', Audio(decode=False))) to read rows with "
            "read_audio, or call the decoded value's get_all_samples()."
        )
    name = _source_name(source)
    if isinstance(source, dict):
        source = source.get("bytes") or source.get("path")
        if source is None:
            raise ValueError(f"{name}: the audio value has neither 'bytes' nor 'path'.")
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif not os.path.isfile(source):
        raise ValueError(f"{name}: audio file not found.")
    waveform, sampling_rate = decode_file(source, name)
    return (waveform.mean(axis=1) if mono else waveform), int(sampling_rate)


def encode_audio(samples: np.ndarray, sampling_rate: int, subtype: str) -> tuple[bytes, str]:
    """Encode samples losslessly: FLAC for <= 24-bit PCM, WAV (same subtype) otherwise.

    Returns the bytes and the file extension they correspond to.
    """
    buffer = io.BytesIO()
    if subtype in _FLAC_SUBTYPES:
        sf.write(buffer, samples, sampling_rate, format="FLAC", subtype=subtype)
        return buffer.getvalue(), ".flac"
    wav_subtype = subtype if subtype in ("PCM_32", "FLOAT", "DOUBLE", "PCM_U8") else "FLOAT"
    sf.write(buffer, samples, sampling_rate, format="WAV", subtype=wav_subtype)
    return buffer.getvalue(), ".wav"


@dataclass
class Clip:
    """One span cut from a recording: its (clipped) annotation times and the encoded audio."""

    start_s: float
    end_s: float
    offset_s: float  # where the audio starts in the recording (start_s minus the context padding)
    audio_bytes: bytes | None = None  # None when only the times were asked for
    extension: str = ""


@dataclass
class RecordingAudio:
    """What the worker returns for one recording."""

    duration_s: float
    sampling_rate: int
    file_bytes: bytes | None
    clips: list[Clip] = field(default_factory=list)
    clipped_ends: list[str] = field(default_factory=list)  # spans whose end was past the recording's: where, by how much


def read_recording(path: Path, name: str | None = None, min_seconds: float = 0.0, max_seconds: float | None = None
                   ) -> tuple[np.ndarray, int, list[str]]:
    """`read_audio_file` (soundfile, else FFmpeg; warnings for a file cut short or damaged), refusing a recording
    shorter than ``min_seconds`` or longer than ``max_seconds`` (a demo's limits) with an error naming it."""
    name = str(path) if name is None else name
    waveform, sampling_rate, warnings = read_audio_file(path, name, max_seconds)
    duration = len(waveform) / sampling_rate
    if duration < min_seconds:  # one just short of the limit is not said to be at it
        length = f"{duration:.2f} s" if round(duration, 2) < min_seconds else f"just under {min_seconds} s"
        raise ValueError(f"{name} is {length} long: the shortest recording accepted is {min_seconds} s.")
    return waveform, sampling_rate, warnings


def read_and_cut(
    audio_path: str | Path,
    spans: list[tuple[float, float | None, str]],
    context_s: float = 0.0,
    keep_file_bytes: bool = True,
    cut: bool = True,
) -> RecordingAudio:
    """Decode one recording fully (so corrupt files fail here), and cut `spans` out of it.

    `spans` are ``(start_s, end_s, source)`` in seconds, ``source`` saying where the span was annotated
    (e.g. ``"metadata.csv, entry 3"``) for errors; ``end_s=None`` means "to the end". An end past the
    recording is clipped to it and counted; a start at or past the end is an error.
    Module-level so that `multiprocessing` can run it in worker processes.

    Raises:
        UnreadableAudioError: the file is corrupt, truncated, empty or not audio.
        ValueError: a span starts at or after the end of the recording.
    """
    audio_path = Path(audio_path)
    try:
        with sf.SoundFile(audio_path) as handle:
            subtype, sampling_rate, frames = handle.subtype, handle.samplerate, handle.frames
            samples = handle.read(dtype=_READ_DTYPE.get(subtype, "float32"))
    except (sf.LibsndfileError, RuntimeError) as err:
        present = decode_present(audio_path)
        if present is not None:  # a FLAC cut short: soundfile stops where the data ends, refused below as truncated
            samples, _, frames = present
        else:
            raise UnreadableAudioError(
                f"{audio_path}: not a readable audio file (corrupt, truncated or not audio): {err}") from err
    if len(samples) == 0 or len(samples) < frames:
        raise UnreadableAudioError(
            f"{audio_path}: the audio file is empty or truncated ({len(samples)} of {frames} frames).")
    shortfall = wav_shortfall(audio_path)
    if shortfall:
        declared, present = shortfall
        raise UnreadableAudioError(f"{audio_path}: the WAV file is truncated: its header declares {declared} bytes of "
                                   f"audio, the file holds {present} ({present / declared:.0%}).")
    try:  # NaN/Inf or silent audio would reach training unnoticed (and fail there naming no file)
        check_audio(_as_float(samples, subtype), sampling_rate, str(audio_path), clipping=False)
    except ValueError as err:
        raise UnreadableAudioError(str(err), reason="unusable audio (NaN/Inf, silent or sampled too low)") from None
    duration_s = len(samples) / sampling_rate
    result = RecordingAudio(duration_s, sampling_rate, audio_path.read_bytes() if keep_file_bytes else None)
    half_sample = 0.5 / sampling_rate
    for start_s, end_s, source in spans:
        if start_s >= duration_s:
            # Far past the end usually means milliseconds written where seconds are expected.
            unit_hint = (" That is over 10 times the recording's length: check the unit of the annotation's times "
                         "(seconds; milliseconds in SPRSound JSON)." if start_s >= 10 * duration_s else "")
            raise ValueError(
                f"{source}: the span starts at {start_s:.3f} s, at or after the end of the recording {audio_path} "
                f"({duration_s:.3f} s).{unit_hint}"
            )
        if end_s is None:
            end_s = duration_s
        elif end_s > duration_s + half_sample:
            result.clipped_ends.append(f"{source} (end {end_s:.3f} s, recording {audio_path.name} {duration_s:.3f} s)")
            end_s = duration_s
        end_s = min(end_s, duration_s)
        if not cut:
            result.clips.append(Clip(start_s, end_s, start_s))
            continue
        first = max(0, round((start_s - context_s) * sampling_rate))
        last = min(len(samples), max(first + 1, round((end_s + context_s) * sampling_rate)))
        audio_bytes, extension = encode_audio(samples[first:last], sampling_rate, subtype)
        result.clips.append(Clip(start_s, end_s, first / sampling_rate, audio_bytes, extension))
    return result


def _as_float(samples: np.ndarray, subtype: str) -> np.ndarray:
    """Mono float samples in [-1, 1] of what `read_and_cut` read in the type that holds its subtype exactly."""
    if samples.dtype.kind == "i":  # PCM scaled by its bit depth, as the feature extractor scales integer input
        samples = samples / float(-np.iinfo(samples.dtype).min)
    return samples.mean(axis=1) if samples.ndim == 2 else samples


def read_and_cut_from_args(arguments: tuple) -> RecordingAudio | UnreadableAudioError:
    """`read_and_cut` of one argument tuple (what `Pool.imap` hands over). An unreadable file is returned,
    not raised, so that the caller decides between stopping and skipping it without losing the pool."""
    try:
        return read_and_cut(*arguments)
    except UnreadableAudioError as err:
        return err


@functools.lru_cache(maxsize=1)
def audio_decoder_problem() -> str | None:
    """Why `datasets.Audio(decode=True)` cannot decode here (torchcodec or FFmpeg missing), or None."""
    try:
        from torchcodec.decoders import AudioDecoder

        probe = io.BytesIO()
        sf.write(probe, np.zeros(160, dtype=np.int16), 8000, format="WAV", subtype="PCM_16")
        AudioDecoder(probe.getvalue()).get_all_samples()
    except Exception as err:  # ImportError without torchcodec, RuntimeError when the FFmpeg libraries are missing
        return f"{type(err).__name__}: {err}"
    return None


def require_audio_decoder() -> None:
    """Raise a clear error when decoded `datasets.Audio` columns cannot work on this machine."""
    problem = audio_decoder_problem()
    if problem is not None:
        raise RuntimeError(
            "Decoding the 'audio' column needs torchcodec with the system FFmpeg libraries "
            "(pip install torchcodec==0.13.0 for torch 2.13 on CPU; apt-get install ffmpeg), which failed here: "
            f"{problem}. Load with decode=False to get undecoded rows and decode them with "
            "respstf.hub_dataset.read_audio(row['audio']) (soundfile, no FFmpeg needed)."
        )
