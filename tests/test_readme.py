"""The README's commands and Python snippets are the ones that work."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

from conftest import CHECKPOINTS, REPO_ROOT, SPRSOUND
from respstf.hub_dataset import task_labels

README = (REPO_ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_quick_start_commands():
    quick_start = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in quick_start.strip().splitlines()]
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    ci_commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci_commands == commands


def test_python_snippets_run():
    """Every ```python block, in order, in one fresh interpreter from the repository root (```py blocks need a
    network), prints what the README says it shows: the bundled checkpoints' top classes, the release's row counts
    and the official Score of the hand-checkable example."""
    if not SPRSOUND.is_dir() or not (CHECKPOINTS / "sprsound-task12" / "model.safetensors").is_file():
        pytest.skip("needs the shared SPRSound data and the bundled checkpoints")
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) == 5, "a new snippet: add the check of what it prints below"
    # A marker line before each block, to tell their outputs apart.
    script = "\n".join(f"print('<<snippet {i}>>', flush=True)\n{block}" for i, block in enumerate(blocks))
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    printed = re.split(r"^<<snippet \d+>>\n", completed.stdout, flags=re.M)[1:]
    assert len(printed) == 5, completed.stdout[-3000:]

    # 0: the Task 2-2 pipeline on the release's example recording: all 5 classes, best first; the checkpoint hears Normal.
    scores = ast.literal_eval(printed[0].strip())
    assert sorted(s["label"] for s in scores) == sorted(task_labels("22"))
    assert [s["score"] for s in scores] == sorted((s["score"] for s in scores), reverse=True)
    assert sum(s["score"] for s in scores) == pytest.approx(1, abs=1e-4)
    assert scores[0]["label"] == "Normal" and scores[0]["score"] > 0.5

    # 1: the Task 1-2 checkpoint on the annotated fine crackle event: Fine Crackle first, then Normal.
    probabilities = ast.literal_eval(printed[1].strip())
    assert list(probabilities) == task_labels("12") and sum(probabilities.values()) == pytest.approx(1, abs=0.01)
    ranked = sorted(probabilities, key=probabilities.get, reverse=True)
    assert ranked[:2] == ["Fine Crackle", "Normal"] and probabilities["Fine Crackle"] > 0.5

    # 2: the event detector on the release's CAS example: a record class and the first events, each inside the
    # 15.4 s recording, in order, with a score; its class holds CAS (three wheezes are annotated).
    record_label, events = re.match(r"(.+?) (\[.*\])$", printed[2].strip()).groups()
    events = ast.literal_eval(events)
    assert record_label in task_labels("22") and 1 <= len(events) <= 3
    assert all(set(e) == {"label", "start", "end", "score"} and 0 <= e["start"] < e["end"] <= 15.4 for e in events)
    assert [e["start"] for e in events] == sorted(e["start"] for e in events)
    assert "CAS" in record_label

    # 3: the event rows of the release (train + inter_test) and the carved validation split.
    assert re.findall(r"(\w+): Dataset\(.*?num_rows: (\d+)", printed[3], flags=re.S) == [("train", "6656"), ("inter_test", "1429")]
    assert printed[3].split()[-1] == "1058"

    # 4: predictions [0, 2, 1, 0] for references [0, 2, 2, 1], Normal = 0: SP = 1/1, SE = 1/3 (of the abnormal
    # rows 2, 2, 1 only the first is right), AS = (SE + SP) / 2, HS = 2 SE SP / (SE + SP), Score = (AS + HS) / 2.
    result = ast.literal_eval(printed[4].strip())
    se, sp = 1 / 3, 1.0
    expected = {"se": se, "sp": sp, "as": (se + sp) / 2, "hs": 2 * se * sp / (se + sp)}
    expected["score"] = (expected["as"] + expected["hs"]) / 2
    assert {key: result[key] for key in expected} == pytest.approx(expected)
    assert result["per_class_recall"] == pytest.approx({"Normal": 1.0, "Rhonchi": 0.0, "Wheeze": 0.5})
    assert result["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]


def test_results_table_is_what_the_bundled_checkpoints_recorded():
    """Each task's row of the README's results table gives the Score, SE, SP, AS and HS its checkpoint's results.json
    records on the test split, to the 3 decimals shown, and beside them the CV Score its decision was chosen on."""
    import json

    from respstf.training import mean_and_sd

    rows = {line.split("|")[1].strip(): line for line in README.split("## Results", 1)[1].splitlines()
            if re.match(r"\| [12]-[12] \|", line)}
    assert sorted(rows) == ["1-1", "1-2", "2-1", "2-2"]
    for title, line in rows.items():
        folder = CHECKPOINTS / f"sprsound-task{title.replace('-', '')}"
        if not (folder / "results.json").is_file():
            pytest.skip(f"{folder} not present")
        summary = json.loads((folder / "results.json").read_text())
        recorded = summary["results"]["inter_test"]
        cells = [cell.strip() for cell in line.split("|")]
        assert cells[2:7] == [f"{recorded[key]:.3f}" for key in ("score", "se", "sp", "as", "hs")], title
        assert cells[7] == mean_and_sd(summary["cv_ensemble"]["chosen"]["scores"]), title
