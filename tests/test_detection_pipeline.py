"""The ``respiratory-event-detection`` pipeline (modeling/pipeline_respstf.py) on real SPRSound recordings: shipped in a
saved detector's folder, run through ``pipeline(..., trust_remote_code=True)`` with and without this package."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file
from scipy.signal import resample_poly
from transformers import pipeline

from conftest import CRACKLE_RECORDING, REPO_ROOT, read_recording, single_model
from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset import DETECTION_LABELS, detection_rule
from respstf.modeling import RespiratoryEventDetectionPipeline, RespSTFConfig, RespSTFForAudioFrameClassification

TASK = "respiratory-event-detection"
RECORD_LABELS = ["Normal", "CAS", "DAS", "CAS & DAS", "Poor Quality"]
EVENT_TYPES = [label for label in DETECTION_LABELS if label not in ("Normal", "Poor Quality")]
# Real train recordings (9.2 s, 8 kHz): annotated CAS & DAS, and Poor Quality (15.4 s, no events).
CAS_AND_DAS_RECORDING = CRACKLE_RECORDING.with_name("40638274_9.7_1_p2_1801.flac")
POOR_QUALITY_RECORDING = CRACKLE_RECORDING.with_name("40069321_15.3_0_p1_981.flac")
CUSTOM_PIPELINES = {TASK: {"impl": "pipeline_respstf.RespiratoryEventDetectionPipeline",
                           "pt": ["AutoModelForAudioFrameClassification"], "tf": [], "type": "audio"}}


@pytest.fixture(scope="module")
def detector_folder(tmp_path_factory):
    """A detector saved as training saves one: task 1-2's checkpoint with an 8-class frame head (the 7 event types and
    Poor Quality) and the record rule. Its frame head starts from task 1-2's clip head for the 7 event types (Poor
    Quality rarely most probable), so its frames differ between classes as a trained detector's do."""
    source = single_model("12")
    config = RespSTFConfig.from_pretrained(source)
    config.id2label = dict(enumerate(DETECTION_LABELS))
    config.label2id = {name: index for index, name in enumerate(DETECTION_LABELS)}
    config.finetuning_task, config.annotation_level, config.architectures = "events", "record", None
    config.detection = {**detection_rule(), "evidence_seconds": 1.0,
                        "record_logit_adjustment": {"continuous": 0.0, "discontinuous": 0.0, "poor_quality": 0.0}}
    model = RespSTFForAudioFrameClassification.from_pretrained(source, config=config, ignore_mismatched_sizes=True)
    weights = load_file(source / "model.safetensors")  # task 1-2's clip head
    with torch.no_grad():
        model.classifier.weight[:7] = weights["classifier.weight"]
        model.classifier.bias[:7] = weights["classifier.bias"]
        model.classifier.weight[7] = 0.0
        model.classifier.bias[7] = -2.0
    extractor = RespSTFFeatureExtractor.from_pretrained(source)
    extractor.n_frames, extractor.padding_mode = 960, "zero"
    folder = tmp_path_factory.mktemp("detector")
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def detector(detector_folder):
    return pipeline(TASK, model=str(detector_folder), trust_remote_code=True)


@pytest.fixture(scope="module")
def answers(detector, sprsound_root):
    """The detector's answers (with frame scores) for the real recordings, by file path, computed once."""
    paths = [CRACKLE_RECORDING, CAS_AND_DAS_RECORDING, POOR_QUALITY_RECORDING]
    for path in paths:
        read_recording(path)  # skips with the shared-data reason when absent
    return dict(zip(paths, detector([str(path) for path in paths], return_frame_scores=True)))


def check_answer(answer: dict, duration: float, frame_scores: bool = True) -> None:
    """The output schema, exactly."""
    assert set(answer) == {"events", "record_label", "record_scores"} | ({"frame_scores"} if frame_scores else set())
    assert answer["record_label"] in RECORD_LABELS
    assert list(answer["record_scores"]) == RECORD_LABELS
    assert sum(answer["record_scores"].values()) == pytest.approx(1, abs=5e-4)  # each rounded to 4 decimals
    assert answer["record_label"] == max(answer["record_scores"], key=answer["record_scores"].get)
    starts = [event["start"] for event in answer["events"]]
    assert starts == sorted(starts)
    for event in answer["events"]:
        assert set(event) == {"label", "start", "end", "score"} and event["label"] in EVENT_TYPES
        assert 0 <= event["start"] < event["end"] <= round(duration, 3) and 0 <= event["score"] <= 1
    for earlier, later in zip(answer["events"], answer["events"][1:]):
        assert earlier["end"] <= later["start"]
    if frame_scores:
        scores = answer["frame_scores"]
        assert set(scores) == {"frame_seconds", "labels", "scores"} and scores["labels"] == DETECTION_LABELS
        assert scores["frame_seconds"] == pytest.approx(0.256)  # 16 ms extractor frames x 16 per output frame
        frames = np.array(scores["scores"])
        assert frames.shape == (math.ceil(duration / 0.256), len(DETECTION_LABELS))  # the recording's frames only
        np.testing.assert_allclose(frames.sum(1), 1, atol=2e-3)


