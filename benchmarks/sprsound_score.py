"""Train and score all four SPRSound tasks with train.py; print the table beside the paper and append it to RESULTS.md.

The recipe (both presets): Task 1-2 (7 event classes) is trained from scratch. Task 2-2 (5 record
classes) starts from that event model and learns whole recordings (960 frames of 16 ms = 15.4 s, the
full length of nearly every SPRSound recording, at the event model's frame rate) with frame supervision
from the event timestamps, and half the time a random window of a recording labelled from the events
inside it (train.py's record crops). Task 1-1 fine-tunes the event model with its coarser label set (new
head); Task 2-1 fine-tunes the Task 2-2 model likewise. Every choice (best epoch, recipe) is made on the
patient-disjoint validation split carved from train, the same patients for all four tasks (so no model
validates on patients its parent trained on); ``--eval_split`` (default: the 2022 inter-patient test)
is scored once.

    python benchmarks/sprsound_score.py                                # small preset, CPU
    python benchmarks/sprsound_score.py --preset paper --bf16           # GPU
    python benchmarks/sprsound_score.py --bf16 --use_cpu --runs runs/bf16   # CPU with native bf16 (README: Training)
    python benchmarks/sprsound_score.py --eval_split test2023 --dataset /data/SPRSound   # the 2023 set

``--tasks`` picks the tasks to ship. A run whose ``runs/<name>/results.json`` already exists is read
back, not retrained (and scored on ``--eval_split`` first if it lacks that split, e.g. a run trained on
a GPU machine with ``--eval_split none``, or a new test set); a run to be trained brings the runs it
starts from along (read back or trained in turn). ``--retrain`` retrains every run the tasks need, so a
preset change never starts from an old parent.
``--copy_to checkpoints`` copies the final models (weights, configs, code, card; no optimizer state).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402

PAPER = {"11": 0.810, "12": 0.667, "21": 0.744, "22": 0.608}
# (run folder under --runs, task, parent run, extra train.py arguments); each task ships the run
# `task<id>`. Runs are listed after their parents. The validation Scores behind each choice are in
# benchmarks/RESULTS.md (2-2: 0.668 with record crops against 0.635 without; 2-1 from it: 0.741 against
# 0.732 for the previous 2-1 from a 10-epoch chain).
FINE_TUNE = ["--learning_rate", "5e-4", "--ignore-mismatched"]
RECIPE = [
    ("task12", "12", None, ["--num_train_epochs", "20", "--logging_steps", "50"]),
    ("task11", "11", "task12", ["--num_train_epochs", "4", *FINE_TUNE]),
    ("task22", "22", "task12", ["--num_train_epochs", "16", *FINE_TUNE, "--n_frames", "960"]),
    ("task21", "21", "task22", ["--num_train_epochs", "4", *FINE_TUNE, "--imbalance", "none"]),
]
SHIPPED = ["config.json", "model.safetensors", "preprocessor_config.json", "README.md", "results.json",
           "configuration_respstf.py", "modeling_respstf.py", "feature_extraction_respstf.py", "cwt.py",
           "confusion_validation.png"]


def must_train(run_dir: Path, retrain: bool) -> bool:
    """Whether a run is trained (else its results.json is read back)."""
    return retrain or not (run_dir / "results.json").is_file()


def runs_needed(tasks: list[str], runs: Path, retrain: bool) -> set[str]:
    """The runs that ship the given tasks, with the runs that those to be trained start from."""
    parents = {run: parent for run, _, parent, _ in RECIPE}
    needed, pending = set(), [f"task{task}" for task in tasks]
    while pending:
        run = pending.pop()
        needed.add(run)
        if parents[run] and must_train(runs / run, retrain):
            pending.append(parents[run])
    return needed


def run_task(run: str, task: str, parent: str | None, extra: list[str], args) -> dict:
    output_dir = Path(args.runs) / run
    results_file = output_dir / "results.json"
    common = ["--task", task, "--dataset", args.dataset, "--output_dir", str(output_dir), "--eval_split", args.eval_split,
              "--disable_tqdm", "true"]
    if not must_train(output_dir, args.retrain):
        print(f"{run}: reading {results_file} (pass --retrain to train again)")
        summary = json.loads(results_file.read_text())
        if args.eval_split != "none" and args.eval_split not in summary["results"]:
            argv = [*common, "--from", str(output_dir), "--do_train", "false", *args.train_args]
            print(f"{run}: not yet scored on {args.eval_split}: python train.py " + " ".join(argv), flush=True)
            summary = train.main(argv)
        return summary
    argv = [*common, *extra, *args.train_args]
    if parent:
        argv += ["--from", str(Path(args.runs) / parent)]
    else:
        argv += ["--preset", args.preset]
    print("python train.py " + " ".join(argv), flush=True)
    started = time.time()
    summary = train.main(argv)
    summary["wall_s"] = time.time() - started
    results_file.write_text(json.dumps(summary, indent=2, default=float))
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
    for task in ("11", "12", "21", "22"):
        if task not in summaries:
            continue
        s = summaries[task]
        test = s["results"].get(eval_split, {})
        figures = " | ".join(f"{test[name]:.3f}" if name in test else "–" for name in ("score", "se", "sp", "as", "hs"))
        lines.append(
            f"| {task[0]}-{task[1]} | {figures} | {PAPER[task]:.3f} | {s['results']['validation']['score']:.3f} | "
            f"{s['global_step']} | {(s.get('train_runtime_s') or 0) / 60:.1f} | {s['device']} | {s['parameters']:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=train.DEFAULT_DATASET)
    parser.add_argument("--eval_split", default="inter_test")
    parser.add_argument("--preset", default="small", choices=["small", "paper"])
    parser.add_argument("--runs", default=None, help="Run folders (default: runs/, or runs/paper/ for --preset paper).")
    parser.add_argument("--tasks", nargs="+", default=["12", "11", "22", "21"], choices=["11", "12", "21", "22"])
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--copy_to", default=None, help="Copy the final models to <copy_to>/sprsound-task<id>/.")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args, args.train_args = parser.parse_known_args()
    if args.runs is None:
        args.runs = str(ROOT / "runs" / "paper" if args.preset == "paper" else ROOT / "runs")

    summaries, needed = {}, runs_needed(args.tasks, Path(args.runs), args.retrain)
    for run, task, parent, extra in RECIPE:
        if run in needed:
            summary = run_task(run, task, parent, extra, args)
            if run == f"task{task}" and task in args.tasks:
                summaries[task] = summary

    device = train.describe_device("cuda" if torch.cuda.is_available() else "cpu")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    heading = f"{datetime.date.today()} · commit {commit} · run on {device} · preset {args.preset} · eval split `{args.eval_split}`"
    table = results_table(summaries, args.eval_split, heading)
    print(table)
    with open(args.results, "a") as handle:
        handle.write("\n" + table + "\n")

    if args.copy_to:
        for task in summaries:
            source, target = Path(args.runs) / f"task{task}", Path(args.copy_to) / f"sprsound-task{task}"
            target.mkdir(parents=True, exist_ok=True)
            for name in SHIPPED:
                if (source / name).is_file():
                    shutil.copy2(source / name, target / name)
            print(f"copied {source} -> {target}")


if __name__ == "__main__":
    main()
