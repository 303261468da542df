"""The README's commands and Python snippets are the ones that work."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import CHECKPOINTS, REPO_ROOT, SPRSOUND

README = (REPO_ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_quick_start_commands():
    quick_start = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in quick_start.strip().splitlines()]
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    ci_commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci_commands == commands


def test_python_snippets_run():
    """Every ```python block, in order, in one fresh interpreter from the repository root (```py blocks need a network)."""
    if not SPRSOUND.is_dir() or not (CHECKPOINTS / "sprsound-task12" / "model.safetensors").is_file():
        pytest.skip("needs the shared SPRSound data and the bundled checkpoints")
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 4
    completed = subprocess.run([sys.executable, "-c", "\n".join(blocks)], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "'label'" in completed.stdout and "Fine Crackle" in completed.stdout and "'score'" in completed.stdout
