"""Shared test set-up: offline Hub/datasets/evaluate, and where the real data lives."""

from __future__ import annotations

import os
from pathlib import Path

# Without these every Hub lookup waits ~23 s to fail on a machine with no network.
for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(variable, "1")

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RESPSTF_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
SPRSOUND = DATA_DIR / "sprsound"
ICBHI = DATA_DIR / "icbhi"
CHECKPOINTS = REPO_ROOT / "checkpoints"

# A real DAS train recording: one Fine Crackle event at 5.813-6.984 s (9.2 s, 8 kHz, 16-bit FLAC).
CRACKLE_RECORDING = SPRSOUND / "train_wav" / "40638274_9.7_1_p1_1789.flac"
# A real WAV exactly as in the release (example folder).
EXAMPLE_WAV = SPRSOUND / "example_original_wav" / "65097128_5.6_1_p1_2242.wav"
# The release's one very short recording (0.3 s).
SHORT_RECORDING = SPRSOUND / "train_wav" / "65039232_6.4_1_p1_373.flac"
# A real 44.1 kHz ICBHI recording (Meditron, 16-bit, 20 s).
ICBHI_44K_RECORDING = ICBHI / "audio_and_txt_files" / "102_1b1_Ar_sc_Meditron.wav"


@pytest.fixture(scope="session")
def sprsound_root() -> Path:
    if not (SPRSOUND / "train_json").is_dir():
        pytest.skip(f"the shared SPRSound copy is not at {SPRSOUND} (set RESPSTF_DATA_DIR)")
    return SPRSOUND


def read_recording(path: Path, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """A real recording as ``(waveform, sampling_rate)``; skips the test when the shared data is absent."""
    if not path.is_file():
        pytest.skip(f"the real recording {path} is not there (set RESPSTF_DATA_DIR to the shared data folder)")
    import soundfile

    return soundfile.read(path, dtype=dtype)
