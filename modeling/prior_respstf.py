"""Class priors for deployment: the logit offsets of a known prior shift, and the class prior of unlabelled
recordings estimated by EM (Saerens, Latinne & Decaestecker, "Adjusting the outputs of a classifier to new a
priori probabilities: a simple procedure", Neural Computation 14, 2002).

Library code of the package (not shipped with a checkpoint): what it computes goes into
``RespSTFConfig.logit_adjustment``, which the shipped model code applies at inference.
"""

from __future__ import annotations

import numpy as np


def _normalised_prior(values, name: str) -> np.ndarray:
    """``values`` (class frequencies or counts) as a prior ``(num_labels,)`` summing to 1."""
    prior = np.asarray(values, dtype=np.float64)
    if prior.ndim != 1 or len(prior) < 2 or not np.all(np.isfinite(prior)) or np.any(prior <= 0):
        raise ValueError(f"{name} must be at least 2 positive class frequencies (or counts), got {values!r}.")
    return prior / prior.sum()


def prior_shift(train_prior, deploy_prior) -> list[float]:
    """Logit offsets ``log p_deploy(c) - log p_train(c)``, one per class, for ``RespSTFConfig.logit_adjustment``.

    Added to the logits they turn posteriors under the training prior into posteriors under the deployment prior
    (Bayes' rule; Saerens et al. 2002, eq. 2.4). Both priors are class frequencies or counts ``(num_labels,)`` in
    the model's label order, each normalised to sum 1. ``train_prior`` is the prior the model's probabilities
    assume: the training split's class frequencies for a plain loss, uniform for a loss weighted by inverse class
    frequency (which learns the balanced prior).

    Raises:
        ValueError: a prior with a zero, negative or non-finite entry, or priors of different lengths.
    """
    train = _normalised_prior(train_prior, "train_prior")
    deploy = _normalised_prior(deploy_prior, "deploy_prior")
    if len(train) != len(deploy):
        raise ValueError(f"train_prior has {len(train)} classes but deploy_prior has {len(deploy)}.")
    return (np.log(deploy) - np.log(train)).tolist()


def estimate_deployment_prior(probabilities, train_prior, iterations: int = 100, tolerance: float = 1e-6) -> np.ndarray:
    """The class prior ``(num_labels,)`` of unlabelled recordings, by EM from the model's probabilities on them.

    Each step re-weights every recording's posteriors by ``p_new(c) / p_train(c)``, renormalises them, and takes
    their mean over recordings as the next ``p_new`` (Saerens et al. 2002, eqs. 2.9-2.10), from ``p_new = p_train``
    until no class moves by ``tolerance`` or after ``iterations`` steps. ``prior_shift(train_prior, estimate)``
    then gives the logit offsets for those recordings.

    Args:
        probabilities: ``(N, num_labels)`` softmax outputs (numpy or CPU torch) of the model *without* a logit
            adjustment (set ``model.config.logit_adjustment = None`` first), one row per recording.
        train_prior: ``(num_labels,)`` the prior those probabilities assume (see `prior_shift`).
        iterations: most EM steps.
        tolerance: convergence threshold on the largest change of a class's prior.

    Raises:
        ValueError: probabilities that are not rows of a distribution over ``len(train_prior)`` classes, or a bad
            prior, iteration count or tolerance.
    """
    train = _normalised_prior(train_prior, "train_prior")
    posteriors = np.asarray(probabilities, dtype=np.float64)
    if posteriors.ndim != 2 or posteriors.shape[0] == 0 or posteriors.shape[1] != len(train):
        raise ValueError(f"probabilities must have shape (recordings, {len(train)}), got {posteriors.shape}.")
    if not np.all(np.isfinite(posteriors)) or posteriors.min() < 0 or np.abs(posteriors.sum(axis=1) - 1).max() > 1e-3:
        raise ValueError("probabilities must be softmax outputs: non-negative rows that sum to 1.")
    if iterations < 1 or not tolerance > 0:
        raise ValueError(f"iterations must be >= 1 and tolerance > 0, got {iterations} and {tolerance}.")
    prior = train
    for _ in range(iterations):
        weighted = posteriors * (prior / train)  # (N, C): Bayes' rule under the current prior, up to a row factor
        updated = (weighted / weighted.sum(axis=1, keepdims=True)).mean(axis=0)
        converged = np.abs(updated - prior).max() < tolerance
        prior = updated
        if converged:
            break
    return prior
