"""train.py end to end on real data: a short SPRSound run, resume after a kill, fine-tuning on a real
ICBHI folder, and the errors that must stop a run before training starts."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import ICBHI, REPO_ROOT, SPRSOUND, single_model, stretch_at_start

import train
import respstf.hub_dataset as hub_dataset
from respstf import training
from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset import DatasetSource, task_labels
from respstf.hub_dataset.labels import record_label_from_frame_labels

QUICK = ["--max_eval_samples", "16", "--per_device_train_batch_size", "8", "--disable_tqdm", "true", "--logging_steps", "1"]


def run_train(args: list[str]) -> dict:
    return train.main(args + QUICK)


@pytest.fixture(scope="session")
def task12_run(sprsound_root, tmp_path_factory) -> Path:
    """A few real training steps of Task 1-2 (event level); its folder is a complete checkpoint."""
    output = tmp_path_factory.mktemp("task12")
    run_train(["--task", "12", "--dataset", str(sprsound_root), "--output_dir", str(output),
               "--max_train_samples", "48", "--max_steps", "3", "--eval_strategy", "steps", "--save_strategy", "steps",
               "--eval_steps", "3", "--save_steps", "3"])
    return output


def test_short_real_run_writes_a_complete_checkpoint(task12_run):
    summary = json.loads((task12_run / "results.json").read_text())
    assert summary["task"] == "12" and summary["global_step"] == 3
    assert summary["device"].startswith("CPU (") and summary["device"].endswith(", fp32")
    assert summary["labels"] == task_labels(12)
    for split in ("validation", "inter_test"):
        result = summary["results"][split]
        assert 0.0 <= result["score"] <= 1.0
        assert np.asarray(result["confusion_matrix"]).sum() == result["rows"] == 16
        assert (task12_run / f"confusion_{split}.png").stat().st_size > 1000
    config = json.loads((task12_run / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(7)] == task_labels(12)
    assert config["auto_map"]["AutoModelForAudioClassification"] == "modeling_respstf.RespSTFForAudioClassification"
    for name in ("model.safetensors", "preprocessor_config.json", "modeling_respstf.py", "cwt.py", "README.md"):
        assert (task12_run / name).is_file(), name
    assert not (task12_run / "training_args.bin").exists(), "no pickles in a shipped folder"
    card = (task12_run / "README.md").read_text()
    assert "pipeline_tag: audio-classification" in card and "inter_test" in card
    # Each scored split's answers, row by row: its recorded Score again, for choices made on cross-validation.
    for split in ("validation", "inter_test"):
        logits, labels = training.read_predictions(task12_run, split)
        assert logits.shape == (16, 7) and labels.shape == (16,)
        figures = training.fold_figures([(logits, labels)], [0.0] * 7, task_labels(12), "Normal")
        assert figures["mean"] == pytest.approx(summary["results"][split]["score"], abs=1e-9)


def test_scoring_a_trained_run_adds_the_split_and_keeps_the_model(task12_run, sprsound_root, tmp_path):
    """`--do_train false` on a run trained elsewhere with `--eval_split none`: the test split is scored with the
    run's own weights (the Score, confusion matrix and loss its training recorded come back exactly) and merged into
    its results.json; the weights and how they were trained are left as they were. Scored again in bf16 autocast on
    the CPU (``--bf16 --use_cpu``), which the split's results name."""
    run = tmp_path / "trained-elsewhere"
    shutil.copytree(task12_run, run)
    summary = json.loads((run / "results.json").read_text())
    removed = summary["results"].pop("inter_test")
    (run / "results.json").write_text(json.dumps(summary))
    weights = (run / "model.safetensors").read_bytes()
    score = ["--task", "12", "--dataset", str(sprsound_root), "--from", str(run), "--output_dir", str(run),
             "--do_train", "false", "--eval_split", "inter_test"]

    rescored = run_train(score)["results"]["inter_test"]  # fp32, as training scored it
    assert rescored["rows"] == removed["rows"] == 16
    assert rescored["confusion_matrix"] == removed["confusion_matrix"]
    assert rescored["score"] == pytest.approx(removed["score"], abs=1e-12)
    assert rescored["loss"] == pytest.approx(removed["loss"], rel=1e-5)  # moves with any weight, unlike a 16-row Score

    scored = run_train(score + ["--bf16", "--use_cpu"])
    assert scored["global_step"] == summary["global_step"] == 3 and scored["train_rows"] == summary["train_rows"]
    assert scored["device"] == summary["device"] and scored["results"]["inter_test"]["device"].endswith(", bf16")
    assert scored["results"]["inter_test"]["rows"] == 16
    assert scored["results"]["inter_test"]["loss"] == pytest.approx(removed["loss"], rel=0.05)  # bf16: ~3 digits
    written = json.loads((run / "results.json").read_text())
    assert written["global_step"] == 3 and set(written["results"]) == {"validation", "inter_test"}
    assert written["results"]["inter_test"]["score"] == scored["results"]["inter_test"]["score"]
    assert (run / "model.safetensors").read_bytes() == weights
    assert "| inter_test |" in (run / "README.md").read_text()
    with pytest.raises(ValueError, match="--from"):
        run_train(["--task", "12", "--dataset", str(sprsound_root), "--output_dir", str(tmp_path / "x"), "--do_train", "false"])


def test_record_task_learns_frames_from_event_timestamps(sprsound_root, tmp_path):
    output = tmp_path / "task22"
    run_train(["--task", "22", "--dataset", str(sprsound_root), "--output_dir", str(output), "--eval_split", "none",
               "--max_train_samples", "16", "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
               "--load_best_model_at_end", "false", "--record_pair_probability", "0.5"])
    config = json.loads((output / "config.json").read_text())
    assert config["num_frame_labels"] == 4 and config["id2label"]["4"] == "Poor Quality"
    summary = json.loads((output / "results.json").read_text())
    assert summary["record_crop_probability"] == 0.5 and summary["record_pair_probability"] == 0.5
    assert summary["selection"] is None  # --load_best_model_at_end false: the card does not claim a best epoch
    card = (output / "README.md").read_text()
    assert "weights of the last training step" in card and "Selection (" not in card


def test_frame_targets_follow_the_events():
    extractor = RespSTFFeatureExtractor(hop_length=256, n_frames=512, padding_mode="zero")
    events = [{"start_s": 0.5, "end_s": 1.5, "type": "Normal"}, {"start_s": 2.0, "end_s": 3.0, "type": "Fine Crackle"},
              {"start_s": 4.0, "end_s": 5.0, "type": "Wheeze+Crackle"}]
    targets = training.frame_targets(events, duration_s=9.2, extractor=extractor)
    per_second = extractor.sampling_rate / extractor.hop_length
    assert targets[int(1.0 * per_second)] == 0  # Normal
    assert targets[int(2.5 * per_second)] == 2  # DAS
    assert targets[int(4.5 * per_second)] == 3  # CAS & DAS
    assert targets[int(1.75 * per_second)] == -100  # between events: ignored
    assert (targets[int(9.3 * per_second):] == -100).all()


@pytest.fixture(scope="module")
def record_scalograms(sprsound_root):
    """Ten real training recordings (two of each record class, none longer than the clip) as the
    featurized rows Tasks 2-1 and 2-2 train on, by label column."""
    records = hub_dataset.load_sprsound(sprsound_root, level="record", splits=["train"], decode=False, progress=False)["train"]
    labels, durations = records["task22"], records["duration_s"]
    picked = []
    for label in range(len(task_labels(22))):
        picked += [i for i, (row_label, seconds) in enumerate(zip(labels, durations)) if row_label == label and seconds < 15][:2]
    extractor = RespSTFFeatureExtractor(hop_length=128, n_frames=960, padding_mode="zero")
    return {column: training.featurize(records.select(picked), extractor, column, with_frames=True).with_format("torch")
            for column in ("task21", "task22")}


def test_record_crops_are_labelled_by_the_events_inside(record_scalograms):
    records = record_scalograms["task22"]
    names = task_labels(22)
    crops = training.RecordCrops(records, "22", names, probability=1.0, min_frames=188, min_event_frames=16)
    torch.manual_seed(0)
    shortened = 0
    for _ in range(5):
        for index in range(len(records)):
            whole, crop = records[index], crops[index]
            length, size = int(whole["attention_mask"].sum()), int(crop["attention_mask"].sum())
            assert crop["attention_mask"][:size].all() and not crop["attention_mask"][size:].any()
            if names[int(whole["labels"])] == "Poor Quality":  # no events: always whole
                assert size == length and int(crop["labels"]) == int(whole["labels"])
                continue
            if size == length:
                continue
            shortened += 1
            assert size >= 188
            # the window is a stretch of the recording's own scalogram, moved to the start
            assert stretch_at_start(whole, crop["input_features"][..., :size]) == size
            assert not crop["input_features"][..., size:].any()
            labelled = crop["frame_labels"][crop["frame_labels"] >= 0]
            assert (crop["frame_labels"][size:] == -100).all() and len(labelled) >= 16
            assert names[int(crop["labels"])] == record_label_from_frame_labels(labelled.unique().tolist())
            # a window never invents a kind of sound the recording does not have
            whole_label = names[int(whole["labels"])]
            assert set(labelled.tolist()) <= set(whole["frame_labels"][whole["frame_labels"] >= 0].tolist())
            if whole_label == "Normal":
                assert names[int(crop["labels"])] == "Normal"
    assert shortened > 10
    never = training.RecordCrops(records, "22", names, probability=0.0, min_frames=188, min_event_frames=16)
    assert all(torch.equal(never[i]["input_features"], records[i]["input_features"]) for i in range(len(records)))
    batch = never.__getitems__([3, 0])  # the data loader's batched read
    assert [int(item["labels"]) for item in batch] == [int(records[3]["labels"]), int(records[0]["labels"])]
    assert torch.equal(batch[0]["frame_labels"], records[3]["frame_labels"])


