"""RespSTFForAudioFrameClassification: frame logits over a whole recording of any length, as Hub custom code too."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoModelForAudioFrameClassification

from conftest import CRACKLE_RECORDING, read_recording
from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset.labels import FRAME_LABELS
from respstf.modeling import RespSTFConfig, RespSTFForAudioFrameClassification
from respstf.modeling.modeling_respstf import SpatioTemporalFocusing, frame_classification_loss

LABELS = dict(id2label=dict(enumerate(FRAME_LABELS)), label2id={name: i for i, name in enumerate(FRAME_LABELS)})
EXTRACTOR = dict(hop_length=128, padding_mode="zero")  # 16 ms frames, as the record recipe's


def detector(**overrides) -> RespSTFForAudioFrameClassification:
    torch.manual_seed(0)
    return RespSTFForAudioFrameClassification(RespSTFConfig(**LABELS, **overrides)).eval()


def features_of(seconds: float) -> dict[str, torch.Tensor]:
    """A real recording tiled to ``seconds``, as whole-recording scalograms ``(1, 1, 64, T)``."""
    waveform, rate = read_recording(CRACKLE_RECORDING)
    tiled = np.resize(waveform, int(seconds * rate))
    return dict(RespSTFFeatureExtractor(**EXTRACTOR)(tiled, sampling_rate=rate, truncation=False, return_tensors="pt"))


def test_frame_logits_of_a_ten_minute_recording():
    """10 minutes (37,500 frames of 16 ms, far past the 512 x 16 frames the backbone reads at once): one row of logits
    per 256 ms, finite, from bounded chunks."""
    features = features_of(600)
    model = detector()
    with torch.no_grad():
        logits = model(**features).logits
    assert model.frame_stride == 16
    assert logits.shape == (1, -(-features["input_features"].shape[-1] // 16), len(FRAME_LABELS)) == (1, 2344, 4)
    assert torch.isfinite(logits).all()


def test_chunks_are_stitched_from_where_each_frame_is_most_central():
    """Every output frame equals the logits of the one chunk it is taken from (a short max_frames makes many chunks
    of a 30 s recording); an input the backbone reads at once is one forward pass."""
    features = features_of(30)
    model = detector(max_frames=16)
    size, stride = 16, model.frame_stride
    frames = -(-features["input_features"].shape[-1] // stride)
    firsts = list(range(0, frames - size, size // 2)) + [frames - size]
    bounds = [0] + [(later + earlier + size) // 2 for earlier, later in zip(firsts, firsts[1:])] + [frames]
    with torch.no_grad():
        logits = model(**features).logits
        for first, keep_from, keep_to in zip(firsts, bounds, bounds[1:]):
            window = slice(first * stride, (first + size) * stride)
            direct = model(features["input_features"][..., window], features["attention_mask"][:, window]).logits
            torch.testing.assert_close(logits[:, keep_from:keep_to], direct[:, keep_from - first:keep_to - first])
        short = {name: value[..., :size * stride] for name, value in features.items()}
        whole = model.classifier(model.respstf(**short, return_dict=True).last_hidden_state)
        torch.testing.assert_close(model(**short).logits, whole)
    assert len(firsts) > 5


def test_frequency_focusing_per_stretch_reads_only_its_stretch():
    """frequency_focus_frames=9: each frame's bands come from the 9 frames centred on it, so a change 20 frames away
    leaves the focused frame as it was (whole-input focusing moves every frame); a window spanning the whole input
    is whole-input focusing. On a real recording's backbone map, with the same weights."""
    features = features_of(15)
    model = detector()
    with torch.no_grad():
        hidden = model.respstf.stem(features["input_features"])
        for stage in model.respstf.stages:
            hidden = stage(hidden)
    frames = hidden.shape[-1]
    changed = hidden.clone()
    changed[..., 30:] *= 3
    whole, per_stretch = model.respstf.focusing, SpatioTemporalFocusing(hidden.shape[1], 4, 5, profile_frames=9)
    spanning = SpatioTemporalFocusing(hidden.shape[1], 4, 5, profile_frames=2 * frames + 1)
    for module in (per_stretch, spanning):
        module.load_state_dict(whole.state_dict())
    with torch.no_grad():
        (before, _), (after, _) = per_stretch(hidden, None), per_stretch(changed, None)
        torch.testing.assert_close(after[..., :8], before[..., :8])  # frames 0-7 read up to 13 (bands ±4, gate ±2)
        assert not torch.allclose(whole(changed, None)[0][..., :8], whole(hidden, None)[0][..., :8])
        torch.testing.assert_close(spanning(hidden, None)[0], whole(hidden, None)[0], rtol=1e-4, atol=1e-5)
    wide = detector(frequency_focus_frames=9)
    assert wide.respstf.focusing.profile_frames == 9 and wide(**features).logits.shape == model(**features).logits.shape


def test_frame_loss_with_labels_per_input_frame():
    features = features_of(10)
    model = detector()
    labels = torch.full(features["attention_mask"].shape, -100)
    labels[:, 100:200] = 2  # a crackle's frames; the rest unannotated
    out = model(**features, labels=labels)
    torch.testing.assert_close(out.loss, frame_classification_loss(out.logits, labels, model.frame_stride))
    assert torch.isfinite(out.loss) and out.loss > 0
    out.loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0


def test_an_ensemble_config_is_refused():
    with pytest.raises(ValueError, match="is one model: an ensemble config"):
        RespSTFForAudioFrameClassification(RespSTFConfig(**LABELS, ensemble_size=2))


_REMOTE = textwrap.dedent(
    """
    import json, sys, torch
    sys.modules["respstf"] = None  # any `import respstf...` now fails
    from transformers import AutoModelForAudioFrameClassification
    model = AutoModelForAudioFrameClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    features = torch.load(sys.argv[2])
    with torch.no_grad():
        print(json.dumps({"class": type(model).__name__, "logits": model(**features).logits.tolist()}))
    """
)


def test_saved_detector_loads_with_the_auto_class_with_and_without_the_package(tmp_path):
    features = features_of(20)
    model = detector(max_frames=64)  # 20 s: three chunks
    model.save_pretrained(tmp_path / "detector")
    saved = json.loads((tmp_path / "detector" / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForAudioFrameClassification"] == "modeling_respstf.RespSTFForAudioFrameClassification"
    loaded = AutoModelForAudioFrameClassification.from_pretrained(tmp_path / "detector").eval()
    assert type(loaded) is RespSTFForAudioFrameClassification
    with torch.no_grad():
        expected = model(**features).logits
        torch.testing.assert_close(loaded(**features).logits, expected)
    torch.save(features, tmp_path / "features.pt")
    completed = subprocess.run([sys.executable, "-c", _REMOTE, str(tmp_path / "detector"), str(tmp_path / "features.pt")],
                               capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["class"] == "RespSTFForAudioFrameClassification"
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, atol=1e-5, rtol=1e-5)
