"""Reading one audio file a user gives: soundfile at the file's own rate where it reads the file, FFmpeg for other
formats, and a warning when the file holds less audio than its header announces (a copy or recording cut short).

Hub custom code, shipped with every checkpoint (the pipelines read files with it), so it imports only numpy and, where
installed, soundfile; the demo and the dataset loaders read files through it as well.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

try:  # optional for a checkpoint's user: without it the pipelines decode files with transformers' FFmpeg reader
    import soundfile
except ImportError:
    soundfile = None
# What soundfile raises for a file it cannot decode (LibsndfileError, a RuntimeError, since soundfile 0.11).
_DECODE_ERRORS = (getattr(soundfile, "LibsndfileError", RuntimeError), RuntimeError)

READABLE_FORMATS = "WAV, FLAC, OGG or MP3"  # what soundfile decodes; FFmpeg, where installed, converts other formats
FFMPEG_TIMEOUT_S = 60
FFMPEG_MESSAGES = 3  # of FFmpeg's error lines shown: a broken MP3 can give dozens

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


def wav_shortfall(path: str | os.PathLike) -> tuple[int, int] | None:
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


def decode_present(path: str | os.PathLike, dtype: str = "float32") -> tuple[np.ndarray, int, int] | None:
    """``(samples, sampling_rate, declared frames)`` of a file soundfile stops decoding partway, as a FLAC cut short
    does ("flac decoder lost sync"): the samples ``(frames, channels)`` that decode before the damage, in blocks
    of 1,024 frames (at most one block short). None when the header does not open or nothing decodes."""
    blocks = []
    try:
        with soundfile.SoundFile(path) as handle:
            declared = handle.frames
            try:
                for block in handle.blocks(blocksize=1024, dtype=dtype, always_2d=True):
                    blocks.append(block.copy())
            except _DECODE_ERRORS:
                pass  # the damage: what decoded before it is kept
    except (*_DECODE_ERRORS, TypeError):
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


def decode_file(source, name: str) -> tuple[np.ndarray, int]:
    """A whole file (a path or a binary file object) decoded by soundfile: float32 ``(frames, channels)`` in [-1, 1]
    and the rate.

    Raises:
        ValueError: naming the file when it is empty, corrupt or not audio soundfile reads.
    """
    try:
        waveform, sampling_rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (*_DECODE_ERRORS, TypeError) as err:
        reason = str(err).replace(str(source), name) if isinstance(source, (str, os.PathLike)) else str(err)
        raise ValueError(f"{name}: not a readable audio file (corrupt, truncated or not audio): {reason}") from err
    if waveform.shape[0] == 0:
        raise ValueError(f"{name}: the audio file holds no samples.")
    return waveform, int(sampling_rate)


def read_audio_file(path: str | os.PathLike, name: str | None = None, max_seconds: float | None = None
                    ) -> tuple[np.ndarray, int, list[str]]:
    """Decode one recording with soundfile where it reads the file (one longer than ``max_seconds`` is refused from
    its header, before it is decoded), else with FFmpeg (`read_with_ffmpeg`), whatever the file's extension.

    Args:
        name: how errors and warnings name the file (default: its path), e.g. an upload's name as the user knows it.
        max_seconds: the longest recording accepted (a demo's limit).

    Returns:
        The mono float32 waveform, its sampling rate and warnings about what was read: a file cut short (a WAV
        whose header announces more audio than it holds, a FLAC that stops decoding partway) or one FFmpeg
        found damaged; only the part that decodes is returned.

    Raises:
        ValueError: naming the file: missing, not audio, no audio track or longer than ``max_seconds``.
        ImportError: soundfile is not installed.
    """
    if soundfile is None:
        raise ImportError("reading audio files needs soundfile: pip install soundfile.")
    path = Path(path)
    name = str(path) if name is None else name
    try:
        header = soundfile.info(str(path))
    except (RuntimeError, TypeError) as err:
        if not path.is_file():
            raise ValueError(f"{name}: audio file not found.") from None
        # M4A or WebM from a phone or browser, G.722 inside a WAV, an M4A named .mp3, ... or not audio at all.
        return read_with_ffmpeg(path, name, soundfile_error=str(err).replace(str(path), name), max_seconds=max_seconds)
    if max_seconds is not None and header.duration > max_seconds:
        raise too_long(name, max_seconds, header.duration)
    try:
        waveform, sampling_rate = decode_file(str(path), name)  # says why a file whose header soundfile reads does not decode
    except ValueError:
        present = decode_present(path)
        if present is None:
            raise
        samples, sampling_rate, declared = present
        return samples.mean(axis=1), sampling_rate, [cut_short_warning(name, declared, len(samples))]
    waveform = waveform.mean(axis=1)
    shortfall = wav_shortfall(path)  # soundfile decodes what is there without a word
    if not shortfall:
        return waveform, sampling_rate, []
    declared, present = shortfall
    return waveform, sampling_rate, [f"{name} is cut short: its header announces {declared:,} bytes of audio, the file "
                                     f"holds {present:,} ({present / declared:.0%}); only the part present is classified."]


def read_with_ffmpeg(path: Path, name: str, soundfile_error: str, max_seconds: float | None = None
                     ) -> tuple[np.ndarray, int, list[str]]:
    """Convert a file soundfile does not read to WAV with FFmpeg (``soundfile_error`` says why soundfile did not);
    returns and raises as `read_audio_file` does."""
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
        waveform, sampling_rate = decode_file(str(wav), name)
    waveform = waveform.mean(axis=1)
    if max_seconds is not None and len(waveform) > max_seconds * sampling_rate:
        raise too_long(name, max_seconds)
    # With -v error, anything FFmpeg says on success is about damage it decoded past.
    damaged = f"{name} looks damaged: FFmpeg decoded it with errors ({reason}); only what decoded is classified."
    return waveform, sampling_rate, [damaged] if reason else []
