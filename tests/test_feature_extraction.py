"""RespSTFFeatureExtractor and the pooled Morlet CWT on real SPRSound / ICBHI recordings: shapes, input
formats, resampling, padding and masks, agreement with ``pywt.cwt``, bounded memory on a 1-hour input,
and a clear ``ValueError`` for every kind of bad input."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import pywt
import torch
from conftest import (
    CHECKPOINTS,
    CRACKLE_RECORDING,
    EXAMPLE_WAV,
    ICBHI_44K_RECORDING,
    REPO_ROOT,
    SHORT_RECORDING,
    SPRSOUND,
    read_recording,
)
from scipy.signal import resample_poly

from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset import task_labels

# A real recording of the inter-patient test set (8.1 s).
TEST_RECORDING = SPRSOUND / "test_wav" / "40512331_8.1_1_p4_3547.flac"


@pytest.fixture(scope="module")
def extractor() -> RespSTFFeatureExtractor:
    return RespSTFFeatureExtractor()


@pytest.fixture(scope="module")
def crackle() -> np.ndarray:
    waveform, rate = read_recording(CRACKLE_RECORDING)
    assert rate == 8000
    return waveform


@pytest.fixture(scope="module")
def short_clip() -> np.ndarray:
    waveform, rate = read_recording(SHORT_RECORDING)
    assert rate == 8000 and len(waveform) == 2432  # 0.304 s
    return waveform


def n_frames_of(n_samples: int, extractor: RespSTFFeatureExtractor) -> int:
    return -(-n_samples // extractor.hop_length)


# -- shapes, dtypes, input formats ---------------------------------------------------------------


def test_output_shapes_and_dtypes(extractor, crackle):
    out = extractor(crackle, sampling_rate=8000)
    assert set(out) == {"input_features", "attention_mask"}
    assert out["input_features"].shape == (1, 1, 64, 192)
    assert out["input_features"].dtype == np.float32
    assert out["attention_mask"].shape == (1, 192) and out["attention_mask"].dtype == np.int32
    assert np.isfinite(out["input_features"]).all()
    # per-recording normalisation: zero mean, unit variance over the real frames
    assert abs(out["input_features"].mean()) < 1e-4 and abs(out["input_features"].std() - 1) < 1e-3

    pt = extractor(crackle, sampling_rate=8000, return_tensors="pt")
    assert isinstance(pt["input_features"], torch.Tensor) and pt["input_features"].dtype == torch.float32
    np.testing.assert_array_equal(pt["input_features"].numpy(), out["input_features"])

    assert extractor.frequencies.shape == (64,)
    assert extractor.frequencies[0] == pytest.approx(3900) and extractor.frequencies[-1] == pytest.approx(50)
    assert (np.diff(extractor.frequencies) < 0).all()  # row 0 is the top band
    assert extractor.clip_seconds == pytest.approx(192 * 128 / 8000)


def test_int16_and_float_inputs_agree(extractor):
    as_int16, _ = read_recording(CRACKLE_RECORDING, dtype="int16")
    as_float, _ = read_recording(CRACKLE_RECORDING, dtype="float32")
    from_int = extractor(as_int16, sampling_rate=8000)["input_features"]
    from_float = extractor(as_float, sampling_rate=8000)["input_features"]
    np.testing.assert_allclose(from_int, from_float, atol=1e-4)
    # a torch tensor and a plain list are accepted too
    np.testing.assert_allclose(extractor(torch.from_numpy(as_float), sampling_rate=8000)["input_features"], from_float, atol=1e-6)
    np.testing.assert_allclose(extractor(as_float.tolist(), sampling_rate=8000)["input_features"], from_float, atol=1e-6)


def test_stereo_is_downmixed(extractor, crackle):
    other, _ = read_recording(TEST_RECORDING)
    n = min(len(crackle), len(other))
    left, right = crackle[:n], other[:n]
    mono = extractor((left + right) / 2, sampling_rate=8000)["input_features"]
    for stereo in (np.stack([left, right], axis=1), np.stack([left, right], axis=0)):  # (samples, 2) and (2, samples)
        np.testing.assert_allclose(extractor([stereo], sampling_rate=8000)["input_features"], mono, atol=1e-5)


def test_bare_array_as_soundfile_gives_it_is_one_multichannel_clip(extractor, crackle, tmp_path):
    """``soundfile.read`` of a stereo (or explicitly 2-D mono) file gives ``(n_samples, channels)``: one clip, downmixed."""
    import soundfile

    other, _ = read_recording(TEST_RECORDING)
    n = min(len(crackle), len(other))
    soundfile.write(tmp_path / "stereo.wav", np.stack([crackle[:n], other[:n]], axis=1), 8000, subtype="FLOAT")
    stereo, rate = soundfile.read(tmp_path / "stereo.wav", dtype="float32")
    assert stereo.shape == (n, 2)
    mono = extractor((crackle[:n] + other[:n]) / 2, sampling_rate=rate, truncation=True)["input_features"]
    np.testing.assert_allclose(extractor(stereo, sampling_rate=rate, truncation=True)["input_features"], mono, atol=1e-5)
    np.testing.assert_allclose(extractor(torch.from_numpy(stereo), sampling_rate=rate, truncation=True)["input_features"], mono, atol=1e-5)
    as_2d_mono, _ = soundfile.read(CRACKLE_RECORDING, dtype="float32", always_2d=True)
    assert as_2d_mono.shape == (len(crackle), 1)
    np.testing.assert_array_equal(extractor(as_2d_mono, sampling_rate=8000, truncation=True)["input_features"],
                                  extractor(crackle, sampling_rate=8000, truncation=True)["input_features"])
    # too few rows to be a clip: a batch of 2-sample clips, and the error says how 2-D arrays are read
    with pytest.raises(ValueError, match=r"has 2 samples .* 2-D array of shape \(10, 2\): .* at most 8 columns and at least 16 rows"):
        extractor(stereo[:10], sampling_rate=8000)


def test_bfloat16_tensor_input(extractor, crackle):
    as_bf16 = torch.from_numpy(crackle).bfloat16()
    out = extractor(as_bf16, sampling_rate=8000, truncation=True)["input_features"]
    np.testing.assert_allclose(out, extractor(as_bf16.float().numpy(), sampling_rate=8000, truncation=True)["input_features"], atol=1e-6)


def test_resampled_recording_gives_close_features(extractor, crackle):
    """A real 8 kHz recording upsampled to 16 kHz and passed with sampling_rate=16000 is brought back to
    8 kHz: its scalogram matches the original's (z-scored log magnitudes)."""
    original = extractor(crackle, sampling_rate=8000, truncation=False)["input_features"]
    upsampled = resample_poly(crackle, 2, 1).astype(np.float32)
    resampled = extractor(upsampled, sampling_rate=16000, truncation=False)["input_features"]
    assert resampled.shape == original.shape
    difference = np.abs(resampled - original)
    # measured: median 0.0016, p99 0.035, max 0.13, correlation 0.99998
    assert np.median(difference) < 0.01 and np.percentile(difference, 99) < 0.1
    assert np.corrcoef(original.ravel(), resampled.ravel())[0, 1] > 0.999