def test_record_crop_pairs_join_two_recordings_and_label_from_both(record_scalograms):
    records = record_scalograms["task22"]
    names = task_labels(22)
    pairs = training.RecordCrops(records, "22", names, probability=1.0, min_frames=188, min_event_frames=16, pair_probability=1.0)
    torch.manual_seed(2)
    joined, made_up = 0, set()
    for _ in range(3):
        for index in range(len(records)):
            whole, crop = records[index], pairs[index]
            size = int(crop["attention_mask"].sum())
            assert crop["attention_mask"][:size].all() and not crop["attention_mask"][size:].any()
            if names[int(whole["labels"])] == "Poor Quality":
                assert torch.equal(crop["input_features"], whole["input_features"])
                continue
            first = stretch_at_start(whole, crop["input_features"][..., :size])
            assert first >= 188  # a window of this recording comes first
            if first < size:  # then a window of another training recording
                rest = crop["input_features"][..., first:size]
                assert any(stretch_at_start(other, rest) == size - first for other in records)
                joined += 1
            labelled = crop["frame_labels"][crop["frame_labels"] >= 0]
            label = names[int(crop["labels"])]
            assert label == record_label_from_frame_labels(labelled.unique().tolist())
            if label != names[int(whole["labels"])]:
                made_up.add(label)
    assert joined > 10
    assert "CAS & DAS" in made_up  # e.g. one child's wheeze joined to another's crackle


def test_record_crops_for_task21_name_the_coarse_class(record_scalograms):
    records = record_scalograms["task21"]
    names = task_labels(21)
    crops = training.RecordCrops(records, "21", names, probability=1.0, min_frames=188, min_event_frames=16)
    torch.manual_seed(1)
    for _ in range(3):
        for index in range(len(records)):
            crop = crops[index]
            labelled = crop["frame_labels"][crop["frame_labels"] >= 0]
            if len(labelled):  # 2-1 folds the four kinds into Normal / Adventitious
                expected = "Normal" if record_label_from_frame_labels(labelled.unique().tolist()) == "Normal" else "Adventitious"
                assert names[int(crop["labels"])] == expected
            else:
                assert names[int(crop["labels"])] == "Poor Quality"


def test_class_weight_schemes():
    names = ["Normal", "Wheeze", "Fine Crackle"]
    labels = [0] * 6 + [1] + [2] * 2
    score = training.class_weights(labels, names, "score")
    # Normal and the rest weigh the same in total, each non-Normal sample alike (as in SE)
    assert 6 * score[0] == pytest.approx(3 * score[1], abs=1e-3) and score[1] == score[2]
    assert np.mean(score) == pytest.approx(1, abs=1e-3)
    inverse_sqrt = np.array(training.class_weights(labels, names, "weights"))
    expected = 1 / np.sqrt([6, 1, 2])
    assert inverse_sqrt == pytest.approx(expected / expected.mean(), abs=1e-3)
    # a dataset without a "Normal" class: class 0 plays its part, as in the metric
    assert training.class_weights(labels, ["Healthy", "COPD", "URTI"], "score") == score


def test_record_label_from_frame_labels():
    assert record_label_from_frame_labels([0]) == "Normal"
    assert record_label_from_frame_labels([0, 1]) == "CAS"
    assert record_label_from_frame_labels([2, 0]) == "DAS"
    assert record_label_from_frame_labels([1, 2]) == record_label_from_frame_labels([3]) == "CAS & DAS"
    with pytest.raises(ValueError, match="at least one labelled frame"):
        record_label_from_frame_labels([])


@pytest.mark.parametrize("option, value, message", [
    ("--record_crop_probability", "1.5", "record_crop_probability must be in"),
    ("--record_crop_min_seconds", "0", "record_crop_min_seconds must be positive"),
    ("--record_pair_probability", "-0.1", "record_pair_probability must be in"),
])
def test_record_crop_settings_out_of_range_are_rejected(sprsound_root, tmp_path, option, value, message):
    with pytest.raises(ValueError, match=message):
        run_train(["--task", "22", "--dataset", str(sprsound_root), "--output_dir", str(tmp_path), option, value])


def test_resume_after_kill_ends_with_the_same_steps(sprsound_root, tmp_path):
    """Killed mid-run (maybe in the middle of a save), `--resume_from_checkpoint last` continues from the newest
    complete checkpoint (a folder whose save did not finish is passed over) and ends with the same steps. The
    deadlines only catch a hang: on 2 busy cores the first saves can take minutes."""
    output = tmp_path / "resume"
    args = [sys.executable, str(REPO_ROOT / "train.py"), "--task", "11", "--dataset", str(sprsound_root),
            "--output_dir", str(output), "--eval_split", "none", "--max_train_samples", "64", "--max_steps", "30",
            "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "steps", "--eval_steps", "2",
            "--save_total_limit", "3", "--early_stopping_patience", "0", *QUICK]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    try:
        while not any(step >= 4 for step in training.complete_checkpoints(output)):
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no complete checkpoint of step 4 or later within 900 s"
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)  # killed mid-epoch, like a lost machine: maybe in the middle of a save
        process.wait()
    assert not (output / "results.json").exists()
    (output / "checkpoint-29").mkdir(exist_ok=True)  # a save the kill cut short: no trainer_state.json
    step, last = max(training.complete_checkpoints(output).items())  # read after the kill: nothing moves any more
    trained_before = json.loads((last / "trainer_state.json").read_text())["stateful_callbacks"]["TrainingClock"]["args"]["seconds_before"]
    assert trained_before > 0
    completed = subprocess.run(args + ["--resume_from_checkpoint", "last"], env=env, capture_output=True, text=True,
                               timeout=1800)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"Resuming from {last}" in completed.stderr and "checkpoint-29 is incomplete" in completed.stderr
    summary = json.loads((output / "results.json").read_text())
    assert summary["global_step"] == 30
    # Resumed, not restarted: the first logged step is the one after the checkpoint (8 steps per epoch).
    first_epoch = float(re.search(r"'epoch': '?([0-9.]+)", completed.stdout).group(1))  # transformers 5 logs strings
    assert first_epoch == pytest.approx((step + 1) / 8, abs=0.01)
    # The training time of both segments, not only the last one's.
    last_segment = float(re.search(r"'train_runtime': '?([0-9.]+)", completed.stdout).group(1))
    assert summary["train_runtime_s"] == pytest.approx(trained_before + last_segment, abs=0.01)