def timeline(answer: dict, frames: int) -> list[str | None]:
    """The event label (None: none) at each output frame's centre."""
    centres = (np.arange(frames) + 0.5) * 0.256
    labels = [None] * frames
    for event in answer["events"]:
        for index in np.flatnonzero((centres >= event["start"]) & (centres < event["end"])):
            labels[index] = event["label"]
    return labels


def test_a_saved_detector_ships_its_pipeline(detector_folder, tmp_path):
    """config.json names the pipeline under custom_pipelines, and the folder holds its code, byte-equal to the
    package's; a model without config.detection (and a detector whose rule was removed) names none."""
    saved = json.loads((detector_folder / "config.json").read_text())
    assert saved["custom_pipelines"] == CUSTOM_PIPELINES
    assert saved["auto_map"]["AutoModelForAudioFrameClassification"] == "modeling_respstf.RespSTFForAudioFrameClassification"
    for name in ("pipeline_respstf.py", "detection_respstf.py", "modeling_respstf.py", "configuration_respstf.py",
                 "feature_extraction_respstf.py"):
        package = REPO_ROOT / ("feature_extraction" if name.startswith("feature") else "modeling") / name
        assert (detector_folder / name).read_bytes() == package.read_bytes(), name

    reloaded = RespSTFForAudioFrameClassification.from_pretrained(detector_folder)
    reloaded.config.detection = None
    reloaded.save_pretrained(tmp_path / "no-rule")
    assert "custom_pipelines" not in json.loads((tmp_path / "no-rule" / "config.json").read_text())


def test_schema_of_real_recordings(answers):
    for path, answer in answers.items():
        waveform, rate = read_recording(path)
        duration = len(waveform) / rate
        check_answer(answer, duration)
        frames = np.array(answer["frame_scores"]["scores"])
        # Events are the runs of frames where their type is the most probable class (ties at 4 decimals allowed).
        labels = timeline(answer, len(frames))
        for index, label in enumerate(labels):
            if label is not None:
                assert frames[index, DETECTION_LABELS.index(label)] >= frames[index].max() - 1e-4
        # Poor Quality is one decision over the whole recording: its mean probability over every frame.
        assert answer["record_scores"]["Poor Quality"] == pytest.approx(frames[:, -1].mean(), abs=1e-3)
    # The starting head (the Task 1-2 clip head on every frame) hears the annotated CAS & DAS recording's crackles.
    assert answers[CAS_AND_DAS_RECORDING]["record_label"] in ("DAS", "CAS & DAS")
    assert "Fine Crackle" in {event["label"] for event in answers[CAS_AND_DAS_RECORDING]["events"]}


def test_a_path_and_dicts_at_8_and_16_khz_give_the_same_events(detector, answers):
    waveform, rate = read_recording(CAS_AND_DAS_RECORDING)
    assert rate == 8000
    from_path = answers[CAS_AND_DAS_RECORDING]
    same_rate = detector({"raw": waveform, "sampling_rate": rate}, return_frame_scores=True)
    assert same_rate == from_path  # the file's samples, exactly
    assert detector(CAS_AND_DAS_RECORDING.read_bytes(), return_frame_scores=True) == from_path
    upsampled = resample_poly(waveform, 2, 1).astype(np.float32)  # the same sound at 16 kHz, resampled back inside
    resampled = detector({"array": upsampled, "sampling_rate": 16000}, return_frame_scores=True)
    check_answer(resampled, len(upsampled) / 16000)
    frames = len(from_path["frame_scores"]["scores"])
    np.testing.assert_allclose(resampled["frame_scores"]["scores"], from_path["frame_scores"]["scores"], atol=0.05)
    assert resampled["record_label"] == from_path["record_label"]
    assert resampled["record_scores"] == pytest.approx(from_path["record_scores"], abs=0.02)
    agreement = np.mean([a == b for a, b in zip(timeline(resampled, frames), timeline(from_path, frames))])
    assert agreement >= 0.9, agreement
    for ours, theirs in ((from_path, resampled), (resampled, from_path)):  # each event has a counterpart
        for event in ours["events"]:
            assert any(other["label"] == event["label"] and other["start"] < event["end"] and event["start"] < other["end"]
                       for other in theirs["events"]), event


