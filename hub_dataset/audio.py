"""Audio reading, cutting and encoding with soundfile, and the `datasets.Audio` decoder check.

Everything here but `read_with_ffmpeg` works without FFmpeg: rows are built from encoded bytes, and
`read_audio` decodes them (or any file) with libsndfile. Only `decode=True` datasets need torchcodec +
FFmpeg, which `datasets.Audio` uses to decode (and resample) on access. `read_recording` reads one
recording a user gives (the demo's uploads): soundfile where it can, FFmpeg for other formats.
"""

from __future__ import annotations

import functools
import io
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from respstf.feature_extraction.audio_checks import check_audio

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
READABLE_FORMATS = "WAV, FLAC, OGG or MP3"  # what soundfile decodes; FFmpeg, where installed, converts other formats
FFMPEG_TIMEOUT_S = 60
FFMPEG_MESSAGES = 3  # of FFmpeg's error lines shown: a broken MP3 can give dozens


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


def decode_present(path: Path, dtype: str = "float32") -> tuple[np.ndarray, int, int] | None:
    """``(samples, sampling_rate, declared frames)`` of a file soundfile stops decoding partway, as a FLAC cut short
    does ("flac decoder lost sync"): the samples ``(frames, channels)`` that decode before the damage, in blocks
    of 1,024 frames (at most one block short). None when the header does not open or nothing decodes."""
    blocks = []
    try:
        with sf.SoundFile(path) as handle:
            declared = handle.frames
            try:
                for block in handle.blocks(blocksize=1024, dtype=dtype, always_2d=True):
                    blocks.append(block.copy())
            except (sf.LibsndfileError, RuntimeError):
                pass  # the damage: what decoded before it is kept
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    if not blocks:
        return None
    return np.concatenate(blocks), handle.samplerate, declared


def cut_short_warning(name: str, declared_frames: int, present_frames: int) -> str:
    """What a caller says of a file that holds fewer frames than its header announces."""
    return (f"{name} is cut short: its header announces {declared_frames:,} samples of audio, "
            f"{present_frames:,} decode ({present_frames / declared_frames:.0%}); only the part present is classified.")


def too_long(name: str, max_seconds: float, seconds: float | None = None) -> ValueError:
    """The refusal of a recording longer than ``max_seconds`` (``seconds``: its length where known)."""
    if seconds is None:
        length = f"over {max_seconds:.0f} s"
    else:  # one just past the limit is not said to be at it
        length = f"{seconds:.1f} s" if round(seconds, 1) > max_seconds else f"just over {max_seconds:.0f} s"
    return ValueError(f"{name} is {length} long: this demo accepts at most {max_seconds:.0f} s; "
                      "cut the recording into shorter parts.")


def _read_named(path: Path, name: str) -> tuple[np.ndarray, int]:
    """`read_audio`, naming the file as the user knows it in errors, not by the server's upload path."""
    try:
        return read_audio(str(path))
    except ValueError as err:
        raise ValueError(str(err).replace(str(path), name)) from None


def read_recording(path: Path, name: str | None = None, min_seconds: float = 0.0, max_seconds: float | None = None
                   ) -> tuple[np.ndarray, int, list[str]]:
    """Decode one recording with soundfile where it reads the file (one longer than ``max_seconds`` is refused from
    its header, before it is decoded), else with FFmpeg (`read_with_ffmpeg`), whatever the file's extension.

    Args:
        name: how errors and warnings name the file (default: its path), e.g. an upload's name as the user knows it.
        min_seconds, max_seconds: the shortest and longest recording accepted (a demo's limits).

    Returns:
        The mono float32 waveform, its sampling rate and warnings about what was read: a file cut short (a WAV
        whose header announces more audio than it holds, a FLAC that stops decoding partway) or one FFmpeg
        found damaged; only the part that decodes is returned.

    Raises:
        ValueError: naming the file: missing, not audio, no audio track, shorter than ``min_seconds`` or longer
            than ``max_seconds``.
    """
    name = str(path) if name is None else name
    waveform, sampling_rate, warnings = _read_recording(Path(path), name, max_seconds)
    duration = len(waveform) / sampling_rate
    if duration < min_seconds:  # one just short of the limit is not said to be at it
        length = f"{duration:.2f} s" if round(duration, 2) < min_seconds else f"just under {min_seconds} s"
        raise ValueError(f"{name} is {length} long: the shortest recording accepted is {min_seconds} s.")
    return waveform, sampling_rate, warnings


def _read_recording(path: Path, name: str, max_seconds: float | None) -> tuple[np.ndarray, int, list[str]]:
    """`read_recording` but for the shortest length."""
    try:
        header = sf.info(str(path))
    except (RuntimeError, TypeError) as err:
        if not path.is_file():
            raise ValueError(f"{name}: audio file not found.") from None
        # M4A or WebM from a phone or browser, G.722 inside a WAV, an M4A named .mp3, ... or not audio at all.
        return read_with_ffmpeg(path, name, soundfile_error=str(err).replace(str(path), name), max_seconds=max_seconds)
    if max_seconds is not None and header.duration > max_seconds:
        raise too_long(name, max_seconds, header.duration)
    try:
        waveform, sampling_rate = _read_named(path, name)  # says why a file whose header soundfile reads does not decode
    except ValueError:
        present = decode_present(path)
        if present is None:
            raise
        samples, sampling_rate, declared = present
        return samples.mean(axis=1), sampling_rate, [cut_short_warning(name, declared, len(samples))]
    shortfall = wav_shortfall(path)  # soundfile decodes what is there without a word
    if not shortfall:
        return waveform, sampling_rate, []
    declared, present = shortfall
    return waveform, sampling_rate, [f"{name} is cut short: its header announces {declared:,} bytes of audio, the file "
                                     f"holds {present:,} ({present / declared:.0%}); only the part present is classified."]


def read_with_ffmpeg(path: Path, name: str, soundfile_error: str, max_seconds: float | None = None
                     ) -> tuple[np.ndarray, int, list[str]]:
    """Convert a file soundfile does not read to WAV with FFmpeg (``soundfile_error`` says why soundfile did not);
    returns and raises as `read_recording` does."""
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
        limit = [] if max_seconds is None else ["-t", str(max_seconds + 1)]
        command = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", *limit, "-c:a", "pcm_f32le",
                   str(wav)]
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
        waveform, sampling_rate = _read_named(wav, name)
    if max_seconds is not None and len(waveform) > max_seconds * sampling_rate:
        raise too_long(name, max_seconds)
    # With -v error, anything FFmpeg says on success is about damage it decoded past.
    damaged = f"{name} looks damaged: FFmpeg decoded it with errors ({reason}); only what decoded is classified."
    return waveform, sampling_rate, [damaged] if reason else []


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