def test_push_to_hub_uploads_a_complete_folder_whose_card_names_the_repo(task12_run, sprsound_root, tmp_path, monkeypatch):
    """`--push_to_hub` (the Hub faked: no network here): the repo is created, the card's snippet loads the id the Hub
    gave back (namespace included), and what is uploaded is a complete folder without Trainer checkpoints."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    calls = {}

    def create_repo(repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)
        return huggingface_hub.RepoUrl(f"https://huggingface.co/someone/{repo_id}")

    def upload_folder(*, repo_id, folder_path, ignore_patterns, **kwargs):
        folder = Path(folder_path)
        files = [str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()]
        calls["upload_folder"] = (repo_id, set(filter_repo_objects(files, ignore_patterns=ignore_patterns)), kwargs)

    monkeypatch.setattr(training.card, "create_repo", create_repo)
    monkeypatch.setattr(training.card, "upload_folder", upload_folder)
    monkeypatch.setattr(training.card.hub_constants, "HF_HUB_OFFLINE", False)  # the tests run offline; the Hub is faked
    monkeypatch.setattr(training.card, "get_token", lambda: "hf_fake")
    output = tmp_path / "pushed"
    run_train(["--task", "12", "--dataset", str(sprsound_root), "--from", str(task12_run), "--output_dir", str(output),
               "--eval_split", "none", "--max_train_samples", "8", "--max_steps", "1", "--eval_strategy", "steps",
               "--save_strategy", "steps", "--eval_steps", "1", "--save_steps", "1",
               "--push_to_hub", "--hub_model_id", "respstf-task12", "--hub_private_repo", "true"])
    assert calls["create_repo"] == ("respstf-task12", {"exist_ok": True, "private": True, "token": None})
    repo_id, uploaded, upload_kwargs = calls["upload_folder"]
    assert repo_id == "someone/respstf-task12" and upload_kwargs["revision"] is None
    assert (output / "checkpoint-1").is_dir() and not any(name.startswith("checkpoint-") for name in uploaded)
    assert (output / "predictions_validation.npz").is_file() and "predictions_validation.npz" not in uploaded
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "configuration_respstf.py", "modeling_respstf.py",
            "feature_extraction_respstf.py", "cwt.py", "README.md", "results.json"} <= uploaded
    assert not [name for name in uploaded if name.endswith((".bin", ".pt", ".pth", ".pkl"))], "no pickles on the Hub"
    assert 'pipeline("audio-classification", model="someone/respstf-task12", trust_remote_code=True)' in (output / "README.md").read_text()
    card = huggingface_hub.ModelCard.load(output / "README.md")
    assert card.data.model_name == "someone/respstf-task12" and [e.dataset_split for e in card.data.eval_results] == ["validation"]


@pytest.fixture()
def icbhi_folder(tmp_path) -> Path:
    """A real new dataset: the ICBHI cycles as a metadata.csv of file,label,start,end,patient_id (audio referenced in place)."""
    if not ICBHI.is_dir():
        pytest.skip(f"the ICBHI sample is not at {ICBHI}")
    rows = []
    for annotation in sorted((ICBHI / "audio_and_txt_files").glob("*.txt")):
        for line in annotation.read_text().split("\n"):
            if line.strip():
                start, end, crackles, wheezes = line.split("\t")
                label = hub_dataset.icbhi_cycle_label(int(crackles), int(wheezes))
                rows.append({"file": str(annotation.with_suffix(".wav")), "label": label, "start": start, "end": end,
                             "patient_id": annotation.name.split("_")[0]})
    with open(tmp_path / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path


@pytest.fixture()
def icbhi_release(tmp_path) -> Path:
    """The ICBHI sample in the database's own layout, its split file rewritten so that the sample's four
    patients all train (the official split puts only patient 103 of them in train: too few to carve validation)."""
    if not ICBHI.is_dir():
        pytest.skip(f"the ICBHI sample is not at {ICBHI}")
    root = tmp_path / "icbhi"
    root.mkdir()
    split_file = hub_dataset.icbhi.SPLIT_FILE
    for path in ICBHI.iterdir():
        if path.name != split_file:
            (root / path.name).symlink_to(path)
    stems = [line.split()[0] for line in (ICBHI / split_file).read_text().splitlines() if line.strip()]
    (root / split_file).write_text("".join(f"{stem}\ttrain\n" for stem in stems))
    return root


@pytest.mark.parametrize(
    "folder, labels",
    [("icbhi_folder", {"Normal", "Crackle", "Wheeze"}),  # a metadata.csv: the classes present
     ("icbhi_release", set(hub_dataset.ICBHI_CYCLE_LABELS))],  # the ICBHI layout, read by load_icbhi: its four classes
)
def test_finetune_on_a_new_dataset_replaces_the_head(task12_run, folder, labels, request, tmp_path):
    """The backbone comes from the parent: at learning rate 0 every backbone parameter is the parent's (the
    BatchNorm running statistics, buffers, still follow the new data); the classifier is new, one output per class."""
    output = tmp_path / "icbhi-finetune"
    summary = run_train(["--dataset", str(request.getfixturevalue(folder)), "--from", str(task12_run), "--ignore-mismatched",
                         "--output_dir", str(output), "--eval_split", "none", "--max_steps", "2", "--learning_rate", "0",
                         "--validation_fraction", "0.3", "--eval_strategy", "steps", "--save_strategy", "steps",
                         "--eval_steps", "2", "--save_steps", "2"])
    config = json.loads((output / "config.json").read_text())
    assert config["id2label"]["0"] == "Normal" and set(config["id2label"].values()) == labels
    assert summary["from"] == str(task12_run) and summary["global_step"] == 2
    parent, child = load_file(task12_run / "model.safetensors"), load_file(output / "model.safetensors")
    backbone = [name for name in parent if name.startswith("respstf.")
                and not name.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert "respstf.stem.0.weight" in backbone and len(backbone) > 50
    for name in backbone:
        assert torch.equal(child[name], parent[name]), name
    assert parent["classifier.weight"].shape[0] == 7 and child["classifier.weight"].shape[0] == len(labels)
    assert not torch.equal(child["classifier.weight"][:2], parent["classifier.weight"][:2])  # a new head, not the parent's rows
    card = (output / "README.md").read_text()  # a new dataset's card: no SPRSound test split nor paper to compare with
    assert "a custom respiratory-sound dataset" in card and "inter_test" not in card and "- sprsound\n" not in card
    # ICBHI is 4 kHz and 44.1 kHz: the extractor resampled it to the checkpoint's 8 kHz front end.
    assert json.loads((output / "preprocessor_config.json").read_text())["sampling_rate"] == 8000


def test_recipe_chain_and_the_runs_each_seed_trains(tmp_path):
    """benchmarks/sprsound_score.py's recipe: 12 -> 22-base -> 21 -> 22 (and 12 -> 11, 12 -> the event detector). Shipping 2-2 from nothing
    trains the whole chain; with --seeds, the shipped runs and the step between them train per seed, a shipped
    run that is only a parent with the first seed; runs already trained are not retrained, nor their parents."""
    import argparse
    from benchmarks import sprsound_score

    parents = {run: parent for run, _, parent, _ in sprsound_score.RECIPE}
    assert parents == {"task12": None, "task11": "task12", "task22-base": "task12", "task21": "task22-base", "task22": "task21",
                       "events": "task12"}
    args = argparse.Namespace(runs=str(tmp_path), tasks=["22"], seeds=[7, 8], retrain=False)
    assert sprsound_score.runs_needed(args) == {"task22", "task21", "task22-base", "task12"}
    assert sprsound_score.runs_needed(argparse.Namespace(**{**vars(args), "tasks": ["events"]})) == {"events", "task12"}
    assert [sprsound_score.seeds_of(run, args) for run in ("task22", "task22-base", "task21", "task12")] == [[7, 8], [7, 8], [7], [7]]
    assert sprsound_score.run_dirs("task21", args) == [tmp_path / "task21"]
    for seed in (7, 8):  # both seeds of the shipped 2-2 on record: nothing else is needed
        (tmp_path / f"task22-seed{seed}").mkdir()
        (tmp_path / f"task22-seed{seed}" / "results.json").write_text(json.dumps({"results": {"validation": {"score": 0.5}}}))
    assert sprsound_score.runs_needed(args) == {"task22"}
    (tmp_path / "task22-seed8" / "results.json").write_text(json.dumps({"results": {}}))  # killed before it was scored
    assert sprsound_score.runs_needed(args) == {"task22", "task21", "task22-base", "task12"}
    # A step trained once as a single run (a folder, not a link to a seed's run) is read back as it is.
    (tmp_path / "task22-base").mkdir()
    (tmp_path / "task22-base" / "results.json").write_text(json.dumps({"results": {"validation": {"score": 0.5}}}))
    assert sprsound_score.seeds_of("task22-base", args) == [7]
    assert sprsound_score.runs_needed(args) == {"task22", "task21", "task22-base"}
    args.retrain = True
    assert sprsound_score.seeds_of("task22-base", args) == [7, 8]


def test_recipe_says_which_runs_it_will_train_before_it_starts(tmp_path, monkeypatch, capsys):
    """--copy_to with --runs pointing where no run is (a typo, a fresh checkout) trains the whole recipe: said first."""
    from benchmarks import sprsound_score

    def no_training(*args):
        raise SystemExit("stopped before training")

    monkeypatch.setattr(sprsound_score, "run_task", no_training)
    with pytest.raises(SystemExit, match="stopped before training"):
        sprsound_score.main(["--runs", str(tmp_path / "typo"), "--copy_to", str(tmp_path / "copies")])
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{tmp_path / 'typo'}: to train (no finished results.json, or --retrain): task12, task11, task22-base, task21, "
        "task22; read back: none")


def test_seeds_side_by_side_at_most_n_at_once_and_all_finish_before_a_failure_stops_the_recipe(tmp_path, monkeypatch, capsys):
    """--side_by_side N: at most N seeds' train.py run at a time; one that fails does not cut the others short,
    and the recipe then stops naming every failed seed's log."""
    import argparse
    from benchmarks import sprsound_score

    def failing_argv(output_dir, task, parent, extra, seed, eval_split, args):  # rejected before any data is read
        return ["--task", f"9{seed}", "--output_dir", str(output_dir)]

    monkeypatch.setattr(sprsound_score, "train_run_argv", failing_argv)
    seed_dirs = {seed: tmp_path / f"task11-seed{seed}" for seed in (1, 2, 3)}
    with pytest.raises(SystemExit, match=r"seed 1 \(see .*task11-seed1/train.log\), seed 2 \(see .*seed 3 \(see .*task11-seed3/train.log\)"):
        sprsound_score.train_side_by_side(seed_dirs, "11", "task12", [], 2, argparse.Namespace())
    for seed, seed_dir in seed_dirs.items():
        assert f"9{seed}" in (seed_dir / "train.log").read_text()  # each ran to its own error
    printed = capsys.readouterr().out.splitlines()
    launched = [i for i, line in enumerate(printed) if line.startswith("python train.py")]
    failures = [i for i, line in enumerate(printed) if line.startswith("seed ")]
    assert len(launched) == len(failures) == 3
    assert launched[:2] == [0, 1] and launched[2] > failures[0]  # the third starts once a slot is free
    with pytest.raises(SystemExit):
        sprsound_score.main(["--runs", str(tmp_path), "--side_by_side", "0"])
    assert "--side_by_side is how many seeds train at a time (1 or more), got 0" in capsys.readouterr().err


