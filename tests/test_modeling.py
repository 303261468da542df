"""RespSTF config and models: forward shapes, losses, config validation, parameter counts, the attention
mask, and the four Hub behaviours on a real SPRSound recording (save/load round trip, remote code in an
interpreter without respstf, the audio-classification pipeline, a Hub-cache folder offline)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CRACKLE_RECORDING, EXAMPLE_WAV, SHORT_RECORDING, read_recording
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification, pipeline
from transformers.modeling_outputs import SequenceClassifierOutput

from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset.labels import id2label, label2id
from respstf.modeling import RespSTFConfig, RespSTFForAudioClassification, RespSTFModel

TASK = "22"  # record level: Normal, CAS, DAS, CAS & DAS, Poor Quality
# A small network (~15k parameters) so every test runs in well under a second.
TINY = dict(
    stem_channels=8,
    stage_channels=(8, 16),
    stage_pool=((2, 2), (2, 2)),
    hidden_size=16,
    num_attention_heads=2,
    intermediate_size=32,
    id2label=id2label(TASK),
    label2id=label2id(TASK),
)


def tiny_model(seed: int = 0, **overrides) -> RespSTFForAudioClassification:
    torch.manual_seed(seed)
    return RespSTFForAudioClassification(RespSTFConfig(**{**TINY, **overrides})).eval()


@pytest.fixture(scope="module")
def extractor() -> RespSTFFeatureExtractor:
    return RespSTFFeatureExtractor()


@pytest.fixture(scope="module")
def crackle() -> np.ndarray:
    return read_recording(CRACKLE_RECORDING)[0]


@pytest.fixture(scope="module")
def features(extractor, crackle) -> dict[str, torch.Tensor]:
    """Two real clips: the crackle recording and its second half, as one batch of 192-frame scalograms."""
    return dict(extractor([crackle, crackle[len(crackle) // 2 :]], sampling_rate=8000, return_tensors="pt"))


# -- forward -------------------------------------------------------------------------------------------


def test_forward_shapes(features):
    model = tiny_model()
    with torch.no_grad():
        out = model(**features, output_attentions=True, output_hidden_states=True)
    assert isinstance(out, SequenceClassifierOutput) and out.loss is None
    assert out.logits.shape == (2, 5) and torch.isfinite(out.logits).all()
    frames = 192 // 2 // 2 // 2  # stem stride 2, then two stages pooling time by 2
    assert len(out.hidden_states) == 2 and out.hidden_states[-1].shape == (2, frames, 16)
    assert len(out.attentions) == 1 and out.attentions[0].shape == (2, 2, frames, frames)  # (batch, heads, T', T')

    with torch.no_grad():
        base = model.respstf(**features)
    assert base.last_hidden_state.shape == (2, frames, 16) and base.pooler_output.shape == (2, 16)
    assert isinstance(RespSTFModel(model.config), RespSTFModel)

    with torch.no_grad():
        as_tuple = model(**features, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1  # like transformers' models: no None entries
    torch.testing.assert_close(as_tuple[0], out.logits)

    # the backbone's tuple keeps pooler_output second whether or not hidden states come too
    with torch.no_grad():
        for hidden_states in (False, True):
            last, pooled, *rest = model.respstf(**features, output_hidden_states=hidden_states, return_dict=False)
            torch.testing.assert_close(last, base.last_hidden_state)
            torch.testing.assert_close(pooled, base.pooler_output)
            assert len(rest) == hidden_states


def test_config_output_flags_apply_when_the_call_leaves_them_out(features):
    model = tiny_model()
    model.config.output_hidden_states = model.config.output_attentions = True  # as from_pretrained(..., output_hidden_states=True)
    with torch.no_grad():
        out, base = model(**features), model.respstf(**features)
        explicit = model(**features, output_hidden_states=False, output_attentions=False)
    assert len(out.hidden_states) == len(base.hidden_states) == 2 and len(out.attentions) == len(base.attentions) == 1
    assert explicit.hidden_states is None and explicit.attentions is None  # the call's own choice wins


def test_bfloat16_model_takes_the_extractors_float32_features(features):
    model = tiny_model()
    with torch.no_grad():
        reference = model(**features).logits
        logits = model.to(torch.bfloat16)(**features).logits  # features stay float32
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), reference, atol=0.1, rtol=0.05)


def test_forward_rejects_wrong_input_shape(features):
    model = tiny_model()
    with pytest.raises(ValueError, match=r"input_features must have shape \(batch, 1, 64, frames\)"):
        model(features["input_features"][:, :, :32])
    with pytest.raises(ValueError, match="max_frames=4"):
        tiny_model(max_frames=4)(**features)


# Biases whose gradient is zero by construction: a constant added to every score before a softmax (over
# frequencies per channel, over frames) does not change it.
SOFTMAX_SHIFT_BIASES = {"respstf.focusing.frequency_scores.2.bias", "respstf.pooling.score.bias"}


@pytest.mark.parametrize("frame_head", [False, True], ids=["clip-head", "with-frame-head"])
def test_training_step_gives_every_parameter_a_finite_nonzero_gradient(features, frame_head):
    """Every parameter takes part in the loss: a ``.detach()`` (or a branch left out) anywhere leaves some
    parameter's ``.grad`` None or zero."""
    model = tiny_model(num_frame_labels=4 if frame_head else 0).train()  # SpecAugment and dropout on
    frame_labels = {"frame_labels": torch.zeros(2, 192, dtype=torch.long)} if frame_head else {}
    out = model(**features, labels=torch.tensor([2, 0]), **frame_labels)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    gradients = dict(model.named_parameters())
    assert len(gradients) == len(list(model.parameters())) and (model.frame_classifier is not None) == frame_head
    missing = [name for name, p in gradients.items() if p.grad is None]
    assert not missing, f"no gradient reaches {missing}"
    assert all(torch.isfinite(p.grad).all() for p in gradients.values())
    zero = [name for name, p in gradients.items() if name not in SOFTMAX_SHIFT_BIASES and not p.grad.abs().max() > 1e-6]
    assert not zero, f"zero gradient for {zero}"


