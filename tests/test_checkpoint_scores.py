"""Every bundled checkpoint, classifying again the split its ``results.json`` records, gives the recorded Score.

Through the library's own scoring path (`respstf.training.score_checkpoint`; no ``train.py``, nothing under
``benchmarks/``): the task's rows of the shared SPRSound release, scalograms by `respstf.training.featurize` (the
checkpoint's extractor, ``truncation=True``), the model in eval mode and `respstf.training.make_compute_metrics` (the
official metric). Weights that no longer match their recorded results (a checkpoint retrained or overwritten without
its results, a loader or extractor change that moves the inputs the weights were trained on) fail here.
"""

from __future__ import annotations

import json

import pytest

from conftest import CHECKPOINTS
from respstf import training
from respstf.hub_dataset import TASKS, task_labels

SPLIT = "inter_test"  # the split every bundled results.json records


@pytest.fixture(scope="module")
def scalogram_cache() -> dict:
    """Scalograms by (level, extractor settings): Tasks 1-1 and 1-2 (2-1 and 2-2) score the same rows."""
    return {}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_bundled_checkpoint_reproduces_its_recorded_score(task, sprsound_root, scalogram_cache):
    folder = CHECKPOINTS / f"sprsound-task{task}"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder} not present")
    recorded = json.loads((folder / "results.json").read_text())
    expected = recorded["results"][SPLIT]
    assert recorded["task"] == task and recorded["labels"] == task_labels(task)
    result, logits, labels = training.score_checkpoint(folder, sprsound_root, task, SPLIT, scalogram_cache)
    assert result["rows"] == expected["rows"] == len(logits) == len(labels)
    for name in ("score", "se", "sp", "as", "hs"):
        assert result[name] == pytest.approx(expected[name], abs=1e-9), name
    assert result["confusion_matrix"] == expected["confusion_matrix"]