def test_recipe_keeps_the_best_of_the_seeds_and_their_soup(task12_run, sprsound_root, tmp_path):
    """benchmarks/sprsound_score.py --seeds: one real run per seed, fine-tuned from one parent, and their
    weight average (the soup); runs/task11 links the candidate with the best validation Score, and only that
    one is scored on the eval split."""
    from benchmarks import sprsound_score

    runs, results = tmp_path / "runs", tmp_path / "RESULTS.md"
    shutil.copytree(task12_run, runs / "task12")
    sprsound_score.main(["--dataset", str(sprsound_root), "--runs", str(runs), "--tasks", "11", "--seeds", "3", "4", "--side_by_side", "2",
                         "--results", str(results), "--max_train_samples", "16", "--max_steps", "2",
                         "--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", "2", "--save_steps", "2", *QUICK])
    names = {3: "task11-seed3", 4: "task11-seed4", "soup": "task11-soup"}
    candidates = {key: json.loads((runs / name / "results.json").read_text()) for key, name in names.items()}
    kept = max(names, key=lambda key: candidates[key]["results"]["validation"]["score"])  # a tie keeps the first
    assert (runs / "task11").is_symlink() and os.readlink(runs / "task11") == names[kept]
    for key, summary in candidates.items():
        assert summary["from"] == str(runs / "task12")
        assert set(summary["results"]) == ({"validation", "inter_test"} if key == kept else {"validation"})
    assert candidates[3]["global_step"] == candidates[4]["global_step"] == 2
    for seed in (3, 4):  # trained at the same time, each in its own process
        assert "validation: Score" in (runs / names[seed] / "train.log").read_text() and candidates[seed]["wall_s"] > 0
    assert candidates["soup"]["soup_of"] == [names[3], names[4]] and candidates["soup"]["global_step"] == 4

    weights = {key: load_file(runs / name / "model.safetensors") for key, name in names.items()}
    for name, tensor in weights["soup"].items():
        expected = (weights[3][name] + weights[4][name]) / 2 if tensor.is_floating_point() else weights[3][name]
        torch.testing.assert_close(tensor, expected, msg=name)
    assert not torch.equal(weights[3]["classifier.weight"], weights[4]["classifier.weight"])  # two different runs

    selection = json.loads((runs / "task11" / "results.json").read_text())["seed_selection"]
    assert selection["kept"] == kept and set(selection["validation_score_by_seed"]) == {"3", "4"}
    assert selection["soup_validation_score"] == candidates["soup"]["results"]["validation"]["score"]
    card, table = (runs / "task11" / "README.md").read_text(), results.read_text()
    if kept == "soup":
        assert "then the mean of their weights" in card and "Task 1-1: the seeds' soup (mean weights) kept" in table
    else:
        assert f"Selection (best evaluation; seed {kept} of seeds 3, 4)" in card and f"Task 1-1: seed {kept} kept" in table
    assert "and their soup (" in table

    # Called again, everything is read back; a candidate that now validates best takes the link, and the one
    # kept before no longer claims the selection in its results or card.
    runner_up = 4 if kept == 3 else 3
    path = runs / names[runner_up] / "results.json"
    summary = json.loads(path.read_text())
    summary["results"]["validation"]["score"] = 1.0
    path.write_text(json.dumps(summary))
    sprsound_score.main(["--dataset", str(sprsound_root), "--runs", str(runs), "--tasks", "11", "--seeds", "3", "4",
                         "--results", str(results), *QUICK])
    assert os.readlink(runs / "task11") == names[runner_up]
    assert "seed_selection" not in json.loads((runs / names[kept] / "results.json").read_text())
    assert "Selection (best evaluation)" in (runs / names[kept] / "README.md").read_text()  # --eval_strategy steps
    # Other seeds, other soup: it is averaged again from the seeds now listed, not read back.
    sprsound_score.main(["--dataset", str(sprsound_root), "--runs", str(runs), "--tasks", "11", "--seeds", "4", "3",
                         "--results", str(results), *QUICK])
    assert json.loads((runs / names["soup"] / "results.json").read_text())["soup_of"] == [names[4], names[3]]

    # runs/task12 is a trained run's folder, where the link to a kept seed would go: refused before training.
    with pytest.raises(SystemExit, match="move it aside"):
        sprsound_score.main(["--runs", str(runs), "--tasks", "12", "--seeds", "1", "2", "--retrain",
                             "--results", str(results)])


def test_every_sprsound_task_validates_on_the_same_patients(sprsound_root, tmp_path):
    # The recipe fine-tunes 12 -> 11, 12 -> 22 -> 21: a validation patient of one task must never be a
    # training patient of another, or model selection sees data the parent model trained on.
    patients = {}
    for task in ("12", "11", "22", "21"):
        data_args, *_ = train.parse_args(["--task", task, "--dataset", str(sprsound_root), "--output_dir", str(tmp_path)])
        source = DatasetSource.detect(data_args.dataset)
        data = training.load_training_data(source, task, None, "error")
        label_column, _ = training.resolve_label_column(data, source, None, task)
        carved = training.carve_validation(data["train"], source, label_column, data_args.validation_fraction,
                                           data_args.split_seed)
        patients[task] = set(carved["train"]["patient_id"]), set(carved["validation"]["patient_id"])
    record_validation = patients["22"][1]
    assert 0.10 < len(record_validation) / (len(record_validation) + len(patients["22"][0])) < 0.20
    for task, (train_patients, validation_patients) in patients.items():
        assert not train_patients & record_validation, task
        assert validation_patients <= record_validation, task  # events: Poor Quality patients have none
    assert patients["21"][1] == record_validation


# -- errors before training starts --------------------------------------------------------------

def test_unknown_task_is_rejected(sprsound_root, tmp_path):
    with pytest.raises(ValueError, match="Unknown task '13'"):
        run_train(["--task", "13", "--dataset", str(sprsound_root), "--output_dir", str(tmp_path)])


def test_label_outside_the_task_is_rejected(tmp_path):
    recording = SPRSOUND / "example_original_wav" / "65097128_5.6_1_p1_2242.wav"
    if not recording.is_file():
        pytest.skip("shared SPRSound example folder absent")
    (tmp_path / "metadata.csv").write_text(f"file,label\n{recording},Normal\n{recording},Squawk\n")
    with pytest.raises(ValueError, match="Squawk"):
        run_train(["--task", "12", "--dataset", str(tmp_path), "--output_dir", str(tmp_path / "out")])


def test_split_that_would_be_empty_is_rejected(tmp_path):
    """One patient only: a patient-disjoint validation split would leave one side empty."""
    recording = SPRSOUND / "example_original_wav" / "65097128_5.6_1_p1_2242.wav"
    if not recording.is_file():
        pytest.skip("shared SPRSound example folder absent")
    (tmp_path / "metadata.csv").write_text(
        f"file,label,patient_id\n{recording},Normal,p1\n{recording},Wheeze,p1\n"
    )
    with pytest.raises(ValueError, match="at least 2 patients"):
        run_train(["--dataset", str(tmp_path), "--output_dir", str(tmp_path / "out")])


def test_icbhi_with_one_training_patient_is_rejected(tmp_path):
    """The unaltered ICBHI sample is recognised (its official split), but its train split holds one patient."""
    if not ICBHI.is_dir():
        pytest.skip(f"the ICBHI sample is not at {ICBHI}")
    with pytest.raises(ValueError, match=r"validation split from the train split of .*icbhi.*at least 2 patients.*found 1: \['103'\]"):
        run_train(["--dataset", str(ICBHI), "--eval_split", "test", "--output_dir", str(tmp_path / "out")])


@pytest.mark.parametrize("source, message", [
    ("{tmp}/missing", "no folder 'missing' in "),  # a typo in a local path, not a failed Hub download
    ("{tmp}", "has no config.json"),
    ("/no/such/checkpoint", "no such checkpoint folder, and not a Hub repo id"),
    ("{tmp}/results.json", "is a file"),
])
def test_unusable_from_is_rejected_before_the_data_is_read(source, message, tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=message):
        run_train(["--task", "12", "--dataset", str(tmp_path / "no-data"), "--from", source.format(tmp=tmp_path),
                   "--output_dir", str(tmp_path / "out")])


def test_checkpoint_with_other_labels_needs_ignore_mismatched(task12_run, sprsound_root, tmp_path):
    with pytest.raises(ValueError, match="--ignore-mismatched"):
        run_train(["--task", "11", "--dataset", str(sprsound_root), "--from", str(task12_run), "--output_dir", str(tmp_path)])


def test_help_is_readable():
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0
    for option in ("--task", "--dataset", "--from", "--ignore-mismatched", "--imbalance", "--preset", "--eval_split"):
        assert option in completed.stdout


# -- a new dataset of one's own recordings ---------------------------------------------------------

EXAMPLES = SPRSOUND / "example_original_wav"


def example_recordings(per_patient: int = 3) -> list[tuple[Path, str, str]]:
    """Real SPRSound example recordings as (file, record class, patient): up to ``per_patient`` Normal and as many
    adventitious ones per patient."""
    if not EXAMPLES.is_dir():
        pytest.skip("shared SPRSound example folder absent")
    picked, counts = [], {}
    for annotation in sorted(EXAMPLES.glob("*.json")):
        patient, label = annotation.name.split("_")[0], json.loads(annotation.read_text())["record_annotation"]
        key = (patient, label == "Normal")
        if counts.get(key, 0) < per_patient:
            counts[key] = counts.get(key, 0) + 1
            picked.append((annotation.with_suffix(".wav"), label, patient))
    return picked


@pytest.fixture(scope="module")
def healthy_folder(tmp_path_factory) -> Path:
    """A new dataset as a user would write it: metadata.csv ``file,label,patient_id,split`` with labels Healthy /
    Adventitious (alphabetically, Adventitious comes first) and its own ``test`` split; whole recordings (5-15 s)."""
    root = tmp_path_factory.mktemp("healthy")
    test_patients = {"65100087", "65101170"}
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "patient_id", "split"])
        for file, label, patient in example_recordings():
            writer.writerow([file, "Healthy" if label == "Normal" else "Adventitious", patient,
                             "test" if patient in test_patients else "train"])
    return root


def test_readme_finetune_on_a_new_folder_scores_its_test_split_with_its_healthy_class(task12_run, healthy_folder, tmp_path, caplog):
    """The README's command, no --eval_split: the folder's `test` split is scored; the Score's normal class is
    Healthy (not class 0, Adventitious); checkpoints follow an evaluation schedule given alone; whole recordings
    cut to the event model's clip are reported."""
    output = tmp_path / "mine"
    with caplog.at_level("INFO", logger="respstf"):
        summary = run_train(["--dataset", str(healthy_folder), "--from", str(task12_run), "--ignore-mismatched",
                             "--output_dir", str(output), "--max_steps", "1", "--eval_strategy", "steps", "--eval_steps", "1",
                             "--validation_fraction", "0.5"])
    assert summary["labels"] == ["Adventitious", "Healthy"] and summary["normal_label"] == "Healthy"
    assert set(summary["results"]) == {"validation", "test"} and (output / "confusion_test.png").is_file()
    assert (output / "checkpoint-1").is_dir() and summary["selection"] == "best evaluation"
    card = (output / "README.md").read_text()
    assert "SP) is the recall of `Healthy`" in card and "| test |" in card
    cropped = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "centre-cropped" in r.getMessage()]
    assert any(message.startswith("train: ") and "longer than the model's 2.05 s clip" in message for message in cropped)
    assert "--from checkpoints/sprsound-task22" in cropped[0]


