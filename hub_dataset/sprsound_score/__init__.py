"""The official SPRSound Score; ``evaluate.load(SPRSOUND_SCORE_PATH)`` loads the same code as a metric (from a
checkout also ``evaluate.load("hub_dataset/sprsound_score")``)."""

from pathlib import Path

from .sprsound_score import SprsoundScore, compute_sprsound_score

# This folder, as `evaluate.load` takes it: where the package is installed, not the current directory.
SPRSOUND_SCORE_PATH = str(Path(__file__).parent)

__all__ = ["SPRSOUND_SCORE_PATH", "SprsoundScore", "compute_sprsound_score"]