def test_tiny_model_overfits_four_real_clips():
    """The model learns: four 1 s clips of two real recordings, each given its own class, are memorised in 60
    full-batch steps (the loss falls from ln 5 to under a tenth of it; a model blind to its input stays at ln 4)."""
    crackle, rate = read_recording(CRACKLE_RECORDING)
    example, example_rate = read_recording(EXAMPLE_WAV)
    assert rate == example_rate == 8000
    clips = [crackle[:rate], crackle[-rate:], example[:rate], example[-rate:]]
    features = dict(RespSTFFeatureExtractor()(clips, sampling_rate=rate, truncation=False, return_tensors="pt"))
    labels = torch.tensor([0, 1, 2, 3])
    no_randomness = dict(hidden_dropout=0.0, attention_dropout=0.0, classifier_dropout=0.0, time_masks=0, frequency_masks=0)
    model = tiny_model(**no_randomness).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # ~1 s; on 2 busy cores, intra-op threads for these tiny tensors made it ~25 s
    try:
        for _ in range(60):
            optimizer.zero_grad()
            out = model(**features, labels=labels)
            out.loss.backward()
            optimizer.step()
            losses.append(out.loss.item())
    finally:
        torch.set_num_threads(threads)
    assert losses[0] == pytest.approx(np.log(5), abs=0.1)  # an untrained head: about uniform over the 5 classes
    assert losses[-1] < 0.1 * losses[0], [round(loss, 3) for loss in losses[::10]]
    assert out.logits.argmax(-1).tolist() == labels.tolist()



def test_trainer_logs_the_batch_mean_loss_under_gradient_accumulation(features, tmp_path):
    """`forward` takes ``**kwargs`` and returns a per-batch mean: Trainer must not take that for a sum over
    ``num_items_in_batch`` (it then multiplies the loss by the number of processes and skips the division by the
    accumulation steps, so every loss and gradient was doubled under 2 processes or 2 accumulation steps)."""
    from transformers import Trainer, TrainingArguments

    no_randomness = dict(hidden_dropout=0.0, attention_dropout=0.0, classifier_dropout=0.0, time_masks=0, frequency_masks=0)
    model = tiny_model(**no_randomness).train()
    clip = {name: value[0] for name, value in features.items()}  # every row the same clip: any order, any batch
    rows = [{**clip, "labels": torch.tensor(2)} for _ in range(4)]
    with torch.no_grad():
        batch_loss = model(**{name: value[:1] for name, value in features.items()}, labels=torch.tensor([2])).loss.item()
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                             max_steps=1, learning_rate=0.0, logging_steps=1, report_to=[], save_strategy="no",
                             use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    logged = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    assert logged == pytest.approx(batch_loss, rel=1e-4)