def test_metric_uses_the_normal_class_by_name():
    """Healthy at index 1: a model that always says Healthy has SP 1 and SE 0, not the other way round."""
    from transformers import EvalPrediction

    compute_metrics = training.make_compute_metrics(["Adventitious", "Healthy"], "Healthy")
    logits = np.tile([0.0, 1.0], (4, 1))
    result = compute_metrics(EvalPrediction(predictions=logits, label_ids=np.array([0, 0, 1, 1])))
    assert result["sp"] == 1.0 and result["se"] == 0.0


def test_normal_label_is_found_or_must_be_named(healthy_folder, tmp_path):
    assert training.resolve_normal_label(["Adventitious", "Healthy"]) == "Healthy"
    assert training.resolve_normal_label(["Crackle", "Normal", "normal-ish"]) == "Normal"
    assert training.resolve_normal_label(["crackle", "NORMAL"]) == "NORMAL"
    assert training.resolve_normal_label(["COPD", "URTI"], "URTI") == "URTI"
    for labels, message in ((["COPD", "URTI"], "None is named Normal or Healthy; pass --normal_label"),
                            (["healthy", "NORMAL"], "Both")):
        with pytest.raises(ValueError, match=message):
            training.resolve_normal_label(labels)
    with pytest.raises(ValueError, match="has a class named 'Normal', which the Score always takes"):
        training.resolve_normal_label(["Normal", "No finding"], "No finding")
    assert training.class_weights([0, 1, 1, 1], ["Adventitious", "Healthy"], "score") == [1.5, 0.5]  # Healthy is the normal half
    # Checked against the folder's labels before any scalogram is computed.
    with pytest.raises(ValueError, match=r"--normal_label 'Normal' is not one of the dataset's labels \['Adventitious', 'Healthy'\]"):
        run_train(["--dataset", str(healthy_folder), "--normal_label", "Normal", "--output_dir", str(tmp_path)])


def test_folder_with_a_tasks_labels_trains_that_task(tmp_path):
    """--task 12 on a folder labelled with Task 1-2's classes: its `label` column is the task's."""
    rows = "".join(f"{file},{'Normal' if label == 'Normal' else 'Wheeze'},{patient}\n" for file, label, patient in example_recordings(1))
    (tmp_path / "metadata.csv").write_text("file,label,patient_id\n" + rows)
    source = DatasetSource.detect(tmp_path)
    data = source.load("12")
    assert training.resolve_label_column(data, source, None, "12") == ("label", task_labels(12))


def test_a_release_without_train_says_where_validation_comes_from(sprsound_root, tmp_path):
    """The BioCAS 2023 test folder on its own: train.py needs the train split even to score (validation is carved
    from it), and says how to score that split alone."""
    stem = next((sprsound_root / "test_json" / "inter_test_json").glob("*.json")).stem
    (tmp_path / "BioCAS2023/test2023_json").mkdir(parents=True)
    (tmp_path / "BioCAS2023/test2023_wav").mkdir()
    shutil.copy(sprsound_root / "test_json" / "inter_test_json" / f"{stem}.json", tmp_path / "BioCAS2023/test2023_json")
    shutil.copy(sprsound_root / "test_wav" / f"{stem}.flac", tmp_path / "BioCAS2023/test2023_wav")
    with pytest.raises(ValueError, match=r"has no 'train' split \(it has \['test2023'\]\): train.py carves its validation "
                                         r"split from train, also to score a model \(put the release's train folders .*"
                                         r"score_interval.py --models <model> --dataset \S+ --split test2023\."):
        run_train(["--task", "22", "--dataset", str(tmp_path), "--from", str(REPO_ROOT / "checkpoints/sprsound-task22"),
                   "--do_train", "false", "--eval_split", "test2023", "--output_dir", str(tmp_path / "scored")])

def test_eval_split_by_default_is_the_datasets_test_split_if_any(tmp_path):
    import datasets

    rows = datasets.Dataset.from_dict({"x": [1]})
    location = str(tmp_path)
    assert training.resolve_eval_splits(datasets.DatasetDict(train=rows, inter_test=rows, test=rows), None, location) == ["inter_test"]
    assert training.resolve_eval_splits(datasets.DatasetDict(train=rows, test=rows), None, location) == ["test"]
    assert training.resolve_eval_splits(datasets.DatasetDict(train=rows), None, location) == []
    with pytest.raises(ValueError, match=r"--eval_split 'inter_test' not in .*splits: \['train'\]"):
        training.resolve_eval_splits(datasets.DatasetDict(train=rows), "inter_test", location)


def test_selection_settings(tmp_path):
    def training_args(*argv):
        return train.parse_args(["--output_dir", str(tmp_path), *argv])[3]

    assert training_args().greater_is_better is True
    assert training_args("--metric_for_best_model", "loss").greater_is_better is False  # lower loss is better
    # An evaluation schedule given alone: checkpoints follow it, so the best can be kept.
    args = training_args("--eval_strategy", "steps", "--eval_steps", "10")
    assert (args.save_strategy, args.save_steps, args.load_best_model_at_end) == ("steps", 10, True)
    args = training_args("--eval-steps", "5")  # HfArgumentParser's dashed spelling counts too
    assert (args.eval_strategy, args.save_strategy, args.save_steps) == ("steps", "steps", 5)
    args = training_args("--eval_strategy", "no")
    assert args.load_best_model_at_end is False and args.save_strategy == "epoch"
    args = training_args("--eval_strategy", "steps", "--eval_steps", "4", "--save_strategy", "steps", "--save_steps", "8")
    assert args.save_steps == 8
    args = training_args("--eval_steps", "5", "--save_steps", "10")  # the save interval given, not its strategy
    assert (args.save_strategy, args.save_steps) == ("steps", 10)
    training.check_selection_metric("eval_loss", ["Normal", "Wheeze+Crackle"])
    training.check_selection_metric("recall_wheeze_crackle", ["Normal", "Wheeze+Crackle"])
    training.check_selection_metric("output_frame_f1", ["Normal", "CAS"], detection=True)  # an event detector's
    with pytest.raises(ValueError, match="output_frame_f1"):
        training.check_selection_metric("output_frame_f1", ["Normal", "CAS"])
    with pytest.raises(ValueError, match="'accuracy' is not a validation metric; expected one of score, se, sp"):
        training.check_selection_metric("accuracy", ["Normal", "Wheeze"])


def test_record_options_are_filled_in_or_reported_as_unused(caplog):
    data_args, model_args, *_ = train.parse_args(["--record_pair_probability", "0.3", "--frame_supervision", "false"])
    with caplog.at_level("WARNING", logger="respstf"):
        training.resolve_record_options(data_args, model_args, record_data=False)
    assert "--record_pair_probability, --frame_supervision ignored" in caplog.text
    assert (data_args.record_crop_probability, data_args.record_crop_min_seconds, data_args.record_pair_probability) == (0.5, 3.0, 0.3)
    assert model_args.frame_supervision is False
    caplog.clear()
    data_args, model_args, *_ = train.parse_args([])
    training.resolve_record_options(data_args, model_args, record_data=True)
    assert not caplog.text and model_args.frame_supervision is True
    # The event detector crops only when asked; its frame targets always come from the events.
    data_args, model_args, *_ = train.parse_args(["--record_pair_probability", "0.3", "--frame_supervision", "false"])
    with caplog.at_level("WARNING", logger="respstf"):
        training.resolve_record_options(data_args, model_args, record_data=False, detection=True)
    assert "--frame_supervision ignored" in caplog.text and "--record_pair_probability" not in caplog.text
    assert (data_args.record_crop_probability, data_args.record_pair_probability) == (0.0, 0.3)


@pytest.fixture()
def fake_checkpoint(tmp_path) -> Path:
    """A folder that passes --from's first check (it has a config.json): enough for errors raised before loading."""
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    return tmp_path / "ckpt"