def test_a_file_cut_short_is_detected_on_the_part_present_with_a_warning(detector, tmp_path):
    """Issue 32, defect 2, for the detector's pipeline: a FLAC cut short (soundfile stops partway) and a WAV cut short
    (soundfile reads what is there without a word) were read without a warning."""
    data = CAS_AND_DAS_RECORDING.read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"cut.flac is cut short: its header announces [\d,]+ samples of audio") as caught:
        answer = detector(str(tmp_path / "cut.flac"))
    present = int(re.search(r"([\d,]+) decode", str(caught[0].message)).group(1).replace(",", ""))
    waveform, rate = read_recording(CAS_AND_DAS_RECORDING)
    assert answer == detector({"raw": waveform[:present], "sampling_rate": rate})
    check_answer(answer, present / rate, frame_scores=False)
    cut = tmp_path / "cut.wav"
    soundfile.write(cut, waveform, rate, subtype="PCM_16")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"cut.wav is cut short: its header announces [\d,]+ bytes of audio"):
        detector(str(cut))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="no FFmpeg here")
def test_a_format_soundfile_does_not_read_goes_through_ffmpeg(detector, answers, tmp_path):
    """An M4A (AAC) file, which libsndfile does not read, is decoded by FFmpeg at the model's rate."""
    m4a = tmp_path / "recording.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(CAS_AND_DAS_RECORDING), "-c:a", "aac", "-b:a", "64k",
                    str(m4a)], check=True, timeout=60)
    with pytest.raises(soundfile.LibsndfileError):
        soundfile.info(m4a)
    answer = detector(str(m4a), return_frame_scores=True)
    check_answer(answer, len(answer["frame_scores"]["scores"]) * 0.256)
    assert abs(len(answer["frame_scores"]["scores"]) - len(answers[CAS_AND_DAS_RECORDING]["frame_scores"]["scores"])) <= 1
    assert answer["record_label"] == answers[CAS_AND_DAS_RECORDING]["record_label"]


def test_the_registered_task_runs_loaded_objects_and_a_folder_needs_trust_remote_code(detector_folder, answers):
    """With the package imported the task is registered: loaded objects, or the package's pipeline class, need no
    remote code; the folder alone does, since transformers takes a task named in its custom_pipelines from there."""
    model = RespSTFForAudioFrameClassification.from_pretrained(detector_folder)
    extractor = RespSTFFeatureExtractor.from_pretrained(detector_folder)
    local = pipeline(TASK, model=model, feature_extractor=extractor)
    assert type(local) is RespiratoryEventDetectionPipeline
    assert local(str(CRACKLE_RECORDING), return_frame_scores=True) == answers[CRACKLE_RECORDING]
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline(TASK, model=str(detector_folder))
    assert type(pipeline(TASK, model=str(detector_folder), pipeline_class=RespiratoryEventDetectionPipeline)) \
        is RespiratoryEventDetectionPipeline


def test_the_record_rule_is_read_from_the_loaded_config(detector, answers):
    """``model.config.detection`` changed on a loaded detector applies: a large Poor Quality offset makes the whole
    recording Poor Quality, its events unchanged (Poor Quality is a record decision)."""
    rule = detector.model.config.detection
    try:
        detector.model.config.detection = {**rule, "record_logit_adjustment": {"poor_quality": 20.0}}
        answer = detector(str(CRACKLE_RECORDING))
    finally:
        detector.model.config.detection = rule
    assert answer["record_label"] == "Poor Quality" and answer["events"] == answers[CRACKLE_RECORDING]["events"]