# -- losses --------------------------------------------------------------------------------------------


def test_cross_entropy_loss_with_and_without_class_weights(features):
    labels = torch.tensor([2, 0])
    out = tiny_model()(**features, labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))

    weights = [1.0, 4.0, 3.0, 5.0, 2.0]  # a training run's choice: given to the loss, not kept in the config
    weighted = tiny_model().weighted_loss(out.logits, labels, weights)
    torch.testing.assert_close(weighted, F.cross_entropy(out.logits, labels, weight=torch.tensor(weights)))
    assert not torch.isclose(weighted, out.loss)

    smoothed = tiny_model(label_smoothing=0.1)(**features, labels=labels)
    torch.testing.assert_close(smoothed.loss, F.cross_entropy(smoothed.logits, labels, label_smoothing=0.1))


def test_class_weights_of_another_label_set(features):
    """Weights are not part of a config: an old config's are dropped on load, so editing its labels never makes
    it unloadable; weights of the wrong length for the loss are a clear error."""
    config = RespSTFConfig(**{**TINY, "class_weights": [1.0, 4.0, 3.0, 5.0, 2.0]})  # as configs saved before held
    assert "class_weights" not in config.to_dict()
    config.id2label, config.label2id = {0: "Normal", 1: "Crackle"}, {"Normal": 0, "Crackle": 1}
    model = RespSTFForAudioClassification(config).eval()
    out = model(**features, labels=torch.tensor([1, 0]))
    assert out.logits.shape == (2, 2) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="class_weights has 3 entries but the classifier gives 2 logits"):
        model.weighted_loss(out.logits, torch.tensor([1, 0]), [1.0, 2.0, 3.0])


def test_focal_loss(features):
    labels = torch.tensor([2, 0])
    cross_entropy = tiny_model()(**features, labels=labels)
    # gamma = 0 is cross-entropy; gamma > 0 down-weights easy examples
    torch.testing.assert_close(tiny_model(loss="focal", focal_gamma=0.0)(**features, labels=labels).loss, cross_entropy.loss)
    focal = tiny_model(loss="focal", focal_gamma=2.0)(**features, labels=labels)
    p = cross_entropy.logits.softmax(-1)[torch.arange(2), labels]
    torch.testing.assert_close(focal.loss, (-((1 - p) ** 2) * p.log()).mean())
    assert focal.loss < cross_entropy.loss

    weights = [1.0, 4.0, 3.0, 5.0, 2.0]
    weighted = tiny_model(loss="focal", focal_gamma=2.0).weighted_loss(cross_entropy.logits, labels, weights)
    w = torch.tensor(weights)[labels]
    torch.testing.assert_close(weighted, (w * -((1 - p) ** 2) * p.log()).sum() / w.sum())


def test_frame_labels_loss(features):
    model = tiny_model(num_frame_labels=4, frame_loss_weight=0.5)
    labels = torch.tensor([2, 0])
    frame_labels = torch.zeros(2, 192, dtype=torch.long)
    frame_labels[0, 60:120] = 2  # a crackle event in the first clip
    clip_only = model(**features, labels=labels).loss
    combined = model(**features, labels=labels, frame_labels=frame_labels).loss
    frame_only = model(**features, frame_labels=frame_labels).loss
    torch.testing.assert_close(combined, clip_only + frame_only)
    assert frame_only > 0
    # every frame ignored: the clip loss alone, not NaN
    ignored = model(**features, labels=labels, frame_labels=torch.full((2, 192), -100)).loss
    torch.testing.assert_close(ignored, clip_only)

    with pytest.raises(ValueError, match="num_frame_labels is 0"):
        tiny_model()(**features, frame_labels=frame_labels)