@pytest.mark.parametrize("options, error, message", [
    (["--preset", "huge"], ValueError, "--preset must be 'small' or 'paper', got 'huge'"),
    (["--from", "{ckpt}", "--preset", "paper"], ValueError, "--preset: --from .* keeps its own size"),
    (["--max_train_samples", "0"], ValueError, "--max_train_samples must be 1 or more"),
    (["--max_eval_samples", "-1"], ValueError, "--max_eval_samples must be 1 or more"),
    (["--from", "{ckpt}", "--do_train", "false", "--ignore-mismatched"], ValueError, "scoring uses the checkpoint's own head"),
    (["--resume_from_checkpoint", "last"], FileNotFoundError, "no complete checkpoint-\\* folder in .*/out to resume from"),
    (["--resume_from_checkpoint", "true"], FileNotFoundError, "--resume_from_checkpoint true: no complete checkpoint-\\*"),
    (["--level", "frames"], ValueError, "--level must be 'event' or 'record'"),
    (["--label_smoothing_factor", "0.1"], ValueError, "--label_smoothing_factor 0.1: RespSTF's loss smooths labels itself"),
    (["--task", "12", "--level", "record"], ValueError, "task 12 is event level"),
    (["--task", "events", "--imbalance", "focal"], ValueError, "--imbalance focal: event detection weighs its frame classes"),
    (["--task", "22", "--adventitious_loss_weight", "1"], ValueError, "--adventitious_loss_weight 1: a frame loss of the event detector"),
    (["--task", "events", "--adventitious_loss_weight", "-1"], ValueError, "--adventitious_loss_weight must be 0 or more"),
    (["--validation_fraction", "0"], ValueError, "--validation_fraction 0 leaves no validation split .* --eval_strategy no"),
    (["--validation_fraction", "0", "--eval_strategy", "no", "--cv_fold", "1"], ValueError,
     "--validation_fraction 0 with --cv_fold 1: the fold's patients would be held out"),
    (["--push_to_hub", "--hub_model_id", "bad id!!"], ValueError, "'bad id!!' is not a Hub repo id"),
    (["--push_to_hub", "--hub_model_id", "org/name"], ValueError, "--push_to_hub needs the network, but HF_HUB_OFFLINE is set"),
])
def test_options_that_cannot_work_are_refused_before_the_data_is_read(options, error, message, fake_checkpoint, tmp_path):
    argv = [option.format(ckpt=fake_checkpoint) for option in options]
    with pytest.raises(error, match=message):
        train.main(["--dataset", str(tmp_path / "no-data"), "--output_dir", str(tmp_path / "out"), *argv])


def test_processes_that_would_train_alone_are_refused(tmp_path, monkeypatch):
    """torchrun on a machine without GPUs, without --use_cpu: transformers sets up no process group."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="launched as 2 processes .* pass --use_cpu true"):
        train.main(["--dataset", str(tmp_path / "no-data"), "--output_dir", str(tmp_path / "out")])


def test_front_end_options_with_from_must_be_the_checkpoints():
    """--from keeps the checkpoint's front end: its own values may be passed on (as the recipe does), others not."""
    checkpoint = str(REPO_ROOT / "checkpoints" / "sprsound-task12")

    def build(*options):
        _, model_args, feature_args, _ = train.parse_args(["--from", checkpoint, *options])
        return training.build_model_and_extractor(model_args, feature_args, "12", task_labels(12), "event", False)

    assert build("--fmax", "3900", "--n_scales", "64")[1].fmax == 3900
    with pytest.raises(ValueError, match="--fmin 100 differs from the checkpoint's 50: its convolutions learned"):
        build("--fmin", "100")


def test_a_new_dataset_takes_the_level_of_the_checkpoint_it_starts_from(tmp_path):
    assert training.resolve_level(None, None, str(REPO_ROOT / "checkpoints" / "sprsound-task22")) == "record"
    assert training.resolve_level(None, None, str(REPO_ROOT / "checkpoints" / "sprsound-task12")) == "event"
    assert training.resolve_level(None, None) == "event"
    # A checkpoint saved before its config recorded the level: told by how its extractor fits an input.
    old = tmp_path / "old-record-model"
    shutil.copytree(REPO_ROOT / "checkpoints" / "sprsound-task22", old)
    config = json.loads((old / "config.json").read_text())
    del config["annotation_level"], config["finetuning_task"]
    (old / "config.json").write_text(json.dumps(config))
    assert training.resolve_level(None, None, str(old)) == "record"


def test_training_clock_resumes_a_checkpoint_saved_without_it(tmp_path):
    """A checkpoint of a run that did not have the clock: the resumed run starts it at 0 and gives it the state
    entry the Trainer's next save looks up."""
    from transformers import TrainerState

    TrainerState().save_to_json(str(tmp_path / "trainer_state.json"))
    clock = training.TrainingClock.resumed_from(str(tmp_path))
    state = TrainerState.load_from_json(str(tmp_path / "trainer_state.json"))
    assert clock.seconds_before == 0 and "TrainingClock" not in state.stateful_callbacks
    clock.on_train_begin(None, state, None)
    assert state.stateful_callbacks["TrainingClock"]["args"]["seconds_before"] >= 0


def test_a_scored_split_sharing_patients_with_train_is_reported(caplog):
    """A new dataset's own test split may hold recordings of training patients: the run says its Score is not on
    unseen patients (SPRSound's inter_test and the carved validation never do)."""
    import datasets

    data = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"patient_id": ["a", "b", None]}),
        validation=datasets.Dataset.from_dict({"patient_id": ["c"]}),
        test=datasets.Dataset.from_dict({"patient_id": ["b", "d", None]}),
    )
    with caplog.at_level("WARNING", logger="respstf"):
        training.warn_shared_patients(data, ["validation", "test"])
    assert "test: 1 of its patients are also in train (e.g. b)" in caplog.text and "validation" not in caplog.text


def test_push_without_a_token_is_refused_before_training(monkeypatch, tmp_path):
    monkeypatch.setattr(training.card.hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(training.card, "get_token", lambda: None)
    with pytest.raises(ValueError, match="--push_to_hub needs a Hub token"):
        run_train(["--dataset", str(tmp_path / "no-data"), "--output_dir", str(tmp_path / "out"), "--push_to_hub"])


def test_record_level_from_an_event_model_needs_a_record_clip(task12_run, healthy_folder, tmp_path):
    """Whole recordings from an event checkpoint: without --n_frames they would be cut to its 2.05 s clip."""
    with pytest.raises(ValueError, match=r"is an event model: its 2.05 s clips .* e.g. --n_frames 960"):
        run_train(["--dataset", str(healthy_folder), "--level", "record", "--from", str(task12_run), "--ignore-mismatched",
                   "--output_dir", str(tmp_path)])


def test_record_crops_longer_than_the_clip_are_refused(task12_run, sprsound_root, tmp_path):
    with pytest.raises(ValueError, match=r"--record_crop_min_seconds 3: no window that long fits the model's 2.40 s clip"):
        run_train(["--task", "22", "--dataset", str(sprsound_root), "--from", str(task12_run), "--ignore-mismatched",
                   "--n_frames", "150", "--output_dir", str(tmp_path)])


def test_a_failed_push_leaves_a_complete_folder(task12_run, sprsound_root, tmp_path, monkeypatch):
    """The card and results are written before the upload: a push that fails (here, the repo cannot be created)
    leaves a folder that can be pushed by hand."""
    def create_repo(repo_id, **kwargs):
        raise ConnectionError("the Hub is unreachable")

    monkeypatch.setattr(training.card, "create_repo", create_repo)
    monkeypatch.setattr(training.card.hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(training.card, "get_token", lambda: "hf_fake")
    run = tmp_path / "run"
    shutil.copytree(task12_run, run)
    (run / "README.md").unlink()
    with pytest.raises(ConnectionError):
        run_train(["--task", "12", "--dataset", str(sprsound_root), "--from", str(run), "--output_dir", str(run),
                   "--do_train", "false", "--eval_split", "none", "--push_to_hub", "--hub_model_id", "org/respstf"])
    assert 'model="org/respstf"' in (run / "README.md").read_text() and (run / "results.json").is_file()


def test_recipe_refuses_the_options_it_sets_for_each_run(tmp_path, capsys):
    from benchmarks import sprsound_score

    for argv, message in ((["--output-dir", "x"], "--output_dir: set by the recipe for each run"),
                          (["--from=x", "--task", "12"], "--from, --task: set by the recipe"),
                          (["--seed", "3"], "pass the training seeds as --seeds"),  # not read as --seeds 3
                          (["--resume_from_checkpoint", "last"], "--resume_from_checkpoint: set by the recipe"),
                          (["--eval-split", "none"], "--eval_split: this script's own options, spelled with underscores")):
        with pytest.raises(SystemExit):
            sprsound_score.main(["--runs", str(tmp_path), *argv])
        assert message in capsys.readouterr().err


def test_a_saved_dataset_with_sprsound_split_names_trains(task12_run, healthy_folder, tmp_path):
    """A `save_to_disk` folder is loaded as one, although its split folders (train/, inter_test/) would pass for an
    SPRSound release's."""
    rows = hub_dataset.load_audio_folder(healthy_folder, decode=False, progress=False)
    saved = tmp_path / "saved"
    type(rows)(train=rows["train"], inter_test=rows["test"]).save_to_disk(str(saved))
    assert DatasetSource.detect(saved).kind == "saved" and DatasetSource.detect(healthy_folder).kind == "folder"
    summary = run_train(["--dataset", str(saved), "--from", str(task12_run), "--ignore-mismatched", "--normal_label",
                         "Healthy", "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--validation_fraction", "0.5"])
    assert summary["labels"] == ["Adventitious", "Healthy"] and set(summary["results"]) == {"validation", "inter_test"}
    rows["train"].save_to_disk(str(tmp_path / "one_split"))  # a Dataset saved alone is the train split
    source = DatasetSource.detect(tmp_path / "one_split")
    assert source.kind == "saved" and list(source.load()) == ["train"]
    labelled = tmp_path / "by_label"  # one folder per label, and a JSON beside them that is no SPRSound annotation
    for file, label, _ in example_recordings(1):
        (labelled / label).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, labelled / label / file.name)
    (labelled / "classes.json").write_text('["Normal", "CAS"]')
    assert DatasetSource.detect(labelled).kind == "folder"


def test_scoring_a_model_on_a_folder_with_some_of_its_classes(task12_run, tmp_path):
    """--do_train false: the folder's classes are the model's, so a test folder without Stridor (or any other of its
    classes) still fits its head."""
    rows = "".join(f"{file},{'Normal' if label == 'Normal' else 'Wheeze'},{patient}\n" for file, label, patient in example_recordings(1))
    (tmp_path / "metadata.csv").write_text("file,label,patient_id\n" + rows)
    summary = run_train(["--dataset", str(tmp_path), "--from", str(task12_run), "--do_train", "false",
                         "--output_dir", str(tmp_path / "scored"), "--validation_fraction", "0.5"])
    assert summary["labels"] == task_labels(12) and 0 <= summary["results"]["validation"]["score"] <= 1
    saved = tmp_path / "saved"  # the same rows as a saved dataset (not a folder): renumbered as the model's classes
    hub_dataset.load_audio_folder(tmp_path, decode=False, progress=False).save_to_disk(str(saved))
    summary = run_train(["--dataset", str(saved), "--from", str(task12_run), "--do_train", "false",
                         "--output_dir", str(tmp_path / "scored_saved"), "--validation_fraction", "0.5"])
    assert summary["labels"] == task_labels(12)
    (tmp_path / "metadata.csv").write_text("file,label,patient_id\n" + rows.replace(",Wheeze,", ",Squeak,"))
    with pytest.raises(ValueError, match=r"--do_train false: the dataset's classes \['Squeak'\] are not among .*that "
                                         "model was not trained for them"):
        run_train(["--dataset", str(tmp_path), "--from", str(task12_run), "--do_train", "false",
                   "--output_dir", str(tmp_path / "scored_squeak")])


def test_recall_keys_are_unique_in_any_script():
    assert training.recall_keys(["Normal", "Wheeze+Crackle", "正常", "湿啰音", "Crackle", "crackle!"]) == [
        "recall_normal", "recall_wheeze_crackle", "recall_正常", "recall_湿啰音", "recall_crackle_4", "recall_crackle_5"]
    training.check_selection_metric("recall_湿啰音", ["正常", "湿啰音"])
    training.check_selection_class("eval_recall_湿啰音", ["正常", "湿啰音"], [0, 1, 0])
    with pytest.raises(ValueError, match="--metric_for_best_model recall_湿啰音: the validation split has no '湿啰音' rows"):
        training.check_selection_class("eval_recall_湿啰音", ["正常", "湿啰音"], [0, 0])


def test_rows_without_patient_ids_are_reported(caplog):
    import datasets

    rows = datasets.Dataset.from_dict(
        {"patient_id": ["a", "a", "b", "b", None, None], "recording_id": list("uvwxyz"), "label": [0, 1, 0, 1, 0, 1]},
        features=datasets.Features({"patient_id": datasets.Value("string"), "recording_id": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["Normal", "Wheeze"])}))
    with caplog.at_level("WARNING", logger="respstf"):
        training.carve_validation(rows, DatasetSource("my_recordings", "folder"), "label", 0.15, 0)
    assert ("2 of the 6 training rows of my_recordings have no patient_id: each such file counts as its own patient"
            in caplog.text)


