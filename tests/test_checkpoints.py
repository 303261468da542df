"""The bundled checkpoints: complete, named with the official classes, and their code files are the package's own."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from huggingface_hub import ModelCard

from conftest import CHECKPOINTS, CRACKLE_RECORDING, REPO_ROOT, read_recording
from respstf.hub_dataset import TASKS, task_labels

# Every folder holds the model's code and its pipelines' (config.json's custom_pipelines names one of them).
CODE_FILES = {
    "configuration_respstf.py": REPO_ROOT / "modeling",
    "modeling_respstf.py": REPO_ROOT / "modeling",
    "pipeline_respstf.py": REPO_ROOT / "modeling",
    "detection_respstf.py": REPO_ROOT / "modeling",
    "audio_file_respstf.py": REPO_ROOT / "modeling",
    "feature_extraction_respstf.py": REPO_ROOT / "feature_extraction",
    "cwt.py": REPO_ROOT / "feature_extraction",
    "audio_checks.py": REPO_ROOT / "feature_extraction",
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_bundled_checkpoint(task):
    folder = CHECKPOINTS / f"sprsound-task{task}"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder} not present")
    config = json.loads((folder / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(len(config["id2label"]))] == task_labels(task)
    assert config["auto_map"] == {
        "AutoConfig": "configuration_respstf.RespSTFConfig",
        "AutoModelForAudioClassification": "modeling_respstf.RespSTFForAudioClassification",
        # A single model's backbone loads with AutoModel too; a fold ensemble has no single backbone.
        **({"AutoModel": "modeling_respstf.RespSTFModel"} if config.get("ensemble_size", 1) == 1 else {}),
    }
    assert config["custom_pipelines"]["audio-classification"]["impl"] == "pipeline_respstf.RespSTFAudioClassificationPipeline"
    for name, source in CODE_FILES.items():
        assert (folder / name).read_text() == (source / name).read_text(), f"{folder / name} differs from {source / name}"
    results = json.loads((folder / "results.json").read_text())
    assert results["task"] == task and "inter_test" in results["results"]
    assert f"{results['results']['inter_test']['score']:.3f}" in (folder / "README.md").read_text()
    # The card's model-index (what the Hub shows on the model page) holds the same Scores.
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == "audio-classification" and card.data.model_name == folder.name
    assert {(e.dataset_split, e.metric_type, e.metric_value) for e in card.data.eval_results} == {
        (split, "sprsound_score", round(r["score"], 4)) for split, r in results["results"].items()}
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt")), "safetensors only"
    # About 1.1 MB of weights per model: a fold ensemble holds every member's.
    assert sum(path.stat().st_size for path in folder.iterdir()) < 1_000_000 + 1_500_000 * config.get("ensemble_size", 1)


def test_every_bundled_folder_holds_the_packages_code():
    """Any checkpoint folder (a task's, an event detector's), not only the tasks': its code files, its pipeline's
    included, are the package's."""
    folders = [folder for folder in sorted(CHECKPOINTS.iterdir()) if (folder / "config.json").is_file()]
    if not folders:
        pytest.skip(f"no checkpoint folder in {CHECKPOINTS}")
    for folder in folders:
        assert json.loads((folder / "config.json").read_text())["custom_pipelines"], f"{folder} names no pipeline"
        for name, source in CODE_FILES.items():
            assert (folder / name).is_file(), f"{folder} lacks {name}"
            assert (folder / name).read_text() == (source / name).read_text(), f"{folder / name} differs from {source / name}"


def test_a_bundled_checkpoint_takes_a_new_label_set(tmp_path):
    """The transformers way to give a checkpoint other classes (num_labels= or id2label= with
    ignore_mismatched_sizes=True) works: the config holds no training-time state tied to the old classes (the
    class weights of its run are the trainer's), and the new model computes a loss, saves and loads again."""
    from respstf.feature_extraction import RespSTFFeatureExtractor
    from respstf.modeling import RespSTFForAudioClassification

    folder = CHECKPOINTS / "sprsound-task12"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder} not present")
    saved = json.loads((folder / "config.json").read_text())
    assert "class_weights" not in saved and (saved["finetuning_task"], saved["annotation_level"]) == ("12", "event")
    # The checkpoint's decision (its logit_adjustment, one offset per Task 1-2 class) does not fit new classes: left out.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        three = RespSTFForAudioClassification.from_pretrained(folder, num_labels=3, ignore_mismatched_sizes=True)
    heads = [member.classifier for member in three.members] if three.config.ensemble_size > 1 else [three.classifier]
    assert three.config.num_labels == 3 and [head.out_features for head in heads] == [3] * three.config.ensemble_size
    assert three.config.logit_adjustment is None
    if saved.get("logit_adjustment"):
        assert any("logit_adjustment has 7 offsets (a decision for other classes) but the config now has 3 classes: left out"
                   in str(warning.message) for warning in caught)

    labels = {0: "Normal", 1: "Crackle"}
    two = RespSTFForAudioClassification.from_pretrained(
        folder, id2label=labels, label2id={name: i for i, name in labels.items()}, ignore_mismatched_sizes=True
    ).eval()
    waveform, rate = read_recording(CRACKLE_RECORDING)
    event = waveform[int(5.813 * rate) : int(6.984 * rate)]  # its annotated fine crackle
    inputs = RespSTFFeatureExtractor.from_pretrained(folder)(event, sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        out = two(**inputs, labels=torch.tensor([1]))
    assert out.logits.shape == (1, 2) and torch.isfinite(out.loss)
    two.save_pretrained(tmp_path)
    reloaded = RespSTFForAudioClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.id2label == labels
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, out.logits)

    # A config given other labels after loading saves and loads again.
    config = RespSTFForAudioClassification.config_class.from_pretrained(folder)
    config.num_labels = 3
    config.save_pretrained(tmp_path / "config-only")
    assert RespSTFForAudioClassification.config_class.from_pretrained(tmp_path / "config-only").num_labels == 3