# -- config --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"num_attention_heads": 5}, "num_attention_heads=5 must divide hidden_size=16"),
        ({"stage_pool": ((2, 2),)}, "stage_pool needs one positive"),
        ({"stage_pool": ((2, 2), (0, 2))}, "stage_pool needs one positive"),
        ({"annotation_level": "segment"}, "annotation_level must be one of"),
        ({"loss": "hinge"}, "loss must be one of"),
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"stem_stride": (2,)}, "stem_stride must be a positive"),
        ({"branch_ratio": 0.0}, "branch_ratio must be in"),
        ({"hidden_dropout": 1.0}, "hidden_dropout must be in"),
        ({"time_masks": -1}, "time_masks must be a non-negative integer"),
        ({"frequency_focus_frames": 8}, "frequency_focus_frames must be None or an odd positive integer"),
        ({"frequency_focus_frames": 0}, "frequency_focus_frames must be None or an odd positive integer"),
    ],
)
def test_config_validation(settings, message):
    with pytest.raises(ValueError, match=f"RespSTFConfig.{message}"):
        RespSTFConfig(**{**TINY, **settings})


def test_parameter_counts_of_the_presets():
    labels = dict(id2label=id2label(TASK), label2id=label2id(TASK))
    counts = {
        name: sum(p.numel() for p in RespSTFForAudioClassification(config).parameters())
        for name, config in (("default", RespSTFConfig(**labels)), ("paper", RespSTFConfig.paper(**labels)))
    }
    print(f"parameters with 5 labels: default {counts['default']:,}, paper {counts['paper']:,}")
    # Exact: one attention layer more or less is 74,784 (default) or 527,104 (paper) parameters.
    assert counts == {"default": 264_519, "paper": 2_579_879}
    assert RespSTFConfig.paper().n_scales == 128 and RespSTFConfig.paper(hidden_size=128).hidden_size == 128


# -- attention mask -----------------------------------------------------------------------------------


def test_attention_mask_ignores_padding():
    """A real 0.3 s clip zero-padded to 192 frames: with its mask the logits stay close to the clip's
    own (unpadded) logits; without it the padding moves them. (Convolutions still see the padding at
    the clip's edge, so masked is close, not identical.)"""
    clip, _ = read_recording(SHORT_RECORDING)
    padded = RespSTFFeatureExtractor(padding_mode="zero")(clip, sampling_rate=8000, return_tensors="pt")
    alone = RespSTFFeatureExtractor()(clip, sampling_rate=8000, truncation=False, return_tensors="pt")
    assert padded["attention_mask"].sum() == 19 and alone["input_features"].shape[-1] == 19
    model = tiny_model()
    with torch.no_grad():
        masked = model(**padded).logits
        unmasked = model(padded["input_features"]).logits
        reference = model(**alone).logits
    assert torch.isfinite(masked).all() and torch.isfinite(unmasked).all()
    assert not torch.allclose(masked, unmasked, atol=1e-4)
    assert (masked - reference).abs().max() < (unmasked - reference).abs().max()


def test_attention_mask_is_checked(features):
    model = tiny_model()
    mask = features["attention_mask"]
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, frames\) = \(2, 192\) .* got \(2, 100\)"):
        model(features["input_features"], mask[:, :100])
    no_audio = mask.clone()
    no_audio[1] = 0
    with pytest.raises(ValueError, match="attention_mask has an all-zero row"):
        model(features["input_features"], no_audio)


def test_torch_export_with_a_dynamic_batch(features):
    """``torch.export`` traces the model (the all-zero-row check is skipped while tracing) with a dynamic
    batch at the clip's frame count; the exported program matches eager on a larger batch with padding."""
    model = tiny_model()
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(
        model, (), features, dynamic_shapes={"input_features": {0: batch}, "attention_mask": {0: batch}}
    ).module()
    larger = {name: torch.cat([value, value[:1]]) for name, value in features.items()}
    larger["attention_mask"][2, 100:] = 0
    with torch.no_grad():
        expected = model(**larger).logits
    torch.testing.assert_close(exported(**larger).logits, expected, atol=1e-5, rtol=1e-5)


# -- Hub behaviours ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory, extractor, features):
    """A tiny random model + the feature extractor saved as a Hub folder, and the logits it gives."""
    folder = tmp_path_factory.mktemp("respstf-tiny")
    model = tiny_model()
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    with torch.no_grad():
        logits = model(**features).logits
    return folder, logits


