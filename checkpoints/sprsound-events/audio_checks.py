"""Checks of a waveform before a model reads it: one place for the feature extractor (and so ``pipeline``), the
dataset loaders and the demo, so that every way in refuses and warns alike.

Numpy only: it ships with the checkpoints' code, which Hub users load without this package.
"""

from __future__ import annotations

import numpy as np

# Below this a recording holds nothing above 1 kHz: most of the band the models read is gone.
MIN_SAMPLING_RATE = 2000
# Peak amplitude around the mean below -80 dBFS: nothing was recorded (around the mean: a DC offset holds no sound).
SILENCE_PEAK = 1e-4
# SPRSound's shortest annotated event is 0.126 s: an input shorter than this is mostly repeats of itself or padding.
SHORTEST_SOUND_SECONDS = 0.1
# Shorter than a crackle's context; the release's shortest recording is 0.3 s. A zero-padded (record-level) input
# is read only over its own frames, so one this short gives the model too little to judge a recording by.
SHORTEST_RECORDING_SECONDS = 0.25
FULL_SCALE = 0.999  # |sample| at or above this is at the top of its format's range (16-bit PCM tops out at 0.99997)
MIN_CLIPPED_RUN = 3  # samples in a row at full scale: a clipped peak, not a sample that happens to touch it
# A knock on the stethoscope clips a few peaks (4 in 20 s, 0.15 % of the samples, in one ICBHI recording); a
# recording played too loud clips peak after peak (a real SPRSound one at 20x: 9 in 15.4 s, at 50x: 23), or
# clips a long stretch (over 0.5 % of the samples).
MAX_CLIPPED_RUNS_PER_SECOND = 0.5
MAX_CLIPPED_FRACTION = 0.005


def check_samples(samples: np.ndarray, name: str, min_samples: int = 1) -> None:
    """Refuse an input with no samples or with NaN/Inf samples (any shape, any numeric dtype)."""
    if samples.size == 0:
        raise ValueError(f"{name} is empty: expected at least {min_samples} samples.")
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise ValueError(f"{name} has {bad} NaN/Inf samples: expected finite audio.")


def silence_peak(waveform: np.ndarray) -> float:
    """Peak amplitude around the mean: below `SILENCE_PEAK` the input is silent (or only a DC offset)."""
    return float(np.abs(waveform - waveform.mean()).max())


def band_warnings(sampling_rate: int, name: str, band: tuple[float, float],
                  trained_sampling_rate: int | None = None) -> list[str]:
    """A warning when ``sampling_rate`` leaves out the top of the ``(fmin, fmax)`` band the model reads."""
    if sampling_rate / 2 >= band[1]:
        return []
    trained = f" (it was trained on {trained_sampling_rate} Hz recordings)" if trained_sampling_rate else ""
    return [f"{name} is sampled at {sampling_rate} Hz, so sounds above {sampling_rate / 2:.0f} Hz are missing: the "
            f"model reads {band[0]:.0f}–{band[1]:.0f} Hz{trained} and may miss high-pitched sounds."]


def check_audio(
    waveform: np.ndarray,
    sampling_rate: int,
    name: str,
    *,
    band: tuple[float, float] | None = None,
    trained_sampling_rate: int | None = None,
    refuse_silence: bool = True,
    shortest_seconds: float | None = None,
    padding: str = "padding",
    clipping: bool = True,
) -> list[str]:
    """Refuse a mono float waveform in [-1, 1] that holds nothing to classify or learn from; return warnings about
    one a model judges with less to go on.

    Args:
        name: how errors and warnings name the input (a file name, ``"audio input 0"``).
        band: ``(fmin, fmax)`` in Hz that the model reads; with ``trained_sampling_rate`` (its training rate) the
            errors say what is missing, and a rate whose Nyquist frequency is below ``fmax`` is warned about
            (`band_warnings`).
        refuse_silence: refuse a silent input (peak amplitude around its mean below `SILENCE_PEAK`); otherwise only
            an exactly constant one is warned about (a model still answers: per-recording normalisation brings a
            quiet input up).
        shortest_seconds: warn about an input shorter than this, which is mostly ``padding`` (what fills the clip).
        clipping: warn about an input clipped peak after peak.

    Raises:
        ValueError: one line naming the input: empty, NaN/Inf, sampled below `MIN_SAMPLING_RATE`, or silent.
    """
    check_samples(waveform, name)
    band_text = f"{band[0]:.0f}–{band[1]:.0f} Hz" if band else "band"
    if sampling_rate < MIN_SAMPLING_RATE:
        full_band = f" ({trained_sampling_rate} Hz or more for the full band)" if trained_sampling_rate else ""
        raise ValueError(f"{name} is sampled at {sampling_rate} Hz, so it holds nothing above "
                         f"{sampling_rate / 2:.0f} Hz: too little of the {band_text} the model reads. Expected a "
                         f"recording sampled at {MIN_SAMPLING_RATE} Hz or more{full_band}.")
    peak = silence_peak(waveform)
    warnings = []
    if refuse_silence and peak < SILENCE_PEAK:
        raise ValueError(f"{name} is silent (peak amplitude {peak:.1e} around its mean, below {SILENCE_PEAK:.0e}): "
                         "nothing to classify; record again with the stethoscope on the chest.")
    seconds = len(waveform) / sampling_rate
    if shortest_seconds is not None and seconds < shortest_seconds:
        if shortest_seconds == SHORTEST_SOUND_SECONDS:
            why = f"shorter than any sound the models learned from ({SHORTEST_SOUND_SECONDS} s or more)"
        else:
            why = f"shorter than the {shortest_seconds} s a recording needs to be judged (a crackle's context)"
        warnings.append(f"{name} is {seconds * 1000:.0f} ms long, {why}: its clip is mostly {padding}, so a prediction "
                        "for it means little.")
    if not refuse_silence and np.ptp(waveform) == 0:
        warnings.append(f"{name} is constant (silence or a DC offset): its scalogram holds no sound, so a prediction "
                        "for it means nothing.")
    if band:
        warnings += band_warnings(sampling_rate, name, band, trained_sampling_rate)
    # Only on the [-1, 1] scale: a float waveform at another scale (e.g. int16's, which per-recording normalisation
    # handles) has no full scale to be clipped at.
    if clipping and np.abs(waveform).max() <= 1.0:
        at_full_scale = np.abs(waveform) >= FULL_SCALE
        edges = np.diff(at_full_scale.astype(np.int8), prepend=0, append=0)
        runs = int(np.sum(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1) >= MIN_CLIPPED_RUN))
        share = float(at_full_scale.mean())
        if share > MAX_CLIPPED_FRACTION or runs >= max(3, MAX_CLIPPED_RUNS_PER_SECOND * seconds):
            warnings.append(f"{name} is clipped: {runs} peaks ({share:.1%} of its samples) are cut off at full scale. "
                            "Clipping adds sounds the chest did not make, so this result is unreliable; record again "
                            "with less gain or a lighter touch.")
    return warnings
