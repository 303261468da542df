"""Train and score all four SPRSound tasks with train.py; print the table beside the paper and append it to RESULTS.md.

The recipe (both presets): Task 1-2 (7 event classes) is trained from scratch. A first Task 2-2 model
(5 record classes, ``task22-base``) starts from that event model and learns whole recordings (960 frames
of 16 ms = 15.4 s, the full length of nearly every SPRSound recording, at the event model's frame rate)
with frame supervision from the event timestamps, and half the time a random window of a recording
labelled from the events inside it (train.py's record crops). Task 1-1 fine-tunes the event model with
its coarser label set (new head); Task 2-1 fine-tunes ``task22-base`` likewise, and the shipped Task 2-2
fine-tunes the Task 2-1 model back to the 5 record classes (chosen on validation over ``task22-base``
itself, 0.716 against 0.698). Every choice (best epoch, recipe) is made on the patient-disjoint
validation split carved from train, the same patients for all four tasks (so no model validates on
patients its parent trained on); ``--eval_split`` (default: the 2022 inter-patient test) is scored once.

    python benchmarks/sprsound_score.py                                # small preset, CPU
    python benchmarks/sprsound_score.py --preset paper --bf16           # GPU
    python benchmarks/sprsound_score.py --bf16 --use_cpu --runs runs/bf16   # CPU with native bf16 (README: Training)
    python benchmarks/sprsound_score.py --eval_split test2023 --dataset /data/SPRSound   # the 2023 set

``--tasks`` picks the tasks to ship. A run whose ``runs/<name>/results.json`` already exists is read
back, not retrained (and scored on ``--eval_split`` first if it lacks that split, e.g. a run trained on
a GPU machine with ``--eval_split none``, or a new test set); a run to be trained brings the runs it
starts from along (read back or trained in turn). ``--retrain`` retrains every run the tasks need, so a
preset change never starts from an old parent. A run cut short (no results.json yet) resumes from its newest complete
Trainer checkpoint.
``--seeds 42 1 2`` trains the runs that ship ``--tasks`` (and ``task22-base`` where needed) once per seed,
into ``runs/<name>-seed<k>/`` (read back where present; a shipped run that another starts from but that is
not in ``--tasks`` trains with the first seed only), without scoring them on ``--eval_split``. Seed runs
fine-tuned from one parent are also averaged weight by weight into ``runs/<name>-soup/`` (a "uniform
soup"). ``runs/<name>`` becomes a link to the candidate (a seed or the soup) with the best validation
Score, which alone is scored on ``--eval_split`` and is what later runs start from. ``--side_by_side 3``
trains up to three of a run's seeds at the same time, one process each (on a GPU; see RESULTS.md for what it saves).
``--copy_to checkpoints`` copies the final models (weights, configs, code, card; no optimizer state).
``--cv_folds 0 1 2 3 4`` runs the recipe once per patient fold instead, under ``runs/cv/fold<k>/`` (each run validated
on fold k, ``train.py --cv_fold k``, the test split never scored; finished runs are read back, and ``runs/cv/`` is
kept in git without Trainer checkpoints, so the folds can be run over several sessions and machines), and prints each task's cross-validation Score, mean ± sd over the folds, with the count of
normal recordings called Poor Quality: the yardstick for choosing a recipe. It also prints the decision each task's
pooled out-of-fold predictions favour (``predictions_validation.npz``, written by train.py; a fold run scored before
they were is scored again first): per-class logit offsets, `training.choose_logit_adjustment`. With ``--copy_to`` it
then ships each task's folds as one fold ensemble with that decision (``<copy_to>/sprsound-task<id>``, the folds' models
averaged), scored once on ``--eval_split``, its card saying how it was chosen:

    python benchmarks/sprsound_score.py --cv_folds 0 1 2 3 4 --copy_to checkpoints
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

from respstf import training
from respstf.hub_dataset import DETECTION_TASK
from respstf.modeling import pack_ensemble

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = Path(os.environ.get("RESPSTF_DATA_DIR", ROOT.parent / "shared" / "data")) / "sprsound"

PAPER = {"11": 0.810, "12": 0.667, "21": 0.744, "22": 0.608}
# (run folder under --runs, task, parent run, extra train.py arguments); each task ships the run
# `task<id>`. Runs are listed after their parents. The validation Scores behind each choice are in
# benchmarks/RESULTS.md (2-2 base: 0.668 with record crops against 0.635 without; 2-1 from it: 0.741
# against 0.732 for the previous 2-1 from a 10-epoch chain; 2-2 from 2-1: see the docstring).
FINE_TUNE = ["--learning_rate", "5e-4", "--ignore-mismatched"]
RECIPE = [
    ("task12", "12", None, ["--num_train_epochs", "20", "--logging_steps", "50"]),
    ("task11", "11", "task12", ["--num_train_epochs", "4", *FINE_TUNE]),
    ("task22-base", "22", "task12", ["--num_train_epochs", "16", *FINE_TUNE, "--n_frames", "960"]),
    ("task21", "21", "task22-base", ["--num_train_epochs", "4", *FINE_TUNE, "--imbalance", "none"]),
    ("task22", "22", "task21", ["--num_train_epochs", "4", *FINE_TUNE]),
    # The event detector (train.py --task events) learns whole recordings' frames from the event model; each frame's
    # frequency bands come from the 2.3 s around it (level or better than whole-input focusing on folds 0 and 1). All
    # 16 epochs run: its validation Score jumps from epoch to epoch while its frames still improve (fold 3 stopped early
    # at epoch 7 on an epoch-2 peak), and folds 0-2 picked epochs 12-14.
    ("events", "events", "task12", ["--num_train_epochs", "16", "--learning_rate", "5e-4", "--n_frames", "960",
                                     "--frequency_focus_frames", "9", "--early_stopping_patience", "0"]),
]
TASK_ORDER = ("11", "12", "21", "22", DETECTION_TASK)
# train.py options the recipe sets for each run: passed on as well, they would break the recipe.
RECIPE_OWNED = ["--task", "--output_dir", "--from", "--from_checkpoint", "--do_train", "--no_do_train",
                "--resume_from_checkpoint", "--cv_fold"]
# What --copy_to ships of a run, besides its code (every .py file save_pretrained copied beside the weights).
SHIPPED = ["config.json", "model.safetensors", "preprocessor_config.json", "README.md", "results.json",
           "confusion_validation.png"]


def run_of(task: str) -> str:
    """The run that ships ``task``: ``task<id>``, or ``events`` for the detector."""
    return task if task == DETECTION_TASK else f"task{task}"


def task_title(task: str) -> str:
    """A task as the tables name it: ``1-2``, or ``events``."""
    return task if task == DETECTION_TASK else f"{task[0]}-{task[1]}"


def must_train(run_dir: Path, retrain: bool) -> bool:
    """Whether a run is made (trained, or averaged for a soup), else its results.json is read back: asked to,
    or no validation Score is on record (it never finished)."""
    results = run_dir / "results.json"
    return retrain or not results.is_file() or "validation" not in json.loads(results.read_text())["results"]


def seeds_of(run: str, args) -> list[int]:
    """The seeds a run trains with: all ``--seeds`` for a run that ships a task of ``--tasks`` or for a step
    between shipped runs (``task22-base``), else the first. A step already trained as a single run (a folder
    ``runs/<name>``, not a link to a seed's run) is read back as it is, unless ``--retrain``."""
    ships, path = {run_of(task) for task in TASK_ORDER}, Path(args.runs) / run
    single_step = not args.retrain and path.is_dir() and not path.is_symlink()
    shipped_here = run in {run_of(task) for task in args.tasks}
    return args.seeds if shipped_here or (run not in ships and not single_step) else args.seeds[:1]


def run_dirs(run: str, args) -> list[Path]:
    """Where a run trains: ``runs/<run>``, or ``runs/<run>-seed<k>`` per seed when choosing among several."""
    seeds = seeds_of(run, args)
    return [Path(args.runs) / run] if len(seeds) == 1 else [Path(args.runs) / f"{run}-seed{seed}" for seed in seeds]


def runs_needed(args) -> set[str]:
    """The runs that ship ``--tasks``, with the runs that those to be trained start from."""
    parents = {run: parent for run, _, parent, _ in RECIPE}
    needed, pending = set(), [run_of(task) for task in args.tasks]
    while pending:
        run = pending.pop()
        needed.add(run)
        if parents[run] and any(must_train(run_dir, args.retrain) for run_dir in run_dirs(run, args)):
            pending.append(parents[run])
    return needed


def resolve_run(runs: Path, run: str) -> Path:
    """A run's folder, through the link that names a seed-selected run (``task22`` -> ``task22-seed1``)."""
    path = runs / run
    return runs / path.readlink() if path.is_symlink() else path


def train_py_argv(output_dir: Path, task: str, eval_split: str, args) -> list[str]:
    """The train.py arguments every run of the recipe shares."""
    fold = [] if args.cv_fold is None else ["--cv_fold", str(args.cv_fold)]
    return ["--task", task, "--dataset", args.dataset, "--output_dir", str(output_dir), "--eval_split", eval_split,
            "--disable_tqdm", "true", *fold]


def run_train_py(argv: list[str], output_dir: Path) -> dict:
    """Run ``python train.py argv`` (its output goes to ours) and return the results.json it wrote in ``output_dir``."""
    completed = subprocess.run([sys.executable, str(ROOT / "train.py"), *argv])
    if completed.returncode:
        raise SystemExit(f"{output_dir.name}: train.py failed (exit {completed.returncode}); its messages are above")
    return json.loads((output_dir / "results.json").read_text())


def score_in_place(output_dir: Path, task: str, eval_split: str, args) -> dict:
    """Score the model in ``output_dir`` on validation (and ``eval_split``) with train.py, keeping its results.json."""
    argv = [*train_py_argv(output_dir, task, eval_split, args), "--from", str(output_dir), "--do_train", "false", *args.train_args]
    print(f"{output_dir.name}: python train.py " + " ".join(argv), flush=True)
    return run_train_py(argv, output_dir)


def read_back(output_dir: Path, task: str, eval_split: str, args) -> dict:
    """A trained run's results.json, scored first on ``eval_split`` when it lacks that split."""
    print(f"{output_dir.name}: reading {output_dir / 'results.json'} (pass --retrain to train again)")
    summary = json.loads((output_dir / "results.json").read_text())
    if eval_split != "none" and eval_split not in summary["results"]:
        print(f"{output_dir.name}: not yet scored on {eval_split}", flush=True)
        summary = score_in_place(output_dir, task, eval_split, args)
    elif (args.cv_fold is not None and output_dir.name == run_of(task) and task != DETECTION_TASK
          and not training.predictions_path(output_dir, "validation").is_file()):
        print(f"{output_dir.name}: no out-of-fold predictions yet (scored before train.py wrote them)", flush=True)
        summary = score_in_place(output_dir, task, eval_split, args)
    return summary


def make_soup(seed_dirs: list[Path], ingredients: list[dict], output_dir: Path, task: str, args) -> dict:
    """Save the element-wise mean of the seed runs' weights (parameters and BatchNorm statistics; integer
    buffers from the first run) with the first run's feature extractor, and score it on validation.
    ``ingredients`` are the seed runs' summaries (results.json).

    Runs fine-tuned from one parent stay close in weight space, so their mean is one model that can beat
    each of them (Wortsman et al., "Model soups", 2022); runs from different initialisations are never
    averaged. Its results.json records the runs it averages and their summed training cost."""
    models = [AutoModelForAudioClassification.from_pretrained(seed_dir) for seed_dir in seed_dirs]
    states = [model.state_dict() for model in models]
    models[0].load_state_dict({name: torch.stack([state[name] for state in states]).mean(0) if tensor.is_floating_point()
                               else tensor for name, tensor in states[0].items()})
    models[0].save_pretrained(output_dir)
    AutoFeatureExtractor.from_pretrained(seed_dirs[0]).save_pretrained(output_dir)
    summary = {key: value for key, value in ingredients[0].items() if key != "seed_selection"}  # set on the kept one
    summary.update(soup_of=[seed_dir.name for seed_dir in seed_dirs], results={})
    for cost in ("global_step", "train_runtime_s", "wall_s"):
        summary[cost] = sum(ingredient.get(cost) or 0 for ingredient in ingredients)
    training.write_results(output_dir, summary)
    return score_in_place(output_dir, task, "none", args)


def train_run_argv(output_dir: Path, task: str, parent: str | None, extra: list[str], seed: int, eval_split: str, args) -> list[str]:
    """train.py's arguments for one run of the recipe with ``--seed seed``."""
    argv = [*train_py_argv(output_dir, task, eval_split, args), *extra, "--seed", str(seed), *args.train_args]
    return argv + (["--from", str(resolve_run(Path(args.runs), parent))] if parent else ["--preset", args.preset])


def add_wall_time(output_dir: Path, summary: dict, started: float) -> dict:
    """A trained run's summary with its wall time (data, features, training, validation), saved as its results.json."""
    summary["wall_s"] = time.time() - started
    training.write_results(output_dir, summary)
    return summary


def train_run(output_dir: Path, task: str, parent: str | None, extra: list[str], seed: int, eval_split: str, args) -> dict:
    """Train one run with train.py (``--seed seed``) and write its results.json with the wall time. A run cut short
    (a session's end, a kill) continues from its newest complete Trainer checkpoint unless ``--retrain``."""
    argv = train_run_argv(output_dir, task, parent, extra, seed, eval_split, args)
    if not args.retrain and training.complete_checkpoints(output_dir):
        argv += ["--resume_from_checkpoint", "last"]
    print("python train.py " + " ".join(argv), flush=True)
    started = time.time()
    return add_wall_time(output_dir, run_train_py(argv, output_dir), started)


def train_side_by_side(seed_dirs: dict[int, Path], task: str, parent: str | None, extra: list[str], at_once: int, args) -> dict[int, dict]:
    """Train several seeds of one run at once, up to ``at_once`` at a time, each ``python train.py`` in its own
    process writing to ``<seed run>/train.log``, and return their summaries (results.json with each process's
    wall time).

    It pays where one run leaves the GPU idle between steps. The paper preset keeps an H100 busy: three of
    its Task 2-1 seeds side by side took 178 s, against 3 x 66 s one after another (one such run alone, in
    an earlier session), and each held about 18.5 GiB of GPU memory, so at most four fit on an 80 GB card
    (benchmarks/RESULTS.md). A seed that fails lets the others finish (their runs are kept), then stops the
    recipe naming its log."""
    pending, running, started, summaries, failed = list(seed_dirs.items()), {}, {}, {}, []
    try:
        while pending or running:
            while pending and len(running) < at_once:
                seed, seed_dir = pending.pop(0)
                argv = train_run_argv(seed_dir, task, parent, extra, seed, "none", args)
                seed_dir.mkdir(parents=True, exist_ok=True)
                print(f"python train.py {' '.join(argv)} > {seed_dir / 'train.log'}", flush=True)
                started[seed] = time.time()
                with open(seed_dir / "train.log", "w") as log:
                    running[seed] = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], stdout=log, stderr=subprocess.STDOUT)
            time.sleep(1)
            for seed, process in list(running.items()):
                if process.poll() is None:
                    continue
                del running[seed]
                if process.returncode:
                    failed.append(seed)
                    print(f"seed {seed} failed (exit {process.returncode}): see {seed_dirs[seed] / 'train.log'}", flush=True)
                    continue
                summary = json.loads((seed_dirs[seed] / "results.json").read_text())
                summaries[seed] = add_wall_time(seed_dirs[seed], summary, started[seed])
                print(f"{seed_dirs[seed].name}: trained in {summary['wall_s']:.0f} s", flush=True)
    finally:  # interrupted: no training process outlives the recipe
        for process in running.values():
            if process.poll() is None:
                process.kill()
    if failed:
        raise SystemExit("failed: " + ", ".join(f"seed {seed} (see {seed_dir / 'train.log'})"
                                                 for seed, seed_dir in seed_dirs.items() if seed in failed))
    return summaries