def test_real_44k_recording_is_resampled_without_warning(extractor):
    waveform, rate = read_recording(ICBHI_44K_RECORDING)
    assert rate == 44100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = extractor(waveform, sampling_rate=rate, truncation=False)
    assert out["input_features"].shape == (1, 1, 64, n_frames_of(round(len(waveform) * 8000 / 44100), extractor))


# -- length handling and attention mask ------------------------------------------------------------


def test_zero_padding_masks_padded_frames(short_clip):
    extractor = RespSTFFeatureExtractor(padding_mode="zero")
    out = extractor(short_clip, sampling_rate=8000)
    real = n_frames_of(len(short_clip), extractor)  # 19 frames of real audio
    np.testing.assert_array_equal(out["attention_mask"][0], np.arange(192) < real)
    assert (out["input_features"][0, 0, :, real:] == 0).all()
    assert np.isfinite(out["input_features"]).all() and out["input_features"][0, 0, :, :real].std() > 0.5


def test_repeat_padding_is_all_real_signal(extractor, short_clip):
    out = extractor(short_clip, sampling_rate=8000)
    assert out["attention_mask"].shape == (1, 192) and out["attention_mask"].all()
    features = out["input_features"][0, 0]
    # the tiles repeat: frames 19 frames apart (2432 samples = 19 hops) look alike in the interior
    period = n_frames_of(len(short_clip), extractor)
    np.testing.assert_allclose(features[:, 40:60], features[:, 40 + period : 60 + period], atol=0.05)


