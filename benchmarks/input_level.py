"""How much the bundled record models' answers depend on the input level (gain).

    python benchmarks/input_level.py [--model checkpoints/sprsound-task22 ...] [--recordings 30] [--gains 10 0.3 0.1 0.03]

Takes every 12th recording of the 2022 inter-patient test split (the first ``--recordings`` of them), classifies
it as recorded and scaled by each gain, and prints, per model and gain, how many top classes changed and the
median / largest change of any class probability. The scalogram is standardised per recording, which removes a
gain, except in bins near the extractor's absolute ``log_floor``: quiet input changes the features most.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset import read_audio
from respstf.modeling import RespSTFForAudioClassification

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("RESPSTF_DATA_DIR", ROOT.parent / "shared" / "data"))


def probabilities(model, extractor, waveforms: list[np.ndarray], batch: int = 10) -> np.ndarray:
    """``(len(waveforms), num_labels)`` class probabilities of 8 kHz waveforms."""
    out = []
    with torch.no_grad():
        for first in range(0, len(waveforms), batch):
            features = extractor(waveforms[first : first + batch], sampling_rate=extractor.sampling_rate, return_tensors="pt")
            out.append(model(**features).logits.softmax(-1).numpy())
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=[str(ROOT / "checkpoints" / f"sprsound-task{t}") for t in (21, 22)])
    parser.add_argument("--recordings", type=int, default=30)
    parser.add_argument("--gains", nargs="+", type=float, default=[10.0, 0.3, 0.1, 0.03])
    args = parser.parse_args(argv)
    files = sorted((DATA_DIR / "sprsound" / "test_wav").glob("*.flac"))[::12][: args.recordings]
    if not files:
        raise SystemExit(f"no recordings under {DATA_DIR / 'sprsound' / 'test_wav'} (set RESPSTF_DATA_DIR)")
    waveforms = [read_audio(path)[0] for path in files]
    low, high = np.percentile([np.sqrt(np.mean(w ** 2)) for w in waveforms], [5, 95])
    print(f"{len(files)} inter_test recordings (every 12th); RMS {low:.4f}-{high:.4f} of full scale (5-95 %)\n")
    print("| model | gain | top class changed | median / largest probability change |")
    print("|---|---|---|---|")
    for folder in args.model:
        model = RespSTFForAudioClassification.from_pretrained(folder).eval()
        extractor = RespSTFFeatureExtractor.from_pretrained(folder)
        as_recorded = probabilities(model, extractor, waveforms)
        for gain in args.gains:
            scaled = probabilities(model, extractor, [w * gain for w in waveforms])
            change = np.abs(scaled - as_recorded).max(axis=1)
            flips = int((scaled.argmax(1) != as_recorded.argmax(1)).sum())
            print(f"| {Path(folder).name} | {gain:g} | {flips} / {len(files)} | {np.median(change):.3f} / {change.max():.3f} |")


if __name__ == "__main__":
    main()