def test_bad_inputs_get_one_line_errors(detector, detector_folder, tmp_path):
    missing = tmp_path / "no-such-recording.wav"
    with pytest.raises(ValueError, match=rf"^{missing}: audio file not found\.$"):
        detector(str(missing))
    with pytest.raises(ValueError, match=r"a dict input needs \"raw\" \(or \"array\"\).*got the keys \['audio', 'rate'\]"):
        detector({"audio": np.zeros(8000, np.float32), "rate": 8000})
    with pytest.raises(ValueError, match=r"got the keys \['raw'\]"):
        detector({"raw": np.zeros(8000, np.float32)})
    with pytest.raises(ValueError, match=r"^the audio input is empty"):
        detector({"raw": np.zeros(0, np.float32), "sampling_rate": 8000})
    with pytest.raises(ValueError, match=r"^the audio input is empty"):
        detector(np.zeros(0, np.float32))
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.int16), 8000)
    with pytest.raises(ValueError, match=rf"^{empty}: the audio file holds no samples\.$"):
        detector(str(empty))
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not a recording")
    with pytest.raises(ValueError, match=rf"^{not_audio}: not a readable audio file"):
        detector(str(not_audio))
    with pytest.raises(ValueError, match="sampled at 1000 Hz"):  # the extractor's own check
        detector({"raw": np.random.default_rng(0).normal(0, 0.1, 1000).astype(np.float32), "sampling_rate": 1000})
    with pytest.raises(TypeError, match="takes a file path"):
        detector(3)
    with pytest.raises(ValueError, match="use batch_size=1"):
        detector([str(missing)] * 2, batch_size=2)
    with pytest.raises(ValueError, match="has no config.detection"):
        model = RespSTFForAudioFrameClassification.from_pretrained(detector_folder)
        model.config.detection = None
        pipeline(TASK, model=model, feature_extractor=RespSTFFeatureExtractor.from_pretrained(detector_folder))


_WITHOUT_PACKAGE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    sys.modules["respstf"] = None  # any `import respstf...` now fails
    from transformers import pipeline
    detector = pipeline("respiratory-event-detection", model=sys.argv[1], trust_remote_code=True)
    answers = [detector(path, return_frame_scores=True) for path in sys.argv[3:]]
    answers.append(detector({"raw": np.load(sys.argv[2]), "sampling_rate": 16000}, return_frame_scores=True))
    print(json.dumps({"pipeline": type(detector).__module__, "model": type(detector.model).__module__,
                      "answers": answers}))
    """
)


def test_without_the_package_the_folder_gives_the_same_answers(detector, detector_folder, answers, tmp_path):
    waveform, rate = read_recording(CRACKLE_RECORDING)
    upsampled = resample_poly(waveform, 2, 1).astype(np.float32)
    np.save(tmp_path / "upsampled.npy", upsampled)
    paths = [str(CRACKLE_RECORDING), str(POOR_QUALITY_RECORDING)]
    completed = subprocess.run([sys.executable, "-c", _WITHOUT_PACKAGE, str(detector_folder), str(tmp_path / "upsampled.npy"),
                                *paths], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["pipeline"].startswith("transformers_modules.") and report["model"].startswith("transformers_modules.")
    expected = [answers[CRACKLE_RECORDING], answers[POOR_QUALITY_RECORDING],
                detector({"raw": upsampled, "sampling_rate": 16000}, return_frame_scores=True)]
    for theirs, ours in zip(report["answers"], expected, strict=True):
        assert theirs["events"] == ours["events"] and theirs["record_label"] == ours["record_label"]
        assert theirs["record_scores"] == pytest.approx(ours["record_scores"], abs=1e-4)
        np.testing.assert_allclose(theirs["frame_scores"]["scores"], ours["frame_scores"]["scores"], atol=1e-4)


@pytest.mark.slow
def test_a_ten_minute_recording(detector, sprsound_root, tmp_path):
    """Real recordings end to end for 10 minutes, as a file: the whole of it is read (2,344 frames of 0.256 s, the
    model in bounded chunks), its events inside it."""
    waveforms, total = [], 0
    for path in sorted((sprsound_root / "train_wav").glob("*.flac")):
        waveform, rate = read_recording(path)
        if rate == 8000:
            waveforms.append(waveform)
            total += len(waveform)
        if total >= 600 * 8000:
            break
    recording = tmp_path / "ten-minutes.flac"
    soundfile.write(recording, np.concatenate(waveforms)[: 600 * 8000], 8000, subtype="PCM_16")
    answer = detector(str(recording), return_frame_scores=True)
    check_answer(answer, 600.0)
    assert len(answer["frame_scores"]["scores"]) == 2344 and answer["events"]
    assert answer["events"][-1]["end"] <= 600.0
