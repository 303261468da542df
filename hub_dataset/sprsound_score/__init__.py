"""The official SPRSound Score; ``evaluate.load("hub_dataset/sprsound_score")`` loads the same code as a metric."""

from .sprsound_score import SprsoundScore, compute_sprsound_score

__all__ = ["SprsoundScore", "compute_sprsound_score"]