def run_task(run: str, task: str, parent: str | None, extra: list[str], args) -> dict:
    """Read back or train one run of the recipe; with several seeds, train (or read back) each, average those
    fine-tuned from a parent into a soup, link the best of them on validation as ``runs/<run>`` and score only
    that one on ``--eval_split``."""
    seeds, output_dir = seeds_of(run, args), Path(args.runs) / run
    if len(seeds) == 1:
        if must_train(output_dir, args.retrain):
            if output_dir.is_symlink():  # a seed-selected run: train anew beside its seed runs, not into one
                output_dir.unlink()
            return train_run(output_dir, task, parent, extra, seeds[0], args.eval_split, args)
        return read_back(resolve_run(Path(args.runs), run), task, args.eval_split, args)
    if output_dir.exists() and not output_dir.is_symlink():
        raise SystemExit(f"{output_dir} is a trained run, not a link to a seed's run: move it aside (e.g. to "
                         f"{output_dir.name}-seed<its seed>) before choosing among --seeds")
    seed_dirs = run_dirs(run, args)
    to_train = {seed: seed_dir for seed, seed_dir in zip(seeds, seed_dirs) if must_train(seed_dir, args.retrain)}
    if args.side_by_side > 1 and len(to_train) > 1:
        trained = train_side_by_side(to_train, task, parent, extra, args.side_by_side, args)
    else:
        trained = {seed: train_run(seed_dir, task, parent, extra, seed, "none", args) for seed, seed_dir in to_train.items()}
    summaries = {seed: trained[seed] if seed in trained else read_back(seed_dir, task, "none", args)
                 for seed, seed_dir in zip(seeds, seed_dirs)}
    candidates = {seed: (f"seed {seed}", f"{run}-seed{seed}") for seed in seeds}
    if parent:
        soup_dir = Path(args.runs) / f"{run}-soup"
        current = not (trained or must_train(soup_dir, args.retrain)) and json.loads(
            (soup_dir / "results.json").read_text()).get("soup_of") == [seed_dir.name for seed_dir in seed_dirs]
        summaries["soup"] = (read_back(soup_dir, task, "none", args) if current
                             else make_soup(seed_dirs, [summaries[seed] for seed in seeds], soup_dir, task, args))
        candidates["soup"] = ("the seeds' soup", soup_dir.name)
    validation = {key: summary["results"]["validation"]["score"] for key, summary in summaries.items()}
    best = max(validation, key=validation.__getitem__)  # the first listed seed wins a tie; the soup must beat them
    print(f"{run}: validation Score " + ", ".join(f"{candidates[key][0]}: {score:.3f}" for key, score in validation.items())
          + f"; keeping {candidates[best][0]}", flush=True)
    for key, stale in summaries.items():  # a candidate kept by an earlier call no longer claims it
        if key != best and "seed_selection" in stale:
            del stale["seed_selection"]
            stale_dir = Path(args.runs) / candidates[key][1]
            training.write_results(stale_dir, stale)
            training.write_model_card(stale_dir, stale)
    output_dir.unlink(missing_ok=True)
    output_dir.symlink_to(candidates[best][1])
    summary = read_back(resolve_run(Path(args.runs), run), task, args.eval_split, args)
    selection = {"validation_score_by_seed": {seed: validation[seed] for seed in seeds}}
    if "soup" in validation:
        selection["soup_validation_score"] = validation["soup"]
    summary["seed_selection"] = {**selection, "kept": best}
    training.write_results(output_dir, summary)
    training.write_model_card(output_dir, summary)
    return summary


