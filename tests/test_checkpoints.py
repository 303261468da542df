"""The bundled checkpoints: complete, named with the official classes, and their code files are the package's own."""

from __future__ import annotations

import json

import pytest

from conftest import CHECKPOINTS, REPO_ROOT
from respstf.hub_dataset import TASKS, task_labels

CODE_FILES = {
    "configuration_respstf.py": REPO_ROOT / "modeling",
    "modeling_respstf.py": REPO_ROOT / "modeling",
    "feature_extraction_respstf.py": REPO_ROOT / "feature_extraction",
    "cwt.py": REPO_ROOT / "feature_extraction",
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_bundled_checkpoint(task):
    folder = CHECKPOINTS / f"sprsound-task{task}"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder} not present")
    config = json.loads((folder / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(len(config["id2label"]))] == task_labels(task)
    for name, source in CODE_FILES.items():
        assert (folder / name).read_text() == (source / name).read_text(), f"{folder / name} differs from {source / name}"
    results = json.loads((folder / "results.json").read_text())
    assert results["task"] == task and "inter_test" in results["results"]
    assert f"{results['results']['inter_test']['score']:.3f}" in (folder / "README.md").read_text()
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt")), "safetensors only"
    assert sum(path.stat().st_size for path in folder.iterdir()) < 3_000_000