def test_results_tables_read_the_bundled_checkpoints_and_their_fold_runs():
    """benchmarks/sprsound_score.py's RESULTS.md sections: a fold ensemble's test Scores beside its CV Score and
    members; a recipe run's measured Scores where a split was scored, "–" where not (the fold runs were scored on their
    validation folds only)."""
    from benchmarks.sprsound_score import PAPER, ensemble_table, results_table, run_of

    from respstf.training import mean_and_sd

    def rows(table: str) -> dict[str, list[str]]:
        return {line.split(" | ")[0][2:]: line.split(" | ") for line in table.splitlines()
                if line.startswith("| ") and line[2].isdigit()}

    bundled = {task: json.loads((CHECKPOINTS / f"sprsound-task{task}" / "results.json").read_text()) for task in sorted(TASKS)}
    ensembles = {task: summary for task, summary in bundled.items() if "cv_ensemble" in summary}
    shown = rows(ensemble_table(ensembles, "inter_test", "checkpoints"))
    assert sorted(shown) == [f"{task[0]}-{task[1]}" for task in sorted(ensembles)]
    for task, summary in ensembles.items():
        row, test = shown[f"{task[0]}-{task[1]}"], summary["results"]["inter_test"]
        assert row[1:6] == [f"{test[name]:.3f}" for name in ("score", "se", "sp", "as", "hs")]
        cv = summary["cv_ensemble"]["chosen"]["scores"]
        assert row[6:8] == [f"{PAPER[task]:.3f}", mean_and_sd(cv)] and row[-1] == f"{len(cv)} |"

    fold_runs = {task: json.loads((REPO_ROOT / "runs" / "cv" / "fold0" / run_of(task) / "results.json").read_text())
                 for task in sorted(TASKS)}
    shown = rows(results_table(fold_runs, "inter_test", "heading"))
    assert list(shown) == ["1-1", "1-2", "2-1", "2-2"]
    for task, summary in fold_runs.items():
        row = shown[f"{task[0]}-{task[1]}"]
        assert row[1:6] == ["–"] * 5
        assert row[6:8] == [f"{PAPER[task]:.3f}", f"{summary['results']['validation']['score']:.3f}"]


def test_score_interval_rescores_the_bundled_model_and_brackets_it(sprsound_root):
    """benchmarks/score_interval.py: classifying the real test split again gives exactly the Score the
    checkpoint's results.json records; the patient bootstrap spreads around it. Task 1-1: its events take a
    fraction of the time a record task's five models take over whole recordings."""
    folder = CHECKPOINTS / "sprsound-task11"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder} not present")
    from benchmarks import score_interval

    [row] = score_interval.main(["--models", str(folder), "--dataset", str(sprsound_root), "--resamples", "200"])
    recorded = json.loads((folder / "results.json").read_text())["results"]["inter_test"]
    assert row["task"] == "11" and row["rows"] == recorded["rows"] > 1000 and row["patients"] == 41
    assert row["score"] == pytest.approx(recorded["score"], abs=1e-12)
    assert 0 < row["std"] < 0.2 and row["low"] < row["score"] < row["high"]


def test_score_interval_rejects_a_model_of_other_classes():
    from benchmarks import score_interval
    from respstf.modeling import RespSTFConfig, RespSTFForAudioClassification

    model = RespSTFForAudioClassification(RespSTFConfig(id2label={0: "Normal", 1: "Crackle"}, label2id={"Normal": 0, "Crackle": 1}))
    with pytest.raises(ValueError, match=r"\['Normal', 'Crackle'\] are not those of an SPRSound task"):
        score_interval.task_of(model)