def test_truncation_crops_the_centre_and_false_keeps_length(extractor):
    waveform, _ = read_recording(EXAMPLE_WAV)  # 15.36 s = 960 frames
    full = extractor(waveform, sampling_rate=8000, truncation=False, return_attention_mask=False)
    assert set(full) == {"input_features"}
    assert full["input_features"].shape == (1, 1, 64, 960)
    with pytest.warns(UserWarning, match=r"longer than this feature extractor's 3\.07 s clip was centre-cropped"):
        cropped = extractor(waveform, sampling_rate=8000)  # the default (pipeline's): crops, and says so
    assert cropped["input_features"].shape == (1, 1, 64, 192) and cropped["attention_mask"].all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: crops without a word
        np.testing.assert_array_equal(extractor(waveform, sampling_rate=8000, truncation=True)["input_features"], cropped["input_features"])
        extractor(waveform[: 8000], sampling_rate=8000)  # shorter than the clip: nothing cropped, no warning
    # same audio as the centre of the full scalogram (up to the per-clip normalisation and crop edges)
    centre = RespSTFFeatureExtractor(normalization="none")
    start = (960 - 192) // 2
    np.testing.assert_allclose(
        centre(waveform, sampling_rate=8000)["input_features"][..., 10:-10],
        centre(waveform, sampling_rate=8000, truncation=False)["input_features"][..., start + 10 : start + 182],
        atol=0.05,
    )


def test_batch_of_different_lengths(extractor, crackle, short_clip):
    out = extractor([crackle, short_clip], sampling_rate=8000, truncation=False)
    frames = n_frames_of(len(crackle), extractor)
    assert out["input_features"].shape == (2, 1, 64, frames)
    np.testing.assert_array_equal(out["attention_mask"].sum(1), [frames, n_frames_of(len(short_clip), extractor)])
    alone = extractor(short_clip, sampling_rate=8000, truncation=False)["input_features"][0]
    real = alone.shape[-1]
    # measured max difference 0.006: the CWT segment length differs between the two calls
    np.testing.assert_allclose(out["input_features"][1, ..., :real], alone, atol=0.05)
    assert (out["input_features"][1, ..., real:] == 0).all()
    # a 2-D array is a batch of equal-length clips
    batch = np.stack([crackle, crackle[::-1].copy()])
    assert extractor(batch, sampling_rate=8000)["input_features"].shape == (2, 1, 64, 192)