def test_save_pretrained_writes_safetensors_configs_and_code(saved, features):
    folder, logits = saved
    files = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json"} <= files
    assert {"configuration_respstf.py", "modeling_respstf.py", "feature_extraction_respstf.py", "cwt.py",
            "pipeline_respstf.py", "audio_file_respstf.py"} <= files  # the folder's pipeline and its file reader
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)

    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "respstf" and config["id2label"]["3"] == "CAS & DAS"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_respstf.RespSTFConfig",
        "AutoModel": "modeling_respstf.RespSTFModel",
        "AutoModelForAudioClassification": "modeling_respstf.RespSTFForAudioClassification",
    }
    assert config["custom_pipelines"] == {"audio-classification": {
        "impl": "pipeline_respstf.RespSTFAudioClassificationPipeline", "pt": ["AutoModelForAudioClassification"],
        "tf": [], "type": "audio"}}
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"] == {"AutoFeatureExtractor": "feature_extraction_respstf.RespSTFFeatureExtractor"}
    assert preprocessor["n_scales"] == 64 and preprocessor["sampling_rate"] == 8000

    # the shipped code imports only its own folder's files and third-party libraries
    for name in ("configuration_respstf.py", "modeling_respstf.py", "feature_extraction_respstf.py", "cwt.py",
                 "pipeline_respstf.py", "detection_respstf.py", "audio_file_respstf.py"):
        assert not re.search(r"^\s*(from|import)\s+respstf\b", (folder / name).read_text(), re.MULTILINE), name

    # round trip, through the Auto classes of this (installed) package
    loaded = AutoModelForAudioClassification.from_pretrained(folder).eval()
    assert type(loaded) is RespSTFForAudioClassification and loaded.config.id2label == id2label(TASK)
    assert isinstance(AutoFeatureExtractor.from_pretrained(folder), RespSTFFeatureExtractor)
    assert isinstance(AutoConfig.from_pretrained(folder), RespSTFConfig)
    backbone = AutoModel.from_pretrained(folder)
    assert type(backbone) is RespSTFModel
    assert torch.equal(backbone.stem[0].weight, loaded.respstf.stem[0].weight)
    with torch.no_grad():
        assert torch.equal(loaded(**features).logits, logits)


