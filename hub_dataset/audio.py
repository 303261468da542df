"""Audio reading, cutting and encoding with soundfile, and the `datasets.Audio` decoder check.

Everything here works without FFmpeg: rows are built from encoded bytes, and `read_audio` decodes
them (or any file) with libsndfile. Only `decode=True` datasets need torchcodec + FFmpeg, which
`datasets.Audio` uses to decode (and resample) on access.
"""

from __future__ import annotations

import functools
import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is tool debris to ignore (``.ipynb_checkpoints``, ``.DS_Store``,
    macOS ``._x.wav`` and ``__MACOSX``), never data."""
    return name.startswith((".", "__"))


class UnreadableAudioError(ValueError):
    """An audio file that cannot be decoded (corrupt, truncated, empty or not audio at all)."""


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
    try:
        waveform, sampling_rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise ValueError(f"{name}: not a readable audio file (corrupt, truncated or not audio): {err}") from err
    if waveform.shape[0] == 0:
        raise ValueError(f"{name}: the audio file holds no samples.")
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


# Sony Wave64 names its chunks by GUID: these are its "riff" and "wave" ones (the "data" chunk's starts b"data").
_WAVE64_RIFF = bytes.fromhex("726966662e91cf11a5d628db04c10000")
_WAVE64_WAVE = bytes.fromhex("77617665f3acd3118cd100c04f8edb8a")


def _declared_audio(handle) -> tuple[int, int, bool] | None:
    """``(declared bytes, offset, from_64_bit_field)`` of the audio chunk of a RIFF, RF64/BW64 or Sony Wave64 file
    open at its start, else None (another format, or no audio chunk)."""
    header = handle.read(40)
    if header[:16] == _WAVE64_RIFF and header[24:40] == _WAVE64_WAVE:
        handle.seek(40)
        while len(chunk := handle.read(24)) == 24:
            size = struct.unpack("<Q", chunk[16:])[0]  # counts the chunk's 24-byte header
            if size < 24:  # damaged: going on would read the same chunk again and again
                return None
            if chunk[:4] == b"data":
                return size - 24, handle.tell(), True
            handle.seek(size - 24 + -size % 8, os.SEEK_CUR)  # chunks are padded to a multiple of 8 bytes
        return None
    if header[:4] not in (b"RIFF", b"RF64", b"BW64") or header[8:12] != b"WAVE":
        return None
    handle.seek(12)
    size_64 = None  # RF64 keeps sizes over 32 bits in its "ds64" chunk and writes 0xFFFFFFFF in their place
    while len(chunk := handle.read(8)) == 8:
        name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if name == b"ds64":
            if size < 16:  # damaged: too short to hold the audio's size
                return None
            size_64 = struct.unpack("<Q", handle.read(16)[8:])[0]  # after the whole file's size: the audio's
            handle.seek(size - 16 + size % 2, os.SEEK_CUR)
        elif name == b"data":
            if size == 0xFFFFFFFF and size_64 is not None:
                return size_64, handle.tell(), True
            return size, handle.tell(), False
        else:
            handle.seek(size + size % 2, os.SEEK_CUR)  # chunks are padded to an even size
    return None


def wav_shortfall(path: Path) -> tuple[int, int] | None:
    """``(declared, present)`` bytes of a WAV file's audio (RIFF, RF64/BW64 or Sony Wave64) when its header declares
    more than the file holds (a copy or recording cut short: libsndfile then reads what is there without a word),
    else None."""
    with open(path, "rb") as handle:
        found = _declared_audio(handle)
    if found is None:
        return None
    declared, offset, from_64_bit_field = found
    # 0, or 0x7F000000 and up in a 32-bit field (arecord: 0x7FFFFF00, others 0xFFFFFFFF), or 2**62 and up in a
    # 64-bit one: a writer to a pipe that could not go back to fill the size in, so the length is unknown, not short.
    unknown = declared == 0 or declared >= (1 << 62 if from_64_bit_field else 0x7F000000)
    present = os.path.getsize(path) - offset
    return None if unknown or present >= declared else (declared, present)


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