def test_device_argument_cpu(extractor, crackle):
    reference = extractor(crackle, sampling_rate=8000, return_tensors="pt")
    for device in ("cpu", torch.device("cpu")):
        out = extractor(crackle, sampling_rate=8000, return_tensors="pt", device=device)
        assert out["input_features"].device.type == "cpu"
        torch.testing.assert_close(out["input_features"], reference["input_features"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_device_argument_cuda(extractor, crackle):
    reference = extractor(crackle, sampling_rate=8000, return_tensors="pt")
    out = extractor(crackle, sampling_rate=8000, return_tensors="pt", device="cuda")
    assert out["input_features"].device.type == "cuda"
    torch.testing.assert_close(out["input_features"].cpu(), reference["input_features"], atol=1e-3, rtol=1e-3)


# -- agreement with pywt ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CRACKLE_RECORDING, EXAMPLE_WAV, TEST_RECORDING], ids=lambda p: p.stem)
def test_cwt_matches_pywt_on_real_recordings(path):
    """Frame-pooled |CWT| (mean over each hop) of our CWT vs ``pywt.cwt(x, scales, "cmor1.5-1.0")``.

    Tolerance, over the bins above 1e-3 of the scalogram's maximum: median relative error < 2 % and
    99th percentile < 15 % (measured on these three recordings: median 0.9-1.1 %, p99 8.2-8.9 %). The
    residual comes from averaging the envelope at up to 32 points per 128-sample frame in the top bands.
    """
    waveform, rate = read_recording(path)
    extractor = RespSTFFeatureExtractor(normalization="none")
    waveform = waveform[: len(waveform) // extractor.hop_length * extractor.hop_length]
    features = extractor(waveform, sampling_rate=rate, truncation=False)["input_features"][0, 0]
    ours = np.exp(features.astype(np.float64)) - extractor.log_floor

    scales = extractor.wavelet_center_frequency * rate / extractor.frequencies
    wavelet = f"cmor{extractor.wavelet_bandwidth}-{extractor.wavelet_center_frequency}"
    coefficients, _ = pywt.cwt(waveform.astype(np.float64), scales, wavelet)
    reference = np.abs(coefficients).reshape(len(scales), -1, extractor.hop_length).mean(-1)

    assert ours.shape == reference.shape
    keep = reference > 1e-3 * reference.max()
    relative = np.abs(ours - reference)[keep] / reference[keep]
    assert np.median(relative) < 0.02, np.median(relative)
    assert np.percentile(relative, 99) < 0.15, np.percentile(relative, 99)


# -- a 1-hour recording: bounded memory, exact chunking ----------------------------------------------

_ONE_HOUR_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np, soundfile
    from respstf.feature_extraction import RespSTFFeatureExtractor

    recording, rate = soundfile.read(sys.argv[1], dtype="float32")
    waveform = np.resize(recording, 3600 * rate)  # one hour of real audio, tiled
    extractor = RespSTFFeatureExtractor(normalization="none")
    extractor(recording[:8000], sampling_rate=rate)  # warm up: imports and FFT plans
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = extractor(waveform, sampling_rate=rate, truncation=False)
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024

    # the same frames from a 10 s slice that starts on a frame boundary deep inside the hour
    hop, first = extractor.hop_length, 100_000
    piece = extractor(waveform[first * hop : first * hop + 10 * rate], sampling_rate=rate, truncation=False)
    edge = 8  # frames near the slice's ends see its zero padding
    whole = np.exp(out["input_features"][0, 0, :, first + edge : first + 625 - edge])
    part = np.exp(piece["input_features"][0, 0, :, edge : 625 - edge])
    keep = part > 1e-3 * part.max()
    print(json.dumps({
        "shape": list(out["input_features"].shape),
        "mask_sum": int(out["attention_mask"].sum()),
        "finite": bool(np.isfinite(out["input_features"]).all()),
        "growth_mb": growth_mb,
        "max_relative_difference": float((np.abs(whole - part)[keep] / part[keep]).max()),
    }))
    """
)


def test_one_hour_input_bounded_memory_and_exact_chunks():
    """1 hour at 8 kHz with truncation=False, in a fresh process: the whole scalogram comes back, finite, and away from
    a 10 s slice's ends its scalogram equals the hour's (chunking is exact up to the wavelets' truncation at 1e-4;
    measured 4e-4, asserted < 5e-3). Chunking bounds the memory: peak RSS grows < 4 GiB, a guard against a blow-up
    (one unchunked complex CWT of the hour is ~15 GB); what it takes (~530 MB) and how long is
    benchmarks/long_input.py's to measure. The timeout only catches a hang."""
    read_recording(CRACKLE_RECORDING)  # skips when the data is absent
    result = subprocess.run(
        [sys.executable, "-c", _ONE_HOUR_SCRIPT, str(CRACKLE_RECORDING)],
        capture_output=True, text=True, timeout=900, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [1, 1, 64, 225_000] and report["mask_sum"] == 225_000 and report["finite"]
    assert report["growth_mb"] < 4096, report
    assert report["max_relative_difference"] < 5e-3, report


# -- bad input ---------------------------------------------------------------------------------------


def test_empty_input_is_rejected(extractor):
    with pytest.raises(ValueError, match="audio input 0 is empty"):
        extractor(np.array([], dtype=np.float32), sampling_rate=8000)
    with pytest.raises(ValueError, match="audio input 0 is empty"):
        extractor([], sampling_rate=8000)
    with pytest.raises(ValueError, match="empty batch"):
        extractor(np.zeros((0, 8000), dtype=np.float32), sampling_rate=8000)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_rejected(extractor, crackle, bad):
    corrupted = crackle.copy()
    corrupted[1000:1003] = bad
    with pytest.raises(ValueError, match="audio input 1 has 3 NaN/Inf samples"):
        extractor([crackle, corrupted], sampling_rate=8000)


def test_all_zeros_give_finite_features_and_a_warning(extractor):
    silence = np.zeros(80_000, dtype=np.float32)
    for normalization in ("per_recording", "none"):
        with pytest.warns(UserWarning, match=r"audio input 0 is constant \(silence or a DC offset\): its scalogram holds "
                                             "no sound, so a prediction for it means nothing"):
            out = RespSTFFeatureExtractor(normalization=normalization)(silence, sampling_rate=8000)
        assert np.isfinite(out["input_features"]).all()
    with pytest.warns(UserWarning, match="audio input 0 is constant"):  # checked before resampling's edge ripple
        extractor(np.full(44_100, 0.5, dtype=np.float32), sampling_rate=44_100)
    # a constant log-scalogram standardises to ~0 (float32 rounding of the mean leaves ~1e-3), not NaN
    with pytest.warns(UserWarning, match="is constant"):
        assert np.abs(extractor(silence, sampling_rate=8000)["input_features"]).max() < 0.01


def test_input_shorter_than_any_training_sound_warns(extractor, crackle):
    with pytest.warns(UserWarning, match=r"audio input 1 is 50 ms long, shorter than any sound the models learned from "
                                         r"\(0.1 s or more\): its clip is mostly repeats of it"):
        extractor([crackle, crackle[:400]], sampling_rate=8000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extractor(crackle[:1000], sampling_rate=8000)  # 0.125 s, SPRSound's shortest events


def test_4khz_input_warns_that_the_top_of_the_band_is_missing(extractor):
    """Issue 32, defect 3: the demo warned about a 4 kHz recording, the extractor took it without a word."""
    waveform, rate = read_recording(ICBHI_44K_RECORDING.parent / "104_1b1_Al_sc_Litt3200.wav")  # Littmann 3200: 4 kHz
    assert rate == 4000
    with pytest.warns(UserWarning, match=r"audio input is sampled at 4000 Hz, so sounds above 2000 Hz are missing: the "
                                         r"model reads 50–3900 Hz \(it was trained on 8000 Hz recordings\)") as caught:
        extractor([waveform[: 2 * rate], waveform[2 * rate : 4 * rate]], sampling_rate=rate)
    assert len([w for w in caught if "sampled at" in str(w.message)]) == 1  # once per call, not once per input
    with pytest.raises(ValueError, match=r"audio input 0 is sampled at 1000 Hz, so it holds nothing above 500 Hz: too "
                                         r"little of the band the model reads\. Expected a recording sampled at 2000 Hz"):
        extractor(waveform[::4], sampling_rate=1000)


def test_recording_too_short_to_judge_warns_through_pipeline():
    """Issue 32, defect 3: a 0.2 s clip got a record model's answer through pipeline without the demo's warning
    (the demo refuses recordings under 0.25 s; a zero-padded front end reads only the clip's own frames)."""
    from transformers import pipeline

    waveform, rate = read_recording(CRACKLE_RECORDING)
    folder = CHECKPOINTS / "sprsound-task22"  # a record model: zero padding
    if not (folder / "config.json").is_file():
        pytest.skip(f"no bundled checkpoint at {folder}")
    classify = pipeline("audio-classification", model=str(folder), trust_remote_code=True)
    with pytest.warns(UserWarning, match=r"the audio input is 200 ms long, shorter than the 0.25 s a recording needs to "
                                         r"be judged \(a crackle's context\): its clip is mostly padding"):
        classify({"raw": waveform[: rate // 5], "sampling_rate": rate})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an event front end (repeat padding) takes SPRSound's shortest events
        RespSTFFeatureExtractor(padding_mode="repeat")(waveform[: rate // 5], sampling_rate=rate)


def test_input_names_name_each_input_in_errors_and_warnings(extractor, crackle):
    """What the pipelines give the extractor so that its messages name a file, not "audio input 0"."""
    with pytest.warns(UserWarning, match=r"^short.wav is 50 ms long"):
        extractor([crackle[:400]], sampling_rate=8000, input_names=["short.wav"])
    with pytest.warns(UserWarning, match=r"^low.wav is sampled at 4000 Hz"):
        extractor([crackle[::2]], sampling_rate=4000, input_names=["low.wav"])
    with pytest.raises(ValueError, match=r"^nan.wav has \d+ NaN/Inf samples"):
        extractor([np.full(8000, np.nan, dtype=np.float32)], sampling_rate=8000, input_names=["nan.wav"])
    with pytest.raises(ValueError, match=r"^input_names names 1 inputs, the call gives 2: one name per input\.$"):
        extractor([crackle, crackle], sampling_rate=8000, input_names=["a.wav"])


def test_pipeline_on_files_warns_as_the_demo_does(tmp_path):
    """Issue 32, defects 2 and 3: stock pipeline decoded a file with FFmpeg at 8 kHz and classified a FLAC cut short
    (3.6 s of a 9.2 s recording), a WAV cut short and a 4 kHz recording without a word, and resampled a dict with
    torchaudio (not installed here). The checkpoints' own audio-classification pipeline reads a file at its own rate,
    says when it is cut short, and classifies the part present exactly as its samples."""
    from transformers import pipeline

    folder = CHECKPOINTS / "sprsound-task22"
    if not (folder / "config.json").is_file():
        pytest.skip(f"no bundled checkpoint at {folder}")
    classify = pipeline("audio-classification", model=str(folder), trust_remote_code=True, top_k=None)

    data = CRACKLE_RECORDING.read_bytes()  # 9.2 s, 73,728 frames
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"cut.flac is cut short: its header announces 73,728 samples of audio, "
                                         r"\d\d,\d+ decode \(\d\d%\); only the part present is classified\.") as caught:
        answer = classify(str(tmp_path / "cut.flac"))
    present = int(re.search(r"(\d\d,\d+) decode", str(caught[0].message)).group(1).replace(",", ""))
    waveform, rate = read_recording(CRACKLE_RECORDING)
    assert answer == classify({"raw": waveform[:present], "sampling_rate": rate})
    assert answer != classify({"raw": waveform, "sampling_rate": rate})

    wav = EXAMPLE_WAV.read_bytes()
    (tmp_path / "cut.wav").write_bytes(wav[: len(wav) // 2])
    with pytest.warns(UserWarning, match=r"cut.wav is cut short: its header announces [\d,]+ bytes of audio, the file "
                                         r"holds [\d,]+ \(50%\)"):
        classify(str(tmp_path / "cut.wav"))

    littmann = ICBHI_44K_RECORDING.parent / "104_1b1_Al_sc_Litt3200.wav"  # a 4 kHz stethoscope
    read_recording(littmann)  # skips with the shared-data reason when absent
    with pytest.warns(UserWarning, match=r"104_1b1_Al_sc_Litt3200.wav is sampled at 4000 Hz, so sounds above 2000 Hz "
                                         r"are missing"):
        classify(str(littmann))

    meditron, meditron_rate = read_recording(ICBHI_44K_RECORDING)
    assert meditron_rate == 44_100  # resampled by the extractor, not torchaudio
    assert classify({"raw": meditron, "sampling_rate": meditron_rate})[0]["label"] in task_labels(22)

    (tmp_path / "notes.wav").write_text("not audio")
    with pytest.raises(ValueError, match=r"^\S*notes.wav: not a readable audio file") as refused:
        classify(str(tmp_path / "notes.wav"))
    assert "\n" not in str(refused.value)


def test_model_refuses_too_long_input_before_running_the_cnn():
    """Issue 32, defect 5: a 1-hour input with truncation=False ran the whole CNN (2.6 GB, 17 s) before the refusal."""
    from respstf.modeling import RespSTFConfig, RespSTFModel

    model = RespSTFModel(RespSTFConfig()).eval()
    ran = []
    model.stem.register_forward_pre_hook(lambda module, args: ran.append(args[0].shape))
    one_hour = torch.zeros(1, 1, 64, 3600 * 8000 // 128)  # the extractor's frames of 1 hour at 8 kHz
    with pytest.raises(ValueError, match=r"input has 14063 frames after pooling but max_frames=512"):
        model(one_hour)
    assert ran == []  # refused from the input's length

    # The count it refuses from is the count the backbone makes, for every length and both presets' strides.
    for config in (RespSTFConfig(stem_channels=4, stage_channels=(4, 4, 4)),
                   RespSTFConfig.paper(n_scales=16, stem_channels=4, stage_channels=(4, 4, 4, 4))):
        backbone = RespSTFModel(config).eval()
        for length in [*range(1, 70), 127, 128, 129, 4095, 4096, 4097]:
            with torch.no_grad():
                hidden = backbone.stem(torch.zeros(1, 1, config.n_scales, length))
                for stage in backbone.stages:
                    hidden = stage(hidden)
            assert hidden.shape[-1] == -(-length // backbone.time_stride), (config.stem_stride, length)


def test_shorter_than_smallest_wavelet_is_rejected(extractor, crackle):
    assert extractor.min_samples == 16  # the support of the 3.9 kHz wavelet at 8 kHz
    with pytest.raises(ValueError, match=f"audio input 0 has 15 samples at 8000 Hz: expected at least {extractor.min_samples}"):
        extractor(crackle[:15], sampling_rate=8000)
    with pytest.warns(UserWarning, match="audio input 0 is 2 ms long"):
        out = extractor(crackle[: extractor.min_samples], sampling_rate=8000, truncation=False)
    assert out["input_features"].shape == (1, 1, 64, 1) and np.isfinite(out["input_features"]).all()


def test_wrong_shapes_and_dtypes_are_rejected(extractor, crackle):
    with pytest.raises(ValueError, match=r"must be 1-D \(one clip\) or 2-D \(batch, n_samples\) or \(n_samples, channels\), "
                                         r"got shape \(1, 1, 73728\)"):
        extractor(crackle[None, None], sampling_rate=8000)
    with pytest.raises(ValueError, match="audio input 0: expected a 1-D waveform .* got shape"):
        extractor([crackle.reshape(2, 4, -1)], sampling_rate=8000)
    with pytest.raises(ValueError, match="unsigned integer audio"):
        extractor((crackle * 32767 + 32768).astype(np.uint16), sampling_rate=8000)
    with pytest.raises(ValueError, match="expected a numeric waveform"):
        extractor(np.array(["a", "b"] * 100), sampling_rate=8000)
    pcm = (crackle * 32767).astype(np.int16)
    with pytest.raises(ValueError, match=r"audio input 0: int64 samples \(e.g. np.array of Python ints\) have no audio bit "
                                         "depth to scale by; cast to int16"):
        extractor(np.array(pcm.tolist()), sampling_rate=8000)  # would otherwise be scaled by 2**63: silence
    with pytest.raises(ValueError, match="at most 8 channels"):
        extractor([np.zeros((16, 4000), dtype=np.float32)], sampling_rate=8000)


def test_missing_sampling_rate_warns(extractor, crackle):
    with pytest.warns(UserWarning, match="sampling_rate"):
        out = extractor(crackle)
    np.testing.assert_array_equal(out["input_features"], extractor(crackle, sampling_rate=8000)["input_features"])


@pytest.mark.parametrize("rate", [0, -8000, 8000.5])
def test_bad_sampling_rate_is_rejected(extractor, crackle, rate):
    with pytest.raises(ValueError, match="sampling_rate must be a positive integer"):
        extractor(crackle, sampling_rate=rate)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"fmax": 4000.0}, "fmax=4000.0 Hz must be below the Nyquist frequency 4000.0 Hz"),
        ({"fmax": 6000.0}, "fmax=6000.0 Hz must be below the Nyquist"),
        ({"fmin": 3000.0, "fmax": 2000.0}, "fmin must be positive and below fmax"),
        ({"fmin": 2000.0, "fmax": 2000.0}, "fmin must be positive and below fmax"),
        ({"fmin": 0.0}, "fmin must be positive"),
        ({"n_scales": 0}, "n_scales must be a positive integer"),
        ({"hop_length": 12.5}, "hop_length must be a positive integer"),
        ({"padding_mode": "mirror"}, "padding_mode must be one of"),
        ({"normalization": "global"}, "normalization must be one of"),
    ],
)
def test_impossible_config_is_rejected(settings, message):
    with pytest.raises(ValueError, match=message):
        RespSTFFeatureExtractor(**settings)


def test_settings_round_trip_through_preprocessor_config(tmp_path, crackle):
    extractor = RespSTFFeatureExtractor(n_scales=32, fmin=100.0, padding_mode="zero")
    extractor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["n_scales"] == 32 and saved["fmin"] == 100.0 and saved["padding_mode"] == "zero"
    assert saved["wavelet_bandwidth"] == 1.5 and saved["hop_length"] == 128 and "_cwt" not in saved
    loaded = RespSTFFeatureExtractor.from_pretrained(tmp_path)
    np.testing.assert_array_equal(
        loaded(crackle, sampling_rate=8000)["input_features"], extractor(crackle, sampling_rate=8000)["input_features"]
    )


# -- pickling and collation ----------------------------------------------------------------------------


def test_use_leaves_pickle_and_fingerprint_unchanged(crackle):
    """The CWT's filter-bank cache is neither pickled nor unbounded: a used extractor pickles (and
    fingerprints in ``datasets.map``) byte for byte like a fresh one, and keeps at most a few banks."""
    from datasets.fingerprint import Hasher

    from respstf.feature_extraction.cwt import _GROUPS_CACHE_SIZE

    extractor = RespSTFFeatureExtractor()
    fresh, fresh_hash = pickle.dumps(extractor), Hasher.hash(extractor)
    for n in range(4000, 4000 + 2 * _GROUPS_CACHE_SIZE * 1000, 1000):  # as many input lengths, each its own segment length
        extractor(crackle[:n], sampling_rate=8000, truncation=False)
    assert len(extractor._cwt._groups_cache) == _GROUPS_CACHE_SIZE
    assert pickle.dumps(extractor) == fresh and Hasher.hash(extractor) == fresh_hash
    copied = pickle.loads(pickle.dumps(extractor))
    np.testing.assert_array_equal(copied(crackle, sampling_rate=8000, truncation=True)["input_features"],
                                  extractor(crackle, sampling_rate=8000, truncation=True)["input_features"])


def test_data_collator_pads_variable_length_features(extractor, crackle):
    """Two real recordings extracted one by one with truncation=False (as ``datasets.map`` stores them), then
    collated by ``DataCollatorWithPadding``: the batch equals the extractor's own padded batch, and a model
    gives each example (masked) close to its own unpadded logits."""
    from transformers import DataCollatorWithPadding

    from respstf.modeling import RespSTFConfig, RespSTFForAudioClassification

    other, _ = read_recording(EXAMPLE_WAV)
    clips = [crackle, other]  # 9.2 s and 15.4 s: 576 and 960 frames
    examples = []
    for label, clip in enumerate(clips):
        one = extractor(clip, sampling_rate=8000, truncation=False)
        examples.append({"input_features": one["input_features"][0], "attention_mask": one["attention_mask"][0], "labels": label})
    lengths = [n_frames_of(len(clip), extractor) for clip in clips]
    batch = DataCollatorWithPadding(extractor)(examples)
    assert batch["input_features"].shape == (2, 1, 64, max(lengths)) and batch["input_features"].dtype == torch.float32
    assert batch["attention_mask"].sum(1).tolist() == lengths and batch["labels"].tolist() == [0, 1]
    assert (batch["input_features"][0, ..., lengths[0]:] == 0).all()
    reference = extractor(clips, sampling_rate=8000, truncation=False, return_tensors="pt")
    torch.testing.assert_close(batch["attention_mask"], reference["attention_mask"])
    torch.testing.assert_close(batch["input_features"], reference["input_features"], atol=0.05, rtol=0)  # CWT segment lengths differ

    torch.manual_seed(0)
    model = RespSTFForAudioClassification(RespSTFConfig(stem_channels=8, stage_channels=(8, 16), stage_pool=((2, 2), (2, 2)),
                                                        hidden_size=16, num_attention_heads=2, intermediate_size=32, num_labels=3)).eval()
    with torch.no_grad():
        padded = model(input_features=batch["input_features"], attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(padded, model(**reference).logits, atol=1e-3, rtol=0)  # measured 7e-8
        alone = torch.cat([model(**{key: torch.as_tensor(value)[None] for key, value in example.items() if key != "labels"}).logits
                           for example in examples])
    torch.testing.assert_close(padded[1], alone[1], atol=1e-5, rtol=0)  # the longest: not padded
    # the shorter one, masked: the padding reaches only the convolutions at its edge (measured 3.5e-5)
    torch.testing.assert_close(padded[0], alone[0], atol=1e-3, rtol=0)

    # pad's own options: a length in frames, a multiple, truncation; bad examples are named
    assert extractor.pad(examples, padding="max_length", max_length=1000)["input_features"].shape == (2, 1, 64, 1000)
    assert extractor.pad(examples, pad_to_multiple_of=64)["attention_mask"].shape == (2, 64 * -(-max(lengths) // 64))
    cut = extractor.pad(examples, padding="max_length", max_length=100, truncation=True, return_tensors="np")
    assert cut["input_features"].shape == (2, 1, 64, 100) and (cut["attention_mask"] == 1).all()
    with_frames = [{**example, "frame_labels": np.full(n, 2)} for example, n in zip(examples, lengths)]
    frame_labels = extractor.pad(with_frames, return_tensors="pt")["frame_labels"]
    assert frame_labels.shape == (2, max(lengths)) and (frame_labels[0, lengths[0]:] == -100).all()
    assert (frame_labels[0, : lengths[0]] == 2).all() and (frame_labels[1] == 2).all()
    with pytest.raises(ValueError, match="more than max_length=100: pass truncation=True"):
        extractor.pad(examples, padding="max_length", max_length=100)
    with pytest.raises(ValueError, match="padding=False needs examples of equal length"):
        extractor.pad(examples, padding=False)
    with pytest.raises(ValueError, match=r"input_features of example 0 must have shape \(1, 64, frames\)"):
        extractor.pad([{"input_features": examples[0]["input_features"][0]}])


def test_pad_without_normalisation_fills_with_the_log_of_silence(crackle):
    """Without per-recording normalisation the extractor leaves log(log_floor) past a clip's end (silence), not
    0, which on that scale would read as sound: pad() fills with the same value."""
    extractor = RespSTFFeatureExtractor(normalization="none")
    clips = [crackle[: 2 * 8000], crackle[: 3 * 8000]]
    examples = [{key: value[0] for key, value in extractor(clip, sampling_rate=8000, truncation=False).items()} for clip in clips]
    padded = extractor.pad(examples, return_tensors="np")["input_features"]
    short = n_frames_of(len(clips[0]), extractor)
    assert (padded[0, ..., short:] == np.float32(math.log(extractor.log_floor))).all()
    reference = extractor(clips, sampling_rate=8000, truncation=False, return_tensors="np")["input_features"]
    # the extractor's own padding is that value too, but for the long low-frequency wavelets' spill past the edge
    assert abs(np.median(reference[0, ..., short:]) - math.log(extractor.log_floor)) < 0.1


def test_audio_at_another_scale_is_not_called_clipped(extractor):
    """A float waveform at int16's scale (what per-recording normalisation handles) has no full scale to be clipped
    at: no clipping warning (every sample above 1 read as 100 % clipped); the same audio clipped on [-1, 1] warns."""
    waveform, rate = read_recording(CRACKLE_RECORDING)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extractor(waveform * 32768, sampling_rate=rate, truncation=True)
    with pytest.warns(UserWarning, match="audio input 0 is clipped"):
        extractor(np.clip(waveform * 50, -1, 1), sampling_rate=rate, truncation=True)
