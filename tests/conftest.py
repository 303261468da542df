"""Shared test set-up: offline Hub/datasets/evaluate, and where the real data lives."""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

# Without these every Hub lookup waits ~23 s to fail on a machine with no network.
for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(variable, "1")

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RESPSTF_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
SPRSOUND = DATA_DIR / "sprsound"
ICBHI = DATA_DIR / "icbhi"
CHECKPOINTS = REPO_ROOT / "checkpoints"


@functools.cache
def single_model(task: str) -> Path:
    """One trained model of the bundled Task ``task`` checkpoint, for tests that train from, change or take apart a
    single model: the folder itself when it holds one, else its fold ensemble's member 0 (the first fold's model),
    unpacked once per session. Skips when the checkpoint is absent."""
    folder = CHECKPOINTS / f"sprsound-task{task}"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder} not present")
    if json.loads((folder / "config.json").read_text()).get("ensemble_size", 1) == 1:
        return folder
    import respstf.feature_extraction  # noqa: F401  (registers the extractor the checkpoint loader needs)
    from respstf.modeling import unpack_member

    unpacked = Path(tempfile.mkdtemp(prefix="respstf-member-"))
    atexit.register(shutil.rmtree, unpacked, ignore_errors=True)
    return unpack_member(folder, 0, unpacked / f"sprsound-task{task}-member0")


# .ci/test.sh sets RESPSTF_REQUIRE_DATA=1: there a test that needs the shared data fails when the data is absent,
# where a developer's own run skips it. Every such skip, in any test file, gives a reason matching this.
REQUIRE_DATA = os.environ.get("RESPSTF_REQUIRE_DATA", "0") not in ("", "0")
MISSING_DATA_REASON = re.compile(r"RESPSTF_DATA_DIR|\bshared (data|SPRSound|ICBHI)\b|" + re.escape(str(DATA_DIR)), re.IGNORECASE)

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


# -- RESPSTF_REQUIRE_DATA: a skip for missing shared data becomes a failure ---------------------------------


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _require_data(report) -> None:
    """Turn ``report`` (a test's or a module's) into a failure when it skipped for lack of the shared data and
    RESPSTF_REQUIRE_DATA is set; an xfail, or a skip for anything else (no ffmpeg, no GPU), stays as it is."""
    if not REQUIRE_DATA or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if MISSING_DATA_REASON.search(reason):
        report.outcome = "failed"
        report.longrepr = (
            f"{reason.removeprefix('Skipped: ')}\nRESPSTF_REQUIRE_DATA={os.environ['RESPSTF_REQUIRE_DATA']} (as .ci/test.sh "
            f"sets it): the shared data must be present. Put it at {DATA_DIR} (sprsound/ and icbhi/) or set "
            "RESPSTF_DATA_DIR to the folder that holds them; RESPSTF_REQUIRE_DATA=0 skips these tests instead."
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _require_data(report)  # skips in a fixture, in the test, or from a skipif marker on the data's presence
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _require_data(report)  # pytest.skip(..., allow_module_level=True) at import
    return report


def stretch_at_start(source: dict, features) -> int:
    """How many leading frames of ``features`` ``(1, F, T)`` continue one stretch of ``source``'s real frames (0: none)."""
    return longest_stretch(source, features)[1]


def longest_stretch(source: dict, features) -> tuple[int, int]:
    """``(start, frames)``: the longest run of leading frames of ``features`` ``(1, F, T)`` that is a stretch of
    ``source``'s real frames, and where in ``source`` it starts (``(0, 0)``: none)."""
    length, best = int(source["attention_mask"].sum()), (0, 0)
    for start in range(length):
        matched = 0
        while start + matched < length and matched < features.shape[-1] and torch.equal(
            source["input_features"][..., start + matched], features[..., matched]
        ):
            matched += 1
        best = max(best, (start, matched), key=lambda found: found[1])
    return best

