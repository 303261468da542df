"""Memory and time of the feature extractor on long inputs (``truncation=False``): the chunked CWT's bound.

    python benchmarks/long_input.py                 # 10 s, 10 min and 1 hour of a real recording, tiled
    python benchmarks/long_input.py --minutes 60

Each length runs in a fresh process (peak RSS is per process), at 8 kHz on one thread. Prints the peak RSS growth
beside the size of the scalogram it returns and beside what one unchunked complex CWT of the input would hold
(``n_scales × samples × 8`` bytes), so the ratios say how well chunking bounds memory; and seconds per minute of
audio. The goal (the tests only guard against a blow-up): growth under 1 GiB for an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDING = Path(os.environ.get("RESPSTF_DATA_DIR", ROOT.parent / "shared" / "data")) / "sprsound" / "train_wav" / "40638274_9.7_1_p1_1789.flac"

MEASURE = """
import json, resource, sys, time
import numpy as np, soundfile
from respstf.feature_extraction import RespSTFFeatureExtractor

recording, rate = soundfile.read(sys.argv[1], dtype="float32")
waveform = np.resize(recording, int(float(sys.argv[2]) * rate))
extractor = RespSTFFeatureExtractor(normalization="none")
extractor(recording[:8000], sampling_rate=rate)  # warm up: imports and FFT plans
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
out = extractor(waveform, sampling_rate=rate, truncation=False)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
                  "output_mb": out["input_features"].nbytes / 2**20,
                  "unchunked_mb": extractor.n_scales * len(waveform) * 8 / 2**20}))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", nargs="+", type=float, default=[10 / 60, 10, 60])
    args = parser.parse_args(argv)
    if not RECORDING.is_file():
        raise SystemExit(f"{RECORDING} not found; set RESPSTF_DATA_DIR to the shared data folder.")
    print("| audio | growth of peak RSS | scalogram returned | unchunked CWT | growth / unchunked | s per audio minute |")
    print("|---|---|---|---|---|---|")
    for minutes in args.minutes:
        completed = subprocess.run([sys.executable, "-c", MEASURE, str(RECORDING), str(minutes * 60)], capture_output=True,
                                   text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        r = json.loads(completed.stdout.strip().splitlines()[-1])
        print(f"| {minutes:g} min | {r['growth_mb']:.0f} MB | {r['output_mb']:.0f} MB | {r['unchunked_mb']:.0f} MB | "
              f"{r['growth_mb'] / r['unchunked_mb']:.3f} | {r['seconds'] / minutes:.2f} |", flush=True)


if __name__ == "__main__":
    main()