def results_table(summaries: dict[str, dict], eval_split: str, heading: str) -> str:
    """The RESULTS.md section for the runs' ``results.json`` summaries (keyed by task id): Scores on
    ``eval_split`` ("–" where a run was not scored on it, e.g. trained with ``--eval_split none``) beside the
    paper's and the validation Score that chose the checkpoint."""
    lines = [
        f"## {heading}",
        "",
        "Selection on the patient-disjoint validation split of train only. The paper's numbers are on the BioCAS 2023 "
        "test set, which is not available here; ours are on the split named above.",
        "",
        "| task | Score | SE | SP | AS | HS | paper Score | validation Score | steps | train min | trained on | parameters |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in TASK_ORDER:
        if task not in summaries:
            continue
        s = summaries[task]
        test = s["results"].get(eval_split, {})
        figures = " | ".join(f"{test[name]:.3f}" if name in test else "–" for name in ("score", "se", "sp", "as", "hs"))
        paper = f"{PAPER[task]:.3f}" if task in PAPER else "–"  # the detector's: the Task 2-2 Score of its record labels
        lines.append(
            f"| {task_title(task)} | {figures} | {paper} | {s['results']['validation']['score']:.3f} | "
            f"{s['global_step']} | {(s.get('train_runtime_s') or 0) / 60:.1f} | {s['device']} | {s['parameters']:,} |"
        )
    for task, s in summaries.items():
        if "seed_selection" in s:
            selection = s["seed_selection"]
            kept = "the seeds' soup (mean weights)" if selection["kept"] == "soup" else f"seed {selection['kept']}"
            soup = f" and their soup ({selection['soup_validation_score']:.3f})" if "soup_validation_score" in selection else ""
            lines.append(f"\nTask {task_title(task)}: {kept} kept for its validation Score among seeds "
                         + ", ".join(f"{seed} ({score:.3f})" for seed, score in selection["validation_score_by_seed"].items())
                         + f"{soup} (`--seeds`).")
    return "\n".join(lines)


def run_recipe(args) -> dict[str, dict]:
    """Read back or train every run that ships ``args.tasks`` (and the runs they start from), in recipe order; the
    shipped runs' summaries by task."""
    summaries, needed = {}, runs_needed(args)
    # Said first: a mistyped --runs (or a checkout without runs/) means hours of training, not a copy.
    to_make = [run for run, *_ in RECIPE if run in needed and any(must_train(d, args.retrain) for d in run_dirs(run, args))]
    print(f"{args.runs}: to train (no finished results.json, or --retrain): {', '.join(to_make) or 'none'}; read back: "
          f"{', '.join(run for run, *_ in RECIPE if run in needed and run not in to_make) or 'none'}", flush=True)
    for run, task, parent, extra in RECIPE:
        if run in needed:
            summary = run_task(run, task, parent, extra, args)
            if run == run_of(task) and task in args.tasks:
                summaries[task] = summary
    return summaries


def normals_called_poor_quality(summary: dict, split: str = "validation") -> tuple[int, int]:
    """``(normal recordings called Poor Quality, normal recordings)`` in a record run's ``split``."""
    labels, matrix = summary["labels"], summary["results"][split]["confusion_matrix"]
    normal = labels.index("Normal")
    return matrix[normal][labels.index("Poor Quality")], sum(matrix[normal])


def share(count: int, total: int) -> str:
    """``"11 of 781 (1.4%)"``."""
    return f"{count} of {total} ({count / max(total, 1):.1%})"


def cv_table(by_fold: dict[int, dict[str, dict]], heading: str) -> str:
    """The RESULTS.md section of a cross-validation: each task's validation Score on every fold, their mean ± sd,
    and (record tasks) how many normal recordings of all folds were called Poor Quality."""
    folds = sorted(by_fold)
    lines = [f"## {heading}", "",
             f"Patient-grouped cross-validation over train (`--cv_folds {' '.join(map(str, folds))}`; folds of "
             "`hub_dataset/sprsound_folds.json`): each fold's models validate on that fold's patients, never seen in "
             "their training or their parents'. No test split is scored.", "",
             "| task | CV Score mean ± sd | " + " | ".join(f"fold {fold}" for fold in folds) + " | normals called Poor Quality |",
             "|---" * (len(folds) + 3) + "|"]
    for task in TASK_ORDER:  # events: the Task 2-2 Score of the detector's record labels
        if not all(task in by_fold[fold] for fold in folds):
            continue
        scores = np.array([by_fold[fold][task]["results"]["validation"]["score"] for fold in folds])
        poor = "–"
        if "Poor Quality" in by_fold[folds[0]][task]["labels"]:
            poor = share(*np.sum([normals_called_poor_quality(by_fold[fold][task]) for fold in folds], axis=0))
        lines.append(f"| {task_title(task)} | {training.mean_and_sd(scores)} | "
                     + " | ".join(f"{score:.3f}" for score in scores) + f" | {poor} |")
    return "\n".join(lines)


def cv_decisions(by_fold: dict[int, dict[str, dict]], runs: Path) -> dict[str, dict]:
    """Each task model's decision (`training.choose_logit_adjustment`) on the folds' pooled out-of-fold predictions,
    for the tasks every fold has."""
    folds = sorted(by_fold)
    return {task: training.choose_logit_adjustment(
                [training.read_predictions(resolve_run(runs / "cv" / f"fold{fold}", run_of(task))) for fold in folds],
                by_fold[folds[0]][task]["labels"], "Normal")
            for task in ("11", "12", "21", "22") if all(task in by_fold[fold] for fold in folds)}


def decision_table(decisions: dict[str, dict], labels: dict[str, list[str]]) -> str:
    """The RESULTS.md lines of `cv_decisions` (``labels``: each task's classes), beside the Scores without them."""
    lines = ["", f"Decisions chosen on these folds' out-of-fold predictions (per-class logit offsets added to the "
             f"log-probabilities, `RespSTFConfig.logit_adjustment`): the best mean Score with Poor Quality weighted to "
             f"{training.DEPLOYMENT_POOR_QUALITY:.0%} of recordings, at most {training.MAX_NORMALS_POOR_QUALITY:.1%} of "
             "normal recordings called Poor Quality. The CV Score (each fold's single model on its own patients) without "
             "→ with them, at train's prevalence and at that one:",
             "", "| task | offsets | CV Score | CV Score, Poor Quality at "
             f"{training.DEPLOYMENT_POOR_QUALITY:.0%} | normals called Poor Quality |", "|---|---|---|---|---|"]
    for task, choice in decisions.items():
        offsets = ", ".join(f"{name} {value:+.2f}" for name, value in zip(labels[task], choice["offsets"]) if value)
        offsets = (offsets or "none") + ("" if choice["allowed"] else " (none meets the Poor Quality limit)")
        before, chosen = choice["before"], choice["chosen"]
        poor = (f"{share(before['normals_called_poor_quality'], before['normals'])} → "
                f"{share(chosen['normals_called_poor_quality'], chosen['normals'])}" if "Poor Quality" in labels[task] else "–")
        lines.append(f"| {task_title(task)} | {offsets} | "
                     f"{training.mean_and_sd(before['scores'])} → {training.mean_and_sd(chosen['scores'])} | "
                     f"{training.mean_and_sd(before['deployment_scores'])} → {training.mean_and_sd(chosen['deployment_scores'])} | "
                     f"{poor} |")
    return "\n".join(lines)


def ensemble_table(shipped: dict[str, dict], split: str, copy_to: str) -> str:
    """The RESULTS.md lines of the fold ensembles shipped to ``copy_to`` (`ship_cv_ensemble` summaries by task): each
    one's single Score on ``split`` beside its CV Score and the paper's."""
    lines = ["", f"The fold ensembles copied to `{copy_to}` (every fold's model, probabilities averaged, the decision "
             f"above), scored once on `{split}` after these choices:", "",
             "| task | Score | SE | SP | AS | HS | paper Score | CV Score (with the decision) | normals called Poor Quality | members |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task in TASK_ORDER:
        if task not in shipped:
            continue
        summary, test = shipped[task], shipped[task]["results"][split]
        cv = summary["cv_ensemble"]["chosen"]["scores"]
        poor = share(*normals_called_poor_quality(summary, split)) if "Poor Quality" in summary["labels"] else "–"
        lines.append(f"| {task_title(task)} | " + " | ".join(f"{test[name]:.3f}" for name in ("score", "se", "sp", "as", "hs"))
                     + f" | {PAPER[task]:.3f} | {training.mean_and_sd(cv)} | {poor} | {len(cv)} |")
    return "\n".join(lines)


def ship_cv_ensemble(task: str, folds: list[int], choice: dict, runs: Path, copy_to: Path, split: str, dataset: str,
                     scalograms: dict | None = None) -> dict:
    """``<copy_to>/sprsound-task<id>``: the folds' runs of ``task`` as one fold ensemble (`pack_ensemble`) with the logit
    adjustment of ``choice`` (`cv_decisions`), scored once on ``split`` (``scalograms``: a cache shared between calls,
    see `training.score_checkpoint`), with its results.json, its answers on ``split`` (``predictions_<split>.npz``) and
    card; its summary.

    Raises:
        SystemExit: the decision does not meet the Poor Quality limit, or a fold's model carries a logit adjustment
            already (its out-of-fold predictions would include it), before anything is written.
    """
    fold_runs = [resolve_run(runs / "cv" / f"fold{fold}", run_of(task)) for fold in folds]
    if not choice["allowed"]:
        raise SystemExit(f"task {task}: no decision calls at most {training.MAX_NORMALS_POOR_QUALITY:.1%} of the folds' "
                         "normal recordings Poor Quality; nothing shipped")
    for run in fold_runs:
        if json.loads((run / "config.json").read_text()).get("logit_adjustment") is not None:
            raise SystemExit(f"{run}: its model already carries a logit_adjustment; ship fold models without one")
    first = json.loads((fold_runs[0] / "results.json").read_text())
    target = copy_to / f"sprsound-{run_of(task)}"
    copy_to.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=copy_to) as building:  # the old folder stays until the new one is complete
        packed = pack_ensemble(fold_runs, Path(building) / target.name)
        config = AutoConfig.from_pretrained(packed)
        config.logit_adjustment = choice["offsets"] if any(choice["offsets"]) else None
        config.save_pretrained(packed)
        metrics, logits, labels = training.score_checkpoint(packed, dataset, task, split, scalograms)
        training.save_predictions(packed, split, logits, labels)  # what tests/test_checkpoint_scores.py samples
        summary = {
            "task": task, "labels": first["labels"], "normal_label": "Normal", "dataset": dataset, "preset": first["preset"],
            "from": None, "parameters": sum(json.loads((run / "results.json").read_text())["parameters"] for run in fold_runs),
            "selection": "fold ensemble", "device": training.describe_device("cpu"),
            "cv_ensemble": {"folds": folds, "runs": [str(run) for run in fold_runs],
                            "max_normals_poor_quality": training.MAX_NORMALS_POOR_QUALITY, **choice},
            "results": {split: {**metrics, "device": training.describe_device("cpu")}},
        }
        training.write_results(packed, summary)
        training.write_model_card(packed, summary)
        if target.exists():
            shutil.rmtree(target)
        packed.rename(target)
    print(f"{target}: fold ensemble of {', '.join(map(str, fold_runs))}; {split} Score {metrics['score']:.3f}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    # No abbreviations: an option left to train.py (e.g. --seed) must never be read as one of ours (--seeds).
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--eval_split", default="inter_test")
    parser.add_argument("--preset", default="small", choices=["small", "paper"])
    parser.add_argument("--runs", default=None, help="Run folders (default: runs/, or runs/paper/ for --preset paper).")
    parser.add_argument("--tasks", nargs="+", default=["12", "11", "22", "21"], choices=TASK_ORDER,
                        help="Tasks to ship; 'events' adds the event detector (run 'events', from task12).")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42],
                        help="Train each run once per seed and keep the best on validation, or the seeds' soup (see the script's docstring).")
    parser.add_argument("--side_by_side", type=int, default=1, metavar="N",
                        help="Train up to N of a run's seeds at the same time, one train.py process each writing to <seed run>/train.log "
                             "(on a GPU with memory for N runs; pass a smaller --dataloader_num_workers to share the cores).")
    parser.add_argument("--copy_to", default=None, help="Copy the final models to <copy_to>/sprsound-task<id>/ (with "
                        "--cv_folds: each task's fold ensemble with the decision chosen on the folds, scored once on --eval_split).")
    parser.add_argument("--cv_folds", nargs="+", type=int, default=None, choices=range(training.CV_FOLDS), metavar="K",
                        help="Cross-validation: the whole recipe once per fold K, under <runs>/cv/fold<K>/, each validated "
                             "on that fold's patients (train.py --cv_fold K; the folds' runs are not scored on the test split), "
                             "then a table of each task's Score mean ± sd over the folds and the decision chosen on them.")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args, args.train_args = parser.parse_known_args(argv)
    given = training.options_given(args.train_args)
    if "--seed" in given or len(set(args.seeds)) < len(args.seeds):
        parser.error("pass the training seeds as --seeds, each once")
    owned = sorted(given & set(RECIPE_OWNED))
    if owned:
        parser.error(f"{', '.join(owned)}: set by the recipe for each run (see RECIPE and --runs, --tasks); "
                     "the other train.py options are passed on")
    # e.g. --eval-split: train.py would read it for every run, behind this script's own --eval_split
    respelled = sorted(given & {f"--{action.dest}" for action in parser._actions} - set(RECIPE_OWNED))
    if respelled:
        parser.error(f"{', '.join(respelled)}: this script's own options, spelled with underscores as in --help")
    if args.side_by_side < 1:
        parser.error(f"--side_by_side is how many seeds train at a time (1 or more), got {args.side_by_side}")
    if args.cv_folds and args.copy_to:
        if DETECTION_TASK in args.tasks:
            parser.error("--cv_folds with --copy_to ships the task models' fold ensembles; the detector ships from "
                         "benchmarks/event_detection.py: leave 'events' out of --tasks")
        if len(set(args.cv_folds)) < 2 or args.eval_split == "none":
            parser.error("--cv_folds with --copy_to ships fold ensembles, scored once on --eval_split: give two or more "
                         "folds (all five to ship) and a test split")
    elif args.cv_folds and args.eval_split != parser.get_default("eval_split"):
        parser.error("--cv_folds scores the validation folds only; --eval_split is the split the fold ensembles are scored "
                     "on with --copy_to")
    args.cv_fold, ship_split = None, args.eval_split
    if args.cv_folds:
        args.eval_split = "none"  # the folds' runs score their validation folds only
    if args.runs is None:
        # Relative, so that results.json and the cards name a parent run the same way on every machine.
        args.runs = os.path.relpath(ROOT / "runs" / "paper" if args.preset == "paper" else ROOT / "runs")

    device = training.describe_device("cuda" if torch.cuda.is_available() else "cpu")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if args.cv_folds:
        by_fold = {}
        for fold in args.cv_folds:  # each fold's recipe in its own folder, read back run by run when it exists
            fold_args = argparse.Namespace(**{**vars(args), "runs": str(Path(args.runs) / "cv" / f"fold{fold}"),
                                              "cv_fold": fold})
            by_fold[fold] = run_recipe(fold_args)
        heading = f"{datetime.date.today()} · commit {commit} · run on {device} · preset {args.preset} · cross-validation"
        decisions = cv_decisions(by_fold, Path(args.runs))
        labels = {task: by_fold[args.cv_folds[0]][task]["labels"] for task in decisions}
        table = cv_table(by_fold, heading) + "\n" + decision_table(decisions, labels)
        if args.copy_to:
            scalograms = {}  # Tasks 1-1 and 1-2 (2-1 and 2-2) score the same recordings
            shipped = {task: ship_cv_ensemble(task, sorted(by_fold), decisions[task], Path(args.runs), Path(args.copy_to),
                                              ship_split, args.dataset, scalograms) for task in args.tasks}
            table += "\n\n" + ensemble_table(shipped, ship_split, args.copy_to)
        print(table)
        with open(args.results, "a") as handle:
            handle.write("\n" + table + "\n")
        return
    summaries = run_recipe(args)
    heading = f"{datetime.date.today()} · commit {commit} · run on {device} · preset {args.preset} · eval split `{args.eval_split}`"
    table = results_table(summaries, args.eval_split, heading)
    print(table)
    with open(args.results, "a") as handle:
        handle.write("\n" + table + "\n")

    if args.copy_to:
        for task in summaries:
            source, target = Path(args.runs) / run_of(task), Path(args.copy_to) / f"sprsound-{run_of(task)}"
            target.mkdir(parents=True, exist_ok=True)
            for path in [*(source / name for name in SHIPPED), *sorted(source.glob("*.py"))]:
                if path.is_file():
                    shutil.copy2(path, target / path.name)
            print(f"copied {source} -> {target}")


if __name__ == "__main__":
    main()
