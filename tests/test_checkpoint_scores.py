"""Every bundled checkpoint gives the Score its ``results.json`` records, from the answers it ships
(``predictions_<split>.npz``), and gives those answers again on a sample of the split's rows.

Through the library's own scoring path (`respstf.training.score_checkpoint`; no ``train.py``, nothing under
``benchmarks/``): the task's rows of the shared SPRSound release, scalograms by `respstf.training.featurize` (the
checkpoint's extractor, ``truncation=True``), the model in eval mode and `respstf.training.make_compute_metrics` (the
official metric). Weights that no longer match their recorded results (a checkpoint retrained or overwritten without
its results, a loader or extractor change that moves the inputs the weights were trained on) fail here. A sample, not
every row: the record tasks' five-model ensembles take minutes over the whole split on 2 cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import EvalPrediction

from conftest import CHECKPOINTS
from respstf import training
from respstf.hub_dataset import TASKS, task_labels

SPLIT = "inter_test"  # the split every bundled results.json records
SAMPLE_EVERY = 8  # rows 0, 8, 16, …: 45 of the 355 recordings, 179 of the 1,429 events


@pytest.fixture(scope="module")
def scalogram_cache() -> dict:
    """Scalograms by (level, rows, extractor settings): Tasks 1-1 and 1-2 (2-1 and 2-2) score the same rows."""
    return {}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_bundled_checkpoint_reproduces_its_recorded_score(task, sprsound_root, scalogram_cache):
    folder = CHECKPOINTS / f"sprsound-task{task}"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder} not present")
    recorded = json.loads((folder / "results.json").read_text())
    expected = recorded["results"][SPLIT]
    assert recorded["task"] == task and recorded["labels"] == task_labels(task)
    logits, labels = training.read_predictions(folder, SPLIT)
    result = training.make_compute_metrics(task_labels(task), "Normal")(EvalPrediction(predictions=logits, label_ids=labels))
    assert expected["rows"] == len(logits) == len(labels)
    for name in ("score", "se", "sp", "as", "hs"):
        assert result[name] == pytest.approx(expected[name], abs=1e-9), name
    assert result["confusion_matrix"] == expected["confusion_matrix"]

    sample = list(range(0, len(labels), SAMPLE_EVERY))
    _, sample_logits, sample_labels = training.score_checkpoint(folder, sprsound_root, task, SPLIT, scalogram_cache, rows=sample)
    assert sample_labels.tolist() == labels[sample].tolist()
    np.testing.assert_allclose(sample_logits, logits[sample], atol=1e-4)