# Loads folders or Hub ids with the stock Auto classes in an interpreter where respstf cannot be imported,
# and prints, for each, the logits for a real recording, the modules the classes came from and the
# pipeline's scores.
_REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["respstf"] = None  # any `import respstf...` now fails
    import json
    import soundfile, torch
    from transformers import AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification, pipeline

    recording, references = sys.argv[1], sys.argv[2:]
    waveform, rate = soundfile.read(recording, dtype="float32")
    clips = [waveform, waveform[len(waveform) // 2 :]]
    reports = {}
    for reference in references:
        model = AutoModelForAudioClassification.from_pretrained(reference, trust_remote_code=True).eval()
        extractor = AutoFeatureExtractor.from_pretrained(reference, trust_remote_code=True)
        backbone = AutoModel.from_pretrained(reference, trust_remote_code=True)
        classify = pipeline("audio-classification", model=reference, trust_remote_code=True)
        with torch.no_grad():
            logits = model(**extractor(clips, sampling_rate=rate, return_tensors="pt")).logits
        reports[reference] = {
            "logits": logits.tolist(),
            "modules": [type(model).__module__, type(extractor).__module__, type(backbone).__module__],
            "backbone": type(backbone).__name__,
            "pipeline": classify(waveform),
            "pipeline_class": f"{type(classify).__module__}.{type(classify).__name__}",
        }
    print(json.dumps(reports))
    """
)
HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def without_respstf(saved, tmp_path_factory) -> dict[str, dict]:
    """Reports of one fresh interpreter without respstf, loading the saved folder and "org/name" from a
    folder laid out like the Hub cache (models--org--name/snapshots/<commit>, refs/main -> <commit>)."""
    folder, _ = saved
    work = tmp_path_factory.mktemp("no-respstf")
    repo = work / "hub" / "models--org--name"
    shutil.copytree(folder, repo / "snapshots" / HUB_COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(HUB_COMMIT)
    result = subprocess.run(
        [sys.executable, "-c", _REMOTE_CODE_SCRIPT, str(CRACKLE_RECORDING), str(folder), "org/name"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=work,  # not the repo root, so the source folders are not importable either
        env={
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_CACHE": str(work / "hub"),
            "HF_MODULES_CACHE": str(work / "modules"),
            "OMP_NUM_THREADS": "1",
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_remote_code_loads_without_respstf(saved, without_respstf):
    folder, logits = saved
    report = without_respstf[str(folder)]
    assert all(module.startswith("transformers_modules.") for module in report["modules"]), report["modules"]
    assert report["backbone"] == "RespSTFModel"
    np.testing.assert_allclose(report["logits"], logits.numpy(), atol=1e-5)
    assert report["pipeline"][0]["label"] == id2label(TASK)[int(logits[0].argmax())]
    # The folder's own pipeline, from its code: it reads a file at the file's own rate.
    assert re.fullmatch(r"transformers_modules\..+\.pipeline_respstf\.RespSTFAudioClassificationPipeline",
                        report["pipeline_class"]), report["pipeline_class"]


def test_pipeline_with_array_dict_and_file(saved, crackle):
    """The folder's audio-classification pipeline gives the stock pipeline's answer for every kind of input, and for
    a file path the same as for its samples; it is the folder's, so transformers asks for trust_remote_code."""
    folder, logits = saved
    classifier = pipeline("audio-classification", model=str(folder), trust_remote_code=True)
    assert type(classifier).__name__ == "RespSTFAudioClassificationPipeline"
    stock = pipeline("audio-classification", model=RespSTFForAudioClassification.from_pretrained(folder),
                     feature_extractor=RespSTFFeatureExtractor.from_pretrained(folder))
    assert type(stock).__name__ == "AudioClassificationPipeline"
    expected = logits[0].softmax(-1)
    inputs = [crackle, torch.from_numpy(crackle), {"raw": crackle, "sampling_rate": 8000},
              {"array": crackle, "sampling_rate": 8000}, str(CRACKLE_RECORDING), CRACKLE_RECORDING,
              CRACKLE_RECORDING.read_bytes()]
    for audio in inputs:
        with pytest.warns(UserWarning, match="centre-cropped"):  # a whole recording into a 3.07 s clip: the user is told
            scores = classifier(audio)
        assert [s["label"] for s in scores] == [id2label(TASK)[int(i)] for i in expected.argsort(descending=True)]
        np.testing.assert_allclose([s["score"] for s in scores], expected.sort(descending=True).values, atol=1e-5)
        if not isinstance(audio, (bytes, Path)) and (shutil.which("ffmpeg") or not isinstance(audio, str)):
            with pytest.warns(UserWarning, match="centre-cropped"):
                assert same_answer(stock(audio), scores)
    assert len(classifier(crackle, top_k=2)) == 2
    assert classifier(crackle, function_to_apply="none")[0]["score"] == pytest.approx(float(logits[0].max()), abs=1e-4)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("audio-classification", model=str(folder))
    from respstf.modeling import RespSTFAudioClassificationPipeline

    package = pipeline("audio-classification", model=str(folder), pipeline_class=RespSTFAudioClassificationPipeline)
    with pytest.warns(UserWarning, match="centre-cropped"):
        assert same_answer(package(str(CRACKLE_RECORDING)), scores)


def same_answer(answer: list[dict], expected: list[dict]) -> bool:
    """Two audio-classification answers: the same labels in the same order, scores equal to 1e-5."""
    return ([row["label"] for row in answer] == [row["label"] for row in expected]
            and np.allclose([row["score"] for row in answer], [row["score"] for row in expected], atol=1e-5))


def test_hub_cache_folder_resolves_offline(saved, without_respstf):
    """ "org/name" resolves from a folder laid out like the Hub cache with HF_HUB_OFFLINE=1: the Hub
    code path (refs/main -> snapshot, remote code pinned to the commit) without a network."""
    _, logits = saved
    report = without_respstf["org/name"]
    assert all(module.startswith(f"transformers_modules.org.name.{HUB_COMMIT}.") for module in report["modules"])
    np.testing.assert_allclose(report["logits"], logits.numpy(), atol=1e-5)
