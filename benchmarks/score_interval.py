"""How much a Score on an SPRSound test split could move with other patients: a patient-level bootstrap.

    python benchmarks/score_interval.py                                  # the four bundled checkpoints, inter_test
    python benchmarks/score_interval.py --models runs/task22 --split test2023 --dataset /data/SPRSound

For each model (its task read off its config, else its class names) every row of ``--split`` is classified once, on
the inputs ``train.py`` scores (``respstf.training.featurize``: the event's audio at event level, the whole recording at
record level), then the split's patients are drawn with replacement ``--resamples`` times and the
official Score recomputed on each draw. Prints the Score, the standard deviation of the draws and their 5-95 % range: two Scores on
this split that differ by less than about one standard deviation are not told apart by it (nor is a
Score on another test set, such as the paper's).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

import respstf.feature_extraction  # noqa: F401  (registers the respstf Auto classes)
from respstf import hub_dataset, training
from respstf.hub_dataset.sprsound_score import compute_sprsound_score

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = Path(os.environ.get("RESPSTF_DATA_DIR", ROOT.parent / "shared" / "data")) / "sprsound"

BUNDLED = [ROOT / "checkpoints" / f"sprsound-task{task}" for task in ("11", "12", "21", "22")]


def task_of(model) -> str:
    """The SPRSound task the model's config records (``finetuning_task``), else the one whose official class names
    its ``id2label`` carries."""
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    task = getattr(model.config, "finetuning_task", None) or hub_dataset.task_of_labels(labels)
    if task is None:
        raise ValueError(f"{model.name_or_path}: classes {labels} are not those of an SPRSound task {sorted(hub_dataset.TASKS)}")
    return task


@torch.no_grad()
def predict(model, features, batch_size: int = 32) -> np.ndarray:
    """The model's class for every row of ``features`` (``respstf.training.featurize`` output): ``(rows,)`` class ids."""
    features = features.with_format("torch", columns=["input_features", "attention_mask"])
    return np.concatenate([model(**features[start:start + batch_size]).logits.argmax(-1).numpy()
                           for start in range(0, len(features), batch_size)])


def patient_bootstrap(predictions: np.ndarray, references: np.ndarray, patients: np.ndarray, num_labels: int,
                      resamples: int, seed: int = 0) -> np.ndarray:
    """Official Scores of ``resamples`` draws of the patients with replacement (each drawn patient brings all
    of its rows): ``(resamples,)``."""
    unique = np.unique(patients)
    rows_of = [np.flatnonzero(patients == patient) for patient in unique]
    rng = np.random.default_rng(seed)
    scores = np.empty(resamples)
    for draw in range(resamples):
        rows = np.concatenate([rows_of[i] for i in rng.integers(len(unique), size=len(unique))])
        scores[draw] = compute_sprsound_score(predictions[rows], references[rows], num_labels=num_labels)["score"]
    return scores


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[str(path) for path in BUNDLED])
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--split", default="inter_test")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)

    levels, rows = {}, []
    for name in args.models:
        model = AutoModelForAudioClassification.from_pretrained(name).eval()
        extractor, task = AutoFeatureExtractor.from_pretrained(name), task_of(model)
        level = hub_dataset.TASKS[task]["level"]
        if level not in levels:
            levels[level] = hub_dataset.load_sprsound(args.dataset, level=level, splits=[args.split], decode=False)[args.split]
        split = levels[level]
        features = training.featurize(split, extractor, f"task{task}", with_frames=False)  # the inputs train.py scores
        predictions, references = predict(model, features), np.asarray(features["labels"])
        patients = np.asarray(split["patient_id"])
        score = compute_sprsound_score(predictions, references, num_labels=model.config.num_labels)["score"]
        draws = patient_bootstrap(predictions, references, patients, model.config.num_labels, args.resamples)
        rows.append({"model": name, "task": task, "rows": len(split), "patients": len(np.unique(patients)), "score": score,
                     "std": draws.std(), "low": np.percentile(draws, 5), "high": np.percentile(draws, 95)})

    print(f"split {args.split}; {args.resamples} patient resamples\n")
    print(f"| model | task | rows | patients | Score | bootstrap std | 5-95 % |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {Path(r['model']).name} | {r['task'][0]}-{r['task'][1]} | {r['rows']} | {r['patients']} | {r['score']:.3f} | "
              f"{r['std']:.3f} | {r['low']:.3f}-{r['high']:.3f} |")
    return rows


if __name__ == "__main__":
    main()