def test_segment_shorter_than_the_smallest_wavelet_is_named(tmp_path):
    file = example_recordings(1)[0][0]
    (tmp_path / "metadata.csv").write_text(f"file,label,start,end\n{file},Normal,0,1\n{file},Normal,1.000,1.001\n")
    rows = hub_dataset.load_audio_folder(tmp_path, decode=False, progress=False)["train"]
    extractor = RespSTFFeatureExtractor(**training.LEVEL_FEATURES["event"])
    with pytest.raises(ValueError, match=rf"train row \(recording_id {file.stem}, start_s 1.0, end_s 1.001\): 1.0 ms of "
                                         "audio, shorter than the 2 ms the model's smallest wavelet spans"):
        training.featurize(rows, extractor, "label", with_frames=False)


def test_short_and_silent_rows_are_reported_once_per_split(tmp_path, caplog, recwarn):
    import datasets

    file = example_recordings(1)[0][0]
    rows = "".join(f"{file},Normal,{start:.2f},{start + 0.05:.2f}\n" for start in np.arange(0.5, 3, 0.1))  # 50 ms each
    (tmp_path / "metadata.csv").write_text("file,label,start,end\n" + rows + f"{file},Normal,4,6\n")
    split = hub_dataset.load_audio_folder(tmp_path, decode=False, progress=False)["train"]
    extractor = RespSTFFeatureExtractor(**training.LEVEL_FEATURES["event"])
    prepared = datasets.DatasetDict(train=training.featurize(split, extractor, "label", with_frames=False))
    assert not [w for w in recwarn if "audio input" in str(w.message)]  # not one per batch position
    with caplog.at_level("WARNING", logger="respstf"):
        training.report_row_lengths(prepared, extractor, new_dataset=True)
    assert "train: 25 of 26 rows are shorter than 0.1 s (shortest 50 ms): little for the model" in caplog.text
    assert "rows are silent" not in caplog.text


def test_unusable_files_can_be_skipped_from_the_command_line(tmp_path):
    file = example_recordings(1)[0][0]
    (tmp_path / "metadata.csv").write_text(f"file,label\n{file},Normal\nmissing.wav,Wheeze\n")
    with pytest.raises(FileNotFoundError, match=r"missing.wav: file not found\. Pass on_missing='skip' \(--on-missing skip "
                                                "on the command line\)"):
        DatasetSource.detect(tmp_path).load()
    with pytest.warns(UserWarning, match="skipped 1 files"):
        data = DatasetSource.detect(tmp_path).load(on_missing="skip")
    assert data["train"].num_rows == 1 and data["train"].features["label"].names == ["Normal", "Wheeze"]


# -- train.py as a program, and its messages ------------------------------------------------------


def test_a_user_error_is_one_line_with_exit_status_2(tmp_path):
    """A mistake on the command line is the message alone (exit 2, as argparse); it used to be a traceback's last line."""
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "--task", "12", "--preset", "huge",
                                "--output_dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == "train.py: error: --preset must be 'small' or 'paper', got 'huge'."
    assert "Traceback" not in completed.stderr


def test_run_cli_keeps_the_traceback_of_a_bug(capsys):
    def bug(argv):
        raise KeyError("a bug, not a user error")

    with pytest.raises(KeyError):
        training.run_cli(bug, [])

    def torch_error(argv):  # a ValueError from inside torch is a bug to trace, not a message of ours
        torch.nn.functional.cross_entropy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))

    with pytest.raises(ValueError, match="Expected input batch_size"):
        training.run_cli(torch_error, [])

    def ours(argv):
        training.resolve_level("frames", None)

    with pytest.raises(SystemExit) as exited:
        training.run_cli(ours, [])
    assert exited.value.code == 2 and "error: --level must be 'event' or 'record', got 'frames'." in capsys.readouterr().err

    with pytest.raises(SystemExit) as exited:
        training.run_cli(lambda argv: training.check_checkpoint_source(argv[0]), ["no/such/folder"])
    assert exited.value.code == 2 and capsys.readouterr().err.endswith(
        "error: --from no/such/folder: no such checkpoint folder, and not a Hub repo id ('org/name').\n")


def test_silent_rows_alone_are_not_reported_as_short(caplog):
    """Rows that are silent but long enough: no "0 of N rows are shorter than 0.1 s (shortest 0 ms)"."""
    import datasets

    prepared = datasets.DatasetDict(train=datasets.Dataset.from_dict({"seconds": [1.0, 1.5, 2.0], "silent": [True, False, False]}))
    extractor = RespSTFFeatureExtractor(**training.LEVEL_FEATURES["event"])
    with caplog.at_level("WARNING", logger="respstf"):
        training.report_row_lengths(prepared, extractor, new_dataset=False)
    assert "train: 1 of 3 rows are silent (constant)" in caplog.text and "shorter than" not in caplog.text


def test_a_checkpoint_with_unnamed_classes_is_not_told_to_drop_its_head(tmp_path):
    """A checkpoint whose config names no classes (LABEL_0 …): the advice is to name them, not --ignore-mismatched."""
    from respstf.modeling import RespSTFConfig

    unnamed = RespSTFConfig(num_labels=3)
    with pytest.raises(ValueError, match=r"has 3 classes without names \(LABEL_0 … LABEL_2 in its config.json\); if they "
                                         r"are the dataset's classes \['Normal', 'Adventitious', 'Poor Quality'\] in that "
                                         "order, write those names into its config.json .*would throw its trained head away"):
        training.check_checkpoint_labels(unnamed, "my-model", task_labels(21), ignore_mismatched=False)
    with pytest.raises(ValueError, match=r"the dataset has 2 \(\['Normal', 'Adventitious'\]\): pass --ignore-mismatched"):
        training.check_checkpoint_labels(unnamed, "my-model", task_labels(11), ignore_mismatched=False)
    training.check_checkpoint_labels(unnamed, "my-model", task_labels(11), ignore_mismatched=True)


def test_a_checkpoint_config_edited_to_other_labels_loads(tmp_path):
    """A config.json from before class weights left the config, its id2label edited by hand to 3 classes: it loads
    (its 7 class weights used to make it fail, blamed on class_weights)."""
    from respstf.modeling import RespSTFConfig

    saved = json.loads((REPO_ROOT / "checkpoints" / "sprsound-task12" / "config.json").read_text())
    saved["class_weights"] = [1.0] * 7
    saved["id2label"] = {"0": "Normal", "1": "Wheeze", "2": "Crackle"}
    saved["label2id"] = {"Normal": 0, "Wheeze": 1, "Crackle": 2}
    # The bundled checkpoint's decision (7 offsets) left in the edited file fits no class set it has: refused.
    (tmp_path / "config.json").write_text(json.dumps({**saved, "logit_adjustment": [0.5] * 7}))
    with pytest.raises(ValueError, match=r"^RespSTFConfig\.logit_adjustment must be None or 3 finite offsets"):
        RespSTFConfig.from_pretrained(tmp_path)
    saved.pop("logit_adjustment", None)  # a config from before the decisions, as the old ones were
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = RespSTFConfig.from_pretrained(tmp_path)
    assert config.num_labels == 3 and "class_weights" not in config.to_dict()


