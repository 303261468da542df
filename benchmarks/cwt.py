"""Time the pooled CWT scalogram of a real 10 s, 8 kHz SPRSound recording: pywt.cwt (conv and fft, then
the same frame pooling) vs ours (RespSTFFeatureExtractor, truncation=False) on CPU at batch 1 and 32,
and on a GPU when one is present. Same wavelet (cmor1.5-1.0) and scales for all.

    python benchmarks/cwt.py [--n_scales 128] [--threads 2]

Prints milliseconds per recording, recordings per second and the speed-up over pywt conv (the issue's
target: >= 20x on CPU; >= 2,000 recordings/s on one H100). pywt is single-threaded, so ours uses one
torch thread too unless ``--threads`` says otherwise. Where pywt is not installed (a bare GPU image),
its rows are skipped and speed-ups are over ours on CPU at batch 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from respstf.feature_extraction import RespSTFFeatureExtractor

REPO_ROOT = Path(__file__).resolve().parents[1]
SPRSOUND = Path(os.environ.get("RESPSTF_DATA_DIR", REPO_ROOT.parent / "shared" / "data")) / "sprsound"
SECONDS, RATE = 10, 8000


def real_recordings(count: int) -> list[np.ndarray]:
    """The first 10 s of the first ``count`` SPRSound recordings that are at least 10 s long."""
    clips = []
    for path in sorted((SPRSOUND / "train_wav").iterdir()):
        info = soundfile.info(path)
        if info.samplerate == RATE and info.frames >= SECONDS * RATE:
            clips.append(soundfile.read(path, frames=SECONDS * RATE, dtype="float32")[0])
            if len(clips) == count:
                return clips
    raise SystemExit(f"found only {len(clips)} recordings of >= {SECONDS} s at {RATE} Hz in {SPRSOUND}")


def median_seconds(run, repeats: int, sync=lambda: None, warm_up: bool = True) -> float:
    if warm_up:  # FFT plans, band tables, CUDA kernels
        run()
        sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_scales", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for ours")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (median)")
    args = parser.parse_args()
    if not (SPRSOUND / "train_wav").is_dir():
        raise SystemExit(f"SPRSound not found at {SPRSOUND}; set RESPSTF_DATA_DIR to the shared data folder.")
    torch.set_num_threads(args.threads)

    clips = real_recordings(32)
    extractor = RespSTFFeatureExtractor(n_scales=args.n_scales)
    scales = extractor.wavelet_center_frequency * RATE / extractor.frequencies
    wavelet = f"cmor{extractor.wavelet_bandwidth}-{extractor.wavelet_center_frequency}"
    hop = extractor.hop_length

    try:
        import pywt
    except ImportError:
        pywt = None

    def pywt_scalogram(method: str) -> np.ndarray:
        coefficients, _ = pywt.cwt(clips[0].astype(np.float64), scales, wavelet, method=method)
        return np.abs(coefficients).reshape(len(scales), -1, hop).mean(-1)

    def ours(batch: int):
        return extractor(clips[:batch], sampling_rate=RATE, truncation=False, return_tensors="pt")

    print(
        f"pooled CWT scalogram of a real {SECONDS} s recording at {RATE} Hz: {args.n_scales} scales "
        f"{extractor.fmin:g}-{extractor.fmax:g} Hz, {wavelet}, hop {hop} -> {SECONDS * RATE // hop} frames; "
        f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}"
    )
    rows = [] if pywt is None else [
        ("pywt.cwt conv", 1, median_seconds(lambda: pywt_scalogram("conv"), args.repeats, warm_up=False)),
        ("pywt.cwt fft", 1, median_seconds(lambda: pywt_scalogram("fft"), args.repeats, warm_up=False)),
    ]
    rows += [
        ("ours CPU, batch 1", 1, median_seconds(lambda: ours(1), 3 * args.repeats)),
        # same segment length as batch 1, whose run warmed the FFT plans and band tables
        ("ours CPU, batch 32", 32, median_seconds(lambda: ours(32), args.repeats, warm_up=False)),
    ]
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for batch in (32, 256):
            gpu_clips = [clips[i % len(clips)] for i in range(batch)]
            run = lambda: extractor(gpu_clips, sampling_rate=RATE, truncation=False, return_tensors="pt", device="cuda")
            rows.append((f"ours GPU ({name}), batch {batch}", batch, median_seconds(run, 5, torch.cuda.synchronize)))
    else:
        print("(no CUDA device: GPU rows skipped)")

    reference = rows[0][2]
    if pywt is None:
        print("(pywt not installed: its rows skipped; speed-ups are over ours CPU, batch 1)")
    print(f"{'':38s} {'ms/recording':>13s} {'recordings/s':>13s} {'vs ' + rows[0][0].split(',')[0]:>13s}")
    for label, batch, seconds in rows:
        per_recording = seconds / batch
        print(f"{label:38s} {per_recording * 1e3:13.1f} {1 / per_recording:13.1f} {reference / per_recording:12.1f}x")


if __name__ == "__main__":
    main()
