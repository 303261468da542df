"""Issue 33, items 2 and 3: fold ensembles as one checkpoint, and the class prior a decision assumes
(``logit_adjustment``, ``prior_shift``, ``estimate_deployment_prior``), on the bundled Task 2-2 model and a real
recording."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel, AutoModelForAudioClassification, pipeline

from conftest import CHECKPOINTS, CRACKLE_RECORDING, REPO_ROOT, read_recording, single_model
from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.modeling import (
    RespSTFConfig, RespSTFForAudioClassification, estimate_deployment_prior, load_task_model, pack_ensemble, prior_shift,
    unpack_member,
)



def probabilities(model, features) -> torch.Tensor:
    with torch.no_grad():
        return model(**features).logits.softmax(dim=-1)


@pytest.fixture(scope="module")
def recording():
    return read_recording(CRACKLE_RECORDING)


@pytest.fixture(scope="module")
def features(recording):
    """The extractor's features of the real recording and of its second half (B = 2)."""
    waveform, rate = recording
    return RespSTFFeatureExtractor.from_pretrained(single_model("22"))([waveform, waveform[len(waveform) // 2 :]], sampling_rate=rate,
                                                            return_tensors="pt")


@pytest.fixture(scope="module")
def shipped(features) -> RespSTFForAudioClassification:
    return RespSTFForAudioClassification.from_pretrained(single_model("22")).eval()


@pytest.fixture(scope="module")
def perturbed_folder(shipped, tmp_path_factory):
    """A second member: the shipped model with its clip head perturbed, saved with the shipped feature extractor."""
    model = copy.deepcopy(shipped)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.classifier.weight += 0.5 * torch.randn(model.classifier.weight.shape, generator=generator)
    folder = tmp_path_factory.mktemp("perturbed")
    model.save_pretrained(folder)
    RespSTFFeatureExtractor.from_pretrained(single_model("22")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ensemble_folder(perturbed_folder, tmp_path_factory):
    return pack_ensemble([single_model("22"), perturbed_folder], tmp_path_factory.mktemp("ensemble") / "task22-ensemble")


@pytest.fixture(scope="module")
def member_probabilities(shipped, perturbed_folder, features) -> torch.Tensor:
    """``(2 members, B, num_labels)``."""
    perturbed = RespSTFForAudioClassification.from_pretrained(perturbed_folder).eval()
    return torch.stack([probabilities(shipped, features), probabilities(perturbed, features)])


def test_ensemble_checkpoint_averages_its_members_probabilities(ensemble_folder, member_probabilities, features):
    assert (member_probabilities[0] - member_probabilities[1]).abs().max() > 0.01  # members that disagree
    ensemble = AutoModelForAudioClassification.from_pretrained(ensemble_folder).eval()
    assert type(ensemble) is RespSTFForAudioClassification and ensemble.config.ensemble_size == 2
    with torch.no_grad():
        logits = ensemble(**features).logits
    assert logits.shape == (2, 5)
    torch.testing.assert_close(logits.softmax(dim=-1), member_probabilities.mean(dim=0), atol=1e-6, rtol=0)

    # One file with every member, named members.<i>.<a single model's names>, about twice the single model.
    with safe_open(ensemble_folder / "model.safetensors", "pt") as saved, safe_open(single_model("22") / "model.safetensors", "pt") as single:
        assert set(saved.keys()) == {f"members.{i}.{key}" for i in range(2) for key in single.keys()}
        assert torch.equal(saved.get_tensor("members.0.classifier.weight"), single.get_tensor("classifier.weight"))
    ratio = (ensemble_folder / "model.safetensors").stat().st_size / (single_model("22") / "model.safetensors").stat().st_size
    assert 1.95 < ratio < 2.05
    assert {"configuration_respstf.py", "modeling_respstf.py", "feature_extraction_respstf.py", "preprocessor_config.json"} <= {
        path.name for path in ensemble_folder.iterdir()}

    # No single backbone to load: the config does not map AutoModel, and the package's class says why.
    config = json.loads((ensemble_folder / "config.json").read_text())
    assert config["ensemble_size"] == 2 and "AutoModel" not in config["auto_map"]
    with pytest.raises(ValueError, match=r"ensemble of 2 backbones, not one RespSTFModel: load it with AutoModelForAudioClassification"):
        AutoModel.from_pretrained(ensemble_folder)

    # The demo's loader takes it as any checkpoint.
    task_model = load_task_model(ensemble_folder)
    assert (task_model.key, task_model.level) == ("22", "record")
    np.testing.assert_allclose(task_model.probabilities(features), member_probabilities.mean(dim=0).numpy(), atol=1e-6)

    # Saved again, it loads again the same.
    ensemble.save_pretrained(ensemble_folder.parent / "again")
    again = RespSTFForAudioClassification.from_pretrained(ensemble_folder.parent / "again").eval()
    with torch.no_grad():
        assert torch.equal(again(**features).logits, logits)


# Stock transformers in an interpreter where respstf cannot be imported (as tests/test_modeling.py's remote-code
# check): each folder's logits for the real recording (all of it and its second half) and the pipeline's scores.
_REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["respstf"] = None  # any `import respstf...` now fails
    import json
    import soundfile, torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

    recording, folders = sys.argv[1], sys.argv[2:]
    waveform, rate = soundfile.read(recording, dtype="float32")
    reports = {}
    for folder in folders:
        model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
        extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
        with torch.no_grad():
            logits = model(**extractor([waveform, waveform[len(waveform) // 2 :]], sampling_rate=rate, return_tensors="pt")).logits
        classify = pipeline("audio-classification", model=folder, trust_remote_code=True, top_k=None)
        reports[folder] = {"module": type(model).__module__, "logits": logits.tolist(),
                           "pipeline": classify({"raw": waveform, "sampling_rate": rate})}
    print(json.dumps(reports))
    """
)


def test_ensemble_and_shipped_model_through_stock_pipeline_without_respstf(
    ensemble_folder, member_probabilities, shipped, features, tmp_path
):
    result = subprocess.run(
        [sys.executable, "-c", _REMOTE_CODE_SCRIPT, str(CRACKLE_RECORDING), str(ensemble_folder), str(single_model("22"))],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,  # not the repo root: its source folders are not importable
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = json.loads(result.stdout.strip().splitlines()[-1])
    ensemble, single = reports[str(ensemble_folder)], reports[str(single_model("22"))]
    assert ensemble["module"].startswith("transformers_modules.") and single["module"].startswith("transformers_modules.")
    mean = member_probabilities.mean(dim=0)
    np.testing.assert_allclose(torch.tensor(ensemble["logits"]).softmax(dim=-1), mean, atol=1e-5)
    scores = {row["label"]: row["score"] for row in ensemble["pipeline"]}
    np.testing.assert_allclose([scores[shipped.config.id2label[i]] for i in range(5)], mean[0], atol=1e-5)
    # The shipped single model's logits through the Hub code are the package's.
    with torch.no_grad():
        np.testing.assert_allclose(single["logits"], shipped(**features).logits, atol=1e-5)


def test_from_members_and_pack_ensemble_refuse_models_that_do_not_fit(shipped, perturbed_folder, ensemble_folder, tmp_path):
    labels = {0: "Normal", 1: "Crackle"}
    two_classes = RespSTFForAudioClassification(RespSTFConfig(id2label=labels, label2id={v: k for k, v in labels.items()}))
    with pytest.raises(ValueError, match=r"^member 1 \(not loaded from a folder\) has another config than member 0: .*id2label="):
        RespSTFForAudioClassification.from_members([RespSTFForAudioClassification(RespSTFConfig()), two_classes])
    wider = RespSTFForAudioClassification(RespSTFConfig(hidden_size=128))
    with pytest.raises(ValueError, match=r"member 1 .* hidden_size=128 \(reference: 96\)"):
        RespSTFForAudioClassification.from_members([RespSTFForAudioClassification(RespSTFConfig()), wider])
    with pytest.raises(ValueError, match=r"^an ensemble needs at least 2 trained models, got 1\.$"):
        RespSTFForAudioClassification.from_members([shipped])
    ensemble = RespSTFForAudioClassification.from_pretrained(ensemble_folder)
    with pytest.raises(ValueError, match=r"^member 1 is an ensemble of 2: ensembles do not nest, give its members' models\.$"):
        RespSTFForAudioClassification.from_members([shipped, ensemble])
    with pytest.raises(ValueError, match=r"^member 0 is a RespSTFModel, not a RespSTFForAudioClassification\.$"):
        RespSTFForAudioClassification.from_members([shipped.respstf, shipped])
    with pytest.raises(ValueError, match=rf"^member 1 \({single_model('21')}\) has another config .*finetuning_task='21'"):
        pack_ensemble([single_model("22"), single_model("21")], tmp_path / "mixed-tasks")

    # Members that read other features: the folder is named, with the setting.
    other_front_end = tmp_path / "other-front-end"
    RespSTFForAudioClassification.from_pretrained(perturbed_folder).save_pretrained(other_front_end)
    RespSTFFeatureExtractor.from_pretrained(single_model("22"), fmax=3000.0).save_pretrained(other_front_end)
    with pytest.raises(ValueError, match=rf"^{other_front_end}: its feature extractor differs from {single_model('22')}'s: fmax=3000\.0 \(reference: 3900\.0\)"):
        pack_ensemble([single_model("22"), other_front_end], tmp_path / "mixed-features")
    assert not (tmp_path / "mixed-features").exists()


def test_logit_adjustment_shifts_the_decision_at_inference_only(shipped, member_probabilities, ensemble_folder, features, tmp_path):
    model = copy.deepcopy(shipped)
    with torch.no_grad():
        raw = model(**features).logits
    # The shipped model: no adjustment, and its logits are its clip head's on the backbone's pooled output.
    assert model.config.logit_adjustment is None
    with torch.no_grad():
        assert torch.equal(raw, model.classifier(model.respstf(**features).pooler_output))

    # A deployment where Poor Quality (4) is 20 times rarer than the model assumes and Normal (0) 2 times commoner.
    train_prior, deploy_prior = [0.2] * 5, [0.4, 0.2, 0.2, 0.19, 0.01]
    offsets = prior_shift(train_prior, deploy_prior)
    np.testing.assert_allclose(offsets, np.log(np.array(deploy_prior) / 0.2))
    model.config.logit_adjustment = offsets
    with torch.no_grad():
        adjusted = model(**features).logits
    torch.testing.assert_close(adjusted, raw + torch.tensor(offsets))
    # Bayes' rule: the posterior re-weighted by p_deploy / p_train.
    reweighted = raw.softmax(-1) * torch.tensor(deploy_prior) / 0.2
    torch.testing.assert_close(adjusted.softmax(-1), reweighted / reweighted.sum(-1, keepdim=True))

    # A large enough offset makes a class the decision; and training never applies the offsets.
    favoured = int(raw[0].argmin())
    model.config.logit_adjustment = [50.0 if c == favoured else 0.0 for c in range(5)]
    training = copy.deepcopy(model).train()  # a copy: training-mode passes move its batch-norm statistics
    with torch.no_grad():
        assert model(**features).logits[0].argmax() == favoured
        torch.manual_seed(0)
        trained_adjusted = training(**features).logits
        training.config.logit_adjustment = None
        torch.manual_seed(0)
        torch.testing.assert_close(training(**features).logits, trained_adjusted, atol=0, rtol=0)

    # Saved in the config, applied by the stock pipeline after loading.
    model.config.logit_adjustment = offsets
    model.save_pretrained(tmp_path / "adjusted")
    RespSTFFeatureExtractor.from_pretrained(single_model("22")).save_pretrained(tmp_path / "adjusted")
    assert json.loads((tmp_path / "adjusted" / "config.json").read_text())["logit_adjustment"] == pytest.approx(offsets)
    waveform, rate = read_recording(CRACKLE_RECORDING)
    rows = pipeline("audio-classification", model=str(tmp_path / "adjusted"), trust_remote_code=True, top_k=None)({"raw": waveform, "sampling_rate": rate})
    scores = {row["label"]: row["score"] for row in rows}
    np.testing.assert_allclose([scores[model.config.id2label[i]] for i in range(5)], adjusted[0].softmax(-1), atol=1e-5)

    # An ensemble applies the offsets once, to its averaged probabilities.
    ensemble = RespSTFForAudioClassification.from_pretrained(ensemble_folder).eval()
    ensemble.config.logit_adjustment = offsets
    mean = member_probabilities.mean(dim=0) * torch.tensor(deploy_prior)
    torch.testing.assert_close(probabilities(ensemble, features), mean / mean.sum(-1, keepdim=True), atol=1e-6, rtol=0)

    # Offsets that do not fit the classes: refused by the config, and at inference when set on a loaded model.
    with pytest.raises(ValueError, match=r"^RespSTFConfig\.logit_adjustment must be None or 3 finite offsets \(one per class\), got \[0\.0, 0\.0\]\.$"):
        RespSTFConfig(num_labels=3, logit_adjustment=[0, 0])
    with pytest.raises(ValueError, match=r"must be None or 5 finite offsets"):
        RespSTFConfig(num_labels=5, logit_adjustment=[0, 0, 0, 0, float("nan")])
    model.config.logit_adjustment = [1.0, 2.0]
    with pytest.raises(ValueError, match=r"logit_adjustment must be None or 5 finite offsets"):
        model(**features)


def test_prior_shift_refuses_priors_it_cannot_use():
    assert prior_shift([30, 10], [3, 1]) == pytest.approx([0.0, 0.0])  # counts are normalised
    with pytest.raises(ValueError, match=r"^deploy_prior must be at least 2 positive class frequencies \(or counts\), got \[1, 0\]\.$"):
        prior_shift([1, 1], [1, 0])
    with pytest.raises(ValueError, match=r"^train_prior has 2 classes but deploy_prior has 3\.$"):
        prior_shift([1, 1], [1, 1, 1])


def test_em_recovers_a_known_deployment_prior():
    """Saerens et al. 2002: posteriors of a classifier calibrated to the training prior, on recordings drawn from
    another prior, give that prior back by EM; its offsets then make the posteriors those of the deployment."""
    rng = np.random.default_rng(0)
    train_prior = np.array([0.40, 0.20, 0.15, 0.16, 0.09])
    deploy_prior = np.array([0.68, 0.10, 0.12, 0.095, 0.005])
    means = rng.normal(scale=1.5, size=(5, 3))  # class-conditional N(mean_c, I) in 3 dimensions, overlapping

    def draw(prior, n=20_000):
        """Labels ``(n,)`` drawn from ``prior`` and the exact posteriors ``(n, C)`` of their samples under ``train_prior``."""
        labels = rng.choice(5, size=n, p=prior)
        samples = means[labels] + rng.normal(size=(n, 3))
        scores = -0.5 * ((samples[:, None, :] - means[None]) ** 2).sum(-1) + np.log(train_prior)
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        return labels, scores / scores.sum(axis=1, keepdims=True)

    labels, under_training = draw(deploy_prior)
    assert np.abs(under_training.mean(axis=0) - deploy_prior).max() > 0.05  # the plain mean is far off
    estimate = estimate_deployment_prior(torch.from_numpy(under_training), train_prior)
    assert estimate.shape == (5,) and estimate.sum() == pytest.approx(1)
    np.testing.assert_allclose(estimate, np.bincount(labels, minlength=5) / len(labels), atol=0.01)
    np.testing.assert_allclose(estimate, deploy_prior, atol=0.015)

    # Its offsets re-weight the posteriors by Bayes' rule, and more recordings are classified right.
    shifted = np.log(under_training) + prior_shift(train_prior, estimate)
    reweighted = under_training * estimate / train_prior
    np.testing.assert_allclose(np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True),
                               reweighted / reweighted.sum(1, keepdims=True), atol=1e-9)
    assert (shifted.argmax(1) == labels).mean() > (under_training.argmax(1) == labels).mean() + 0.02

    # Recordings drawn from the training prior leave it where it is.
    np.testing.assert_allclose(estimate_deployment_prior(draw(train_prior)[1], train_prior), train_prior, atol=0.015)

    with pytest.raises(ValueError, match=r"^probabilities must have shape \(recordings, 5\), got \(4, 3\)\.$"):
        estimate_deployment_prior(np.full((4, 3), 1 / 3), train_prior)
    with pytest.raises(ValueError, match=r"^probabilities must be softmax outputs: non-negative rows that sum to 1\.$"):
        estimate_deployment_prior(np.ones((4, 5)), train_prior)


@pytest.mark.parametrize("task", ["11", "12", "21", "22"])
def test_bundled_checkpoints_load_as_what_they_are(task, tmp_path):
    """A bundled checkpoint is a fold ensemble whose members are exactly its fold runs' weights (kept in git under
    runs/cv/) with the decision its results.json records, and whose member unpacks to that run's model; or a single
    model with no adjustment, whose parameters are exactly the file's."""
    folder = CHECKPOINTS / f"sprsound-task{task}"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder} not present")
    model, info = RespSTFForAudioClassification.from_pretrained(folder, output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    summary = json.loads((folder / "results.json").read_text())
    if "cv_ensemble" not in summary:
        assert (model.config.ensemble_size, model.config.logit_adjustment) == (1, None)
        with safe_open(folder / "model.safetensors", "pt") as saved:
            assert set(saved.keys()) == set(model.state_dict())
            assert torch.equal(saved.get_tensor("classifier.weight"), model.classifier.weight)
        assert "ensemble_size" not in json.loads((folder / "config.json").read_text())
        return
    ensemble = summary["cv_ensemble"]
    offsets = ensemble["offsets"] if any(ensemble["offsets"]) else None
    assert (model.config.ensemble_size, model.config.logit_adjustment) == (len(ensemble["folds"]), offsets)
    for index, run in enumerate(ensemble["runs"]):
        with safe_open(REPO_ROOT / run / "model.safetensors", "pt") as trained:
            for key in trained.keys():
                assert torch.equal(model.members[index].state_dict()[key], trained.get_tensor(key)), (run, key)
    member = RespSTFForAudioClassification.from_pretrained(unpack_member(folder, 1, tmp_path / "member1"))
    assert (member.config.ensemble_size, member.config.logit_adjustment) == (1, None)
    with safe_open(REPO_ROOT / ensemble["runs"][1] / "model.safetensors", "pt") as trained:
        assert torch.equal(member.classifier.weight, trained.get_tensor("classifier.weight"))
    in_memory = model.member(1)  # what unpack_member saved, without the disk
    assert (in_memory.config.ensemble_size, in_memory.config.logit_adjustment, in_memory.config.id2label) == (
        1, None, member.config.id2label)
    assert all(torch.equal(value, member.state_dict()[key]) for key, value in in_memory.state_dict().items())
    with pytest.raises(ValueError, match=r"member1 holds one model, not an ensemble: use it as it is\.$"):
        member.member(0)
    with pytest.raises(ValueError, match=rf"^{folder} is an ensemble of {len(ensemble['folds'])} models: its members are 0 to"):
        unpack_member(folder, len(ensemble["folds"]), tmp_path / "none")