def test_cv_fold_validates_on_that_fold_of_patients(sprsound_root, tmp_path):
    """--cv_fold K: on SPRSound every task validates on the shipped fold K (no patient of it trains), elsewhere on fold
    K of the dataset's own patients; a fold that does not exist, or a dataset with its own validation split, is refused."""
    import datasets

    fold_patients = {patient for patient, fold in hub_dataset.sprsound_folds().items() if fold == 2}
    source = DatasetSource.detect(sprsound_root)
    for task in ("12", "22"):
        data = source.load(task)
        carved = training.carve_validation(data["train"], source, f"task{task}", 0.15, 0, cv_fold=2)
        assert set(carved["validation"]["patient_id"]) <= fold_patients
        assert not set(carved["train"]["patient_id"]) & fold_patients
    assert set(carved["validation"]["patient_id"]) == fold_patients  # the record level has every patient

    # The example folder's 4 children cannot fill 5 folds (refused); each recording as its own patient can.
    rows = "".join(f"{file},{label},{file.stem}\n" for file, label, _ in example_recordings(3))
    (tmp_path / "metadata.csv").write_text("file,label,patient_id\n" + rows)
    folder = DatasetSource.detect(tmp_path)
    train_split = folder.load()["train"]
    folds = hub_dataset.patient_folds(train_split, 5, 0, label_column="label")
    carved = training.carve_validation(train_split, folder, "label", 0.15, 0, cv_fold=1)
    assert set(carved["validation"]["patient_id"]) == {patient for patient, fold in folds.items() if fold == 1}
    with_validation = datasets.DatasetDict(train=train_split, validation=train_split)
    with pytest.raises(ValueError, match=r"--cv_fold 1: .* has its own validation split, so no fold of train's patients"):
        training.add_validation_split(with_validation, folder, "label", 0.15, 0, cv_fold=1)
    with pytest.raises(ValueError, match=r"--cv_fold must be one of 0 … 4 \(the patient folds\), got 5"):
        run_train(["--task", "12", "--dataset", str(sprsound_root), "--cv_fold", "5", "--output_dir", str(tmp_path / "x")])


def test_cross_validation_table_reads_every_fold():
    """sprsound_score.py --cv_folds: mean ± sd of the folds' validation Scores, and normals called Poor Quality."""
    from benchmarks import sprsound_score

    def record_run(score, normal_row):
        return {"labels": task_labels(21), "results": {"validation": {"score": score, "confusion_matrix": [
            normal_row, [1, 9, 0], [0, 1, 4]]}}}

    by_fold = {0: {"21": record_run(0.70, [40, 5, 5])}, 1: {"21": record_run(0.80, [48, 1, 1])}}
    assert sprsound_score.normals_called_poor_quality(by_fold[0]["21"]) == (5, 50)
    table = sprsound_score.cv_table(by_fold, "heading")
    assert "| 2-1 | 0.750 ± 0.071 | 0.700 | 0.800 | 6 of 100 (6.0%) |" in table.splitlines()


def test_cross_validation_trains_each_fold_once_and_reads_it_back(sprsound_root, tmp_path, capsys):
    from benchmarks import sprsound_score

    runs, results = tmp_path / "runs", tmp_path / "RESULTS.md"
    argv = ["--dataset", str(sprsound_root), "--runs", str(runs), "--tasks", "12", "--cv_folds", "3", "--results",
            str(results), "--max_train_samples", "16", "--max_steps", "1", "--eval_strategy", "no", *QUICK]
    sprsound_score.main(argv)
    summary = json.loads((runs / "cv" / "fold3" / "task12" / "results.json").read_text())
    assert summary["cv_fold"] == 3 and set(summary["results"]) == {"validation"}  # the test split is never scored
    assert f"| 1-2 | {summary['results']['validation']['score']:.3f} ± 0.000 | " in results.read_text()
    sprsound_score.main(argv)  # read back, not trained again
    assert "to train (no finished results.json, or --retrain): none; read back: task12" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sprsound_score.main(["--runs", str(runs), "--cv_folds", "0", "--copy_to", str(tmp_path / "copies")])


def test_a_fine_tune_does_not_inherit_its_parents_decision_prior(tmp_path):
    """A checkpoint with a logit_adjustment (a decision prior for its own data): training from it starts without it
    (validation would be steered by it), scoring it keeps it."""
    parent = tmp_path / "with-prior"
    shutil.copytree(single_model("12"), parent)
    config = json.loads((parent / "config.json").read_text())
    (parent / "config.json").write_text(json.dumps({**config, "logit_adjustment": [0.5] + [0.0] * 6}))
    _, model_args, feature_args, _ = train.parse_args(["--from", str(parent)])
    trained, _ = training.build_model_and_extractor(model_args, feature_args, "12", task_labels(12), "event", False)
    scored, _ = training.build_model_and_extractor(model_args, feature_args, "12", task_labels(12), "event", False,
                                                   training=False)
    assert trained.config.logit_adjustment is None and scored.config.logit_adjustment == [0.5] + [0.0] * 6
    model_args.ignore_mismatched = True  # new classes: the parent's 7 offsets would not even fit
    assert training.build_model_and_extractor(model_args, feature_args, None, ["Normal", "Crackle"], "event",
                                              False)[0].config.logit_adjustment is None


def test_a_fine_tune_from_a_fold_ensemble_trains_the_member_asked_for(tmp_path):
    """--from a fold ensemble (as the bundled task checkpoints are) fine-tunes one member, 0 unless --from_member says
    otherwise, without the ensemble's decision; scoring an ensemble, or a member it lacks, is refused in one line."""
    from respstf.modeling import RespSTFForAudioClassification, pack_ensemble

    single = single_model("12")
    other = RespSTFForAudioClassification.from_pretrained(single)
    with torch.no_grad():
        other.classifier.bias += 1.0
    other.save_pretrained(tmp_path / "other")
    shutil.copy(single / "preprocessor_config.json", tmp_path / "other")
    ensemble = pack_ensemble([single, tmp_path / "other"], tmp_path / "ensemble")
    config = json.loads((ensemble / "config.json").read_text())
    (ensemble / "config.json").write_text(json.dumps({**config, "logit_adjustment": [0.5] + [0.0] * 6}))

    def build(*options, scoring=False):
        _, model_args, feature_args, _ = train.parse_args(["--from", str(ensemble), *options])
        return training.build_model_and_extractor(model_args, feature_args, "12", task_labels(12), "event", False,
                                                  training=not scoring)[0]

    first, second = build(), build("--from_member", "1")
    assert (first.config.ensemble_size, first.config.logit_adjustment) == (1, None)
    reference = RespSTFForAudioClassification.from_pretrained(single).classifier.bias
    assert torch.equal(first.classifier.bias, reference) and torch.equal(second.classifier.bias, reference + 1.0)
    with pytest.raises(ValueError, match=rf"^--from_member 2: {ensemble} is an ensemble of 2 models, members 0 to 1\.$"):
        build("--from_member", "2")
    with pytest.raises(ValueError, match=r"is an ensemble of 2 models: train.py scores one model \(benchmarks/score_interval"):
        build(scoring=True)


def test_a_recipe_run_cut_short_resumes_from_its_newest_checkpoint(tmp_path, monkeypatch):
    """A run whose training a session's end killed (Trainer checkpoints, no results.json) continues where it stopped;
    --retrain starts it afresh."""
    from benchmarks import sprsound_score

    run = tmp_path / "runs" / "task12"
    for step in (5, 10):
        (run / f"checkpoint-{step}").mkdir(parents=True)
        (run / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    calls = []
    monkeypatch.setattr(sprsound_score, "run_train_py", lambda argv, output_dir: calls.append(argv) or {"results": {}})
    args = sprsound_score.argparse.Namespace(dataset="d", runs=str(tmp_path / "runs"), cv_fold=None, train_args=[], retrain=False,
                                             preset="small")
    sprsound_score.train_run(run, "12", None, [], 42, "none", args)
    assert calls[-1][-2:] == ["--resume_from_checkpoint", "last"]
    sprsound_score.train_run(run, "12", None, [], 42, "none", sprsound_score.argparse.Namespace(**{**vars(args), "retrain": True}))
    assert "--resume_from_checkpoint" not in calls[-1]


def test_copy_to_names_each_shipped_folder_after_its_run(tmp_path, capsys):
    """--copy_to copies runs/task12 to <copy_to>/sprsound-task12 and the detector's runs/events to sprsound-events."""
    from benchmarks import sprsound_score

    runs, scores = tmp_path / "runs", {"score": 0.5, "se": 0.5, "sp": 0.5, "as": 0.5, "hs": 0.5}
    for run, task in (("task12", "12"), ("events", "events")):
        (runs / run).mkdir(parents=True)
        (runs / run / "config.json").write_text("{}")
        (runs / run / "audio_file_respstf.py").write_text("# the code save_pretrained copied")
        summary = {"task": task, "global_step": 1, "device": "CPU", "parameters": 1, "train_runtime_s": 1,
                   "results": {"validation": scores, "inter_test": scores}}
        (runs / run / "results.json").write_text(json.dumps(summary))
    sprsound_score.main(["--runs", str(runs), "--tasks", "12", "events", "--copy_to", str(tmp_path / "out"),
                         "--results", str(tmp_path / "RESULTS.md")])
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["sprsound-events", "sprsound-task12"]
    assert (tmp_path / "out" / "sprsound-events" / "config.json").is_file()
    assert (tmp_path / "out" / "sprsound-task12" / "audio_file_respstf.py").is_file()  # all of a run's code ships
    assert "| events | 0.500 |" in (tmp_path / "RESULTS.md").read_text()
