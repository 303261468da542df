"""Every bundled checkpoint, classifying again the split its ``results.json`` records, gives the recorded Score.

Through the library's own scoring path (no ``train.py``, nothing under ``benchmarks/``): the task's rows of the shared
SPRSound release, scalograms by `respstf.training.featurize` (the checkpoint's extractor, ``truncation=True``), the
model in eval mode and `respstf.training.make_compute_metrics` (the official metric). Weights that no longer match
their recorded results (a checkpoint retrained or overwritten without its results, a loader or extractor change that
moves the inputs the weights were trained on) fail here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from conftest import CHECKPOINTS
from respstf import training
from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset import TASKS, load_sprsound, task_labels
from respstf.modeling import RespSTFForAudioClassification

SPLIT = "inter_test"  # the split every bundled results.json records
EVAL_BATCH = 64  # train.py's per_device_eval_batch_size


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
    model = RespSTFForAudioClassification.from_pretrained(folder).eval()
    extractor = RespSTFFeatureExtractor.from_pretrained(folder)
    label_names = training.class_names(model.config)
    assert recorded["task"] == task and label_names == recorded["labels"] == task_labels(task)

    split = load_sprsound(sprsound_root, task=task, splits=[SPLIT], decode=False, progress=False)[SPLIT]
    column = TASKS[task]["column"]
    assert split.features[column].names == label_names and len(split) == expected["rows"]
    key = (TASKS[task]["level"], extractor.to_json_string())
    if key not in scalogram_cache:  # the same rows for both tasks of a level: their labels differ, not their audio
        features = training.featurize(split, extractor, column, with_frames=False).with_format("torch")
        scalogram_cache[key] = split["recording_id"], features["input_features"], features["attention_mask"]
    rows, inputs, masks = scalogram_cache[key]
    assert rows == split["recording_id"]

    with torch.no_grad():
        logits = torch.cat([model(input_features=inputs[start:start + EVAL_BATCH],
                                  attention_mask=masks[start:start + EVAL_BATCH]).logits
                            for start in range(0, len(inputs), EVAL_BATCH)])
    compute_metrics = training.make_compute_metrics(label_names, "Normal")
    result = compute_metrics(EvalPrediction(predictions=logits.numpy(), label_ids=np.asarray(split[column])))
    for name in ("score", "se", "sp", "as", "hs"):
        assert result[name] == pytest.approx(expected[name], abs=1e-9), name
    assert result["confusion_matrix"] == expected["confusion_matrix"]
