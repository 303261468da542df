"""hub_dataset on the real shared SPRSound copy: counts per split and label, schemas, every quirk of the
release and every kind of bad input (real files copied into tmp_path, then altered), splits, the dataset
card, saving/pushing and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from datasets import Audio, ClassLabel, DatasetDict, List, Value, load_dataset, load_from_disk
from huggingface_hub import DatasetCard

import respstf.hub_dataset as hub
from respstf.hub_dataset import (
    DataQualityWarning,
    build_dataset_card,
    count_labels,
    load_sprsound,
    load_sprsound_levels,
    patient_disjoint_split,
    read_audio,
    save_hub_folder,
)

from conftest import SPRSOUND  # noqa: E402
pytestmark = pytest.mark.skipif(not (SPRSOUND / "train_json").is_dir(),
                                reason=f"the shared SPRSound copy is not at {SPRSOUND} (set RESPSTF_DATA_DIR)")

# The shared README's counts.
TRAIN_RECORDS = {"Normal": 1303, "DAS": 248, "Poor Quality": 177, "CAS": 126, "CAS & DAS": 95}
TRAIN_EVENTS = {"Normal": 5159, "Fine Crackle": 912, "Wheeze": 452, "Coarse Crackle": 49, "Rhonchi": 39,
                "Wheeze+Crackle": 30, "Stridor": 15}
INTER_RECORDS = {"Normal": 241, "CAS": 65, "DAS": 24, "CAS & DAS": 17, "Poor Quality": 8}
INTER_EVENTS = {"Normal": 1040, "Wheeze": 305, "Fine Crackle": 80, "Coarse Crackle": 3, "Wheeze+Crackle": 1}

POOR_QUALITY = "40069321_15.3_0_p1_981"  # empty event list, 9.216 s
UNSORTED = "65097128_5.6_1_p1_2242"  # events listed out of order; also in example_original_wav/ as WAV
WHEEZE_CRACKLE = "40969263_4.0_0_p2_2067"  # one Wheeze+Crackle event among unsorted events
SHORTEST = "65039232_6.4_1_p1_373"  # the 0.3 s recording


def real_pair(stem: str) -> tuple[Path, Path]:
    for json_dir, audio_dir in (("train_json", "train_wav"), ("test_json/inter_test_json", "test_wav")):
        if (SPRSOUND / json_dir / f"{stem}.json").is_file():
            return SPRSOUND / json_dir / f"{stem}.json", next((SPRSOUND / audio_dir).glob(f"{stem}.*"))
    raise FileNotFoundError(stem)


def copy_pair(stem: str, folder: Path, new_stem: str | None = None, edit=None,
              audio_folder: Path | None = None) -> tuple[Path, Path]:
    """Copy a real recording and its JSON into `folder` (the audio into `audio_folder` if given),
    optionally renamed and with the JSON edited."""
    json_path, audio_path = real_pair(stem)
    audio_folder = audio_folder or folder
    for path in (folder, audio_folder):
        path.mkdir(parents=True, exist_ok=True)
    new_stem = new_stem or stem
    annotation = json.loads(json_path.read_text())
    edited = edit(annotation) if edit is not None else None  # edits in place, or returns a new dict
    annotation = edited if isinstance(edited, dict) else annotation
    new_json = folder / f"{new_stem}.json"
    new_json.write_text(json.dumps(annotation))
    new_audio = audio_folder / f"{new_stem}{audio_path.suffix}"
    shutil.copyfile(audio_path, new_audio)
    return new_json, new_audio


def load_flat(folder: Path, level: str = "record", **kwargs) -> DatasetDict:
    return load_sprsound(folder, level=level, decode=False, progress=False, **kwargs)


@pytest.fixture(scope="session")
def sprsound():
    """The whole shared copy at both levels, loaded once per session (timed)."""
    started = time.perf_counter()
    configs = load_sprsound_levels(SPRSOUND, progress=False)
    configs["seconds"] = time.perf_counter() - started
    return configs


def named_counts(dataset, column: str) -> dict[str, int]:
    return {label: count for label, count in count_labels(dataset, column).items() if count}


# --- the full release ------------------------------------------------------------------------------------

def test_counts_per_split_and_label_match_the_release(sprsound):
    records, events = sprsound["record"], sprsound["event"]
    assert list(records) == ["train", "inter_test"] and list(events) == ["train", "inter_test"]
    assert named_counts(records["train"], "record_label") == TRAIN_RECORDS
    assert named_counts(records["inter_test"], "record_label") == INTER_RECORDS
    assert named_counts(events["train"], "task12") == TRAIN_EVENTS
    assert named_counts(events["inter_test"], "task12") == INTER_EVENTS
    assert records["train"].num_rows == 1949 and records["inter_test"].num_rows == 355
    assert len(set(records["train"]["patient_id"])) == 251
    assert not set(records["train"]["patient_id"]) & set(records["inter_test"]["patient_id"])
    # task columns follow from the labels
    assert named_counts(records["train"], "task21") == {"Normal": 1303, "Adventitious": 469, "Poor Quality": 177}
    assert named_counts(events["train"], "task11") == {"Normal": 5159, "Adventitious": 1497}
    summary = records.loading_summary
    assert summary is events.loading_summary
    assert summary.rows["event"]["inter_test"]["task12"]["Wheeze"] == 305
    assert summary.skipped == [] and summary.clipped_event_ends == 0 and summary.unparsed_file_names == []
    assert "record / train: 1949 rows" in str(summary)


def test_whole_release_loads_fast(sprsound):
    assert sprsound["seconds"] < 60, f"loading both levels took {sprsound['seconds']:.1f} s"


def test_record_level_schema_and_a_poor_quality_record(sprsound):
    train = sprsound["record"]["train"]
    features = train.features
    assert isinstance(features["audio"], Audio) and features["audio"].decode
    assert features["record_label"] == ClassLabel(names=hub.RECORD_LABELS)
    assert features["task21"].names == ["Normal", "Adventitious", "Poor Quality"]
    assert features["task22"].names == hub.RECORD_LABELS
    assert features["patient_id"] == Value("string") and features["age"] == Value("float64")
    assert features["events"] == List({"start_s": Value("float64"), "end_s": Value("float64"),
                                       "type": Value("string")})
    row = train[train["recording_id"].index(POOR_QUALITY)]
    assert {key: row[key] for key in ("patient_id", "age", "gender", "location", "location_name", "events")} == {
        "patient_id": "40069321", "age": 15.3, "gender": "male", "location": "p1",
        "location_name": "left posterior", "events": []}
    assert features["record_label"].int2str(row["record_label"]) == "Poor Quality"
    assert features["task21"].int2str(row["task21"]) == "Poor Quality"
    assert row["duration_s"] == pytest.approx(9.216)
    samples = row["audio"].get_all_samples()
    assert samples.sample_rate == 8000 and samples.data.shape == (1, 73728)


def test_poor_quality_records_have_no_events(sprsound):
    train = sprsound["record"]["train"].select_columns(["recording_id", "record_label", "events"])
    poor = [row for row in train if row["record_label"] == hub.RECORD_LABELS.index("Poor Quality")]
    assert len(poor) == 177 and all(row["events"] == [] for row in poor)
    assert not {row["recording_id"] for row in poor} & set(sprsound["event"]["train"]["recording_id"])


def test_unsorted_events_are_sorted(sprsound):
    raw = [json.loads(path.read_text())["event_annotation"] for path in (SPRSOUND / "train_json").glob("*.json")]
    unsorted = sum([int(event["start"]) for event in events] != sorted(int(event["start"]) for event in events)
                   for events in raw)
    assert unsorted == 851  # the README's count: a real quirk, not a constructed one
    for row in sprsound["record"]["train"].select_columns(["events"]):
        starts = [event["start_s"] for event in row["events"]]
        assert starts == sorted(starts)
    records = sprsound["record"]["train"]
    row = records[records["recording_id"].index(UNSORTED)]
    assert row["events"][0] == {"start_s": 0.039, "end_s": 1.468, "type": "Normal"}  # listed last in its JSON
    assert len(row["events"]) == 10


def test_event_rows_cut_the_recording_exactly(sprsound):
    events = sprsound["event"]["train"]
    indices = [i for i, recording in enumerate(events["recording_id"]) if recording == UNSORTED]
    rows = events.select(indices)
    assert rows["event_index"] == list(range(10))
    assert rows["start_s"][0] == 0.039 and rows["end_s"][0] == 1.468  # strings "39"/"1468" in the JSON
    recording, rate = read_audio(real_pair(UNSORTED)[1])
    for row in rows:
        samples = row["audio"].get_all_samples()
        first, last = round(row["start_s"] * rate), round(row["end_s"] * rate)
        assert samples.sample_rate == rate == 8000
        np.testing.assert_allclose(samples.data[0].numpy(), recording[first:last], atol=1e-6)  # lossless
    assert events.features["task12"].names == hub.EVENT_TYPES
    assert events.features["task11"].names == ["Normal", "Adventitious"]


def test_the_shortest_recording(sprsound):
    records = sprsound["record"]["train"]
    row = records[records["recording_id"].index(SHORTEST)]
    assert row["duration_s"] == pytest.approx(0.304) and row["events"] == []
    assert min(records["duration_s"]) == row["duration_s"]


def test_audio_casts_to_another_sampling_rate(sprsound):
    records = sprsound["record"]["inter_test"].select(range(3)).cast_column("audio", Audio(sampling_rate=16000))
    for row in records:
        assert row["audio"]["sampling_rate"] == 16000
        assert len(row["audio"]["array"]) == pytest.approx(row["duration_s"] * 16000, abs=2)


# --- splits ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("level, column", [("record", "record_label"), ("event", "task12")])
def test_patient_disjoint_split(sprsound, level, column):
    train = sprsound[level]["train"]
    split = patient_disjoint_split(train, fraction=0.15, seed=0)
    assert set(split) == {"train", "validation"}
    train_patients, validation_patients = set(split["train"]["patient_id"]), set(split["validation"]["patient_id"])
    assert not train_patients & validation_patients
    assert split["train"].num_rows + split["validation"].num_rows == train.num_rows
    assert 0.12 < split["validation"].num_rows / train.num_rows < 0.18
    totals, in_validation = count_labels(train, column), count_labels(split["validation"], column)
    for label, total in totals.items():
        if total >= 100:  # stratified: common labels get about 15% each
            assert 0.08 < in_validation[label] / total < 0.25, (label, in_validation[label], total)
    again = patient_disjoint_split(train, fraction=0.15, seed=0)
    assert again["validation"]["recording_id"] == split["validation"]["recording_id"]
    other_seed = patient_disjoint_split(train, fraction=0.15, seed=1)
    assert set(other_seed["validation"]["patient_id"]) != validation_patients


def test_sprsound_folds_are_the_ones_patient_folds_makes_and_fifths_of_every_class(sprsound):
    """The shipped cross-validation folds: every train patient in exactly one, regenerated exactly from the release by
    `patient_folds` (seed 0), each fold holding 17-24 % of every record class, and one set of folds for both levels."""
    records, events = sprsound["record"]["train"], sprsound["event"]["train"]
    folds = hub.sprsound_folds()
    assert hub.patient_folds(records, k=5, seed=0, label_column="task22") == folds
    assert set(folds) == set(records["patient_id"]) >= set(events["patient_id"]) and set(folds.values()) == set(range(5))
    fold_of_row = np.array([folds[patient] for patient in records["patient_id"]])
    labels = np.array(records["task22"])
    for label in range(5):
        shares = np.bincount(fold_of_row[labels == label], minlength=5) / (labels == label).sum()
        assert shares.min() >= 0.17 and shares.max() <= 0.24, (label, shares)  # 95 CAS & DAS: 17-22 a fold
    other_seed = hub.patient_folds(records, k=5, seed=1, label_column="task22")
    assert other_seed != folds and sorted(other_seed) == sorted(folds)


def test_patient_folds_rejects_bad_arguments(sprsound):
    records = sprsound["record"]["train"]
    with pytest.raises(ValueError, match="k must be an integer of 2 or more"):
        hub.patient_folds(records, k=1)
    with pytest.raises(ValueError, match="3 patients cannot fill 5 folds"):
        hub.patient_folds(records.filter(lambda row: row["patient_id"] in {"40638274", "65097128", "65101170"}), k=5)
    with pytest.raises(ValueError, match="Column 'nope' not in the dataset"):
        hub.patient_folds(records, label_column="nope")


def test_patient_disjoint_split_takes_the_patients_of_another_level(sprsound):
    records = patient_disjoint_split(sprsound["record"]["train"], fraction=0.15, seed=0)
    chosen = set(records["validation"]["patient_id"])
    events = patient_disjoint_split(sprsound["event"]["train"], validation_patients=chosen)
    assert set(events["validation"]["patient_id"]) <= chosen
    assert not set(events["train"]["patient_id"]) & chosen
    assert events["train"].num_rows + events["validation"].num_rows == sprsound["event"]["train"].num_rows


def test_patient_disjoint_split_rejects_bad_arguments(sprsound):
    records = sprsound["record"]["train"]
    with pytest.raises(ValueError, match="fraction"):
        patient_disjoint_split(records, fraction=1.5)
    with pytest.raises(ValueError, match="fraction must be a number .* got '0.2'"):
        patient_disjoint_split(records, fraction="0.2")
    with pytest.raises(ValueError, match="nope"):
        patient_disjoint_split(records, label_column="nope")
    with pytest.raises(ValueError, match=r"label_column 'gender' is Value\('string'\), not a ClassLabel.*'task22'"):
        patient_disjoint_split(records, label_column="gender")


def test_patient_disjoint_split_checks_the_validation_patients_it_is_given(sprsound):
    records = sprsound["record"]["train"]
    with pytest.raises(ValueError, match="validation_patients is empty"):
        patient_disjoint_split(records, validation_patients=set())
    with pytest.raises(ValueError, match=r"None of the 2 validation_patients \(\['40638274 ', 'nope'\]\) is in"):
        patient_disjoint_split(records, validation_patients={"nope", "40638274 "})
    with pytest.raises(ValueError, match="holds all 251 patients .*train would have no rows"):
        patient_disjoint_split(records, validation_patients=set(records["patient_id"]))
    with pytest.raises(ValueError, match="not the string '40638274'"):
        patient_disjoint_split(records, validation_patients="40638274")
    # Ids compare as strings, and ids absent here are ignored (the event level of a Poor Quality-only patient).
    split = patient_disjoint_split(records, validation_patients={40638274, "not-a-patient"})
    assert set(split["validation"]["patient_id"]) == {"40638274"}


# --- arguments ---------------------------------------------------------------------------------------------

def test_task_selects_its_level_and_label_column():
    events = load_sprsound(SPRSOUND, task="1-2", splits=["inter_test"], decode=False, progress=False)
    assert list(events) == ["inter_test"] and events["inter_test"].num_rows == 1429
    assert "task12" in events["inter_test"].column_names and "task11" not in events["inter_test"].column_names
    assert events.loading_summary.rows["event"]["inter_test"]["task12"]["Wheeze"] == 305
    with pytest.raises(ValueError, match="record-level task"):
        load_sprsound(SPRSOUND, level="event", task=22)
    with pytest.raises(ValueError, match="intra_test"):
        load_sprsound(SPRSOUND, splits=["intra_test"])
    with pytest.raises(ValueError, match=r"Split\(s\) \['intra_test'\] not found"):  # one name as a string
        load_sprsound(SPRSOUND, splits="intra_test")
    with pytest.raises(ValueError, match="Unknown task"):
        load_sprsound(SPRSOUND, task=13)


def test_a_task_is_recognised_by_its_class_names_in_order():
    for task in hub.TASKS:
        assert hub.task_of_labels(hub.task_labels(task)) == task
    assert hub.task_of_labels(["Adventitious", "Normal"]) is None  # class ids matter, not just the set
    assert hub.task_of_labels(["Normal", "Crackle", "Wheeze"]) is None


def test_context_padding_around_events(tmp_path):
    copy_pair(UNSORTED, tmp_path)
    plain = load_flat(tmp_path, "event")["train"]
    padded = load_flat(tmp_path, "event", context_s=0.5)["train"]
    assert padded["start_s"] == plain["start_s"] and padded["end_s"] == plain["end_s"]
    first, middle = padded[0], padded[4]
    assert first["audio_offset_s"] == 0.0  # 0.039 s - 0.5 s clipped at the recording's start
    assert middle["audio_offset_s"] == pytest.approx(middle["start_s"] - 0.5)
    samples, rate = read_audio(middle["audio"])
    assert len(samples) == round((middle["end_s"] + 0.5) * rate) - round((middle["start_s"] - 0.5) * rate)
    with pytest.raises(ValueError, match="context_s"):
        load_flat(tmp_path, "event", context_s=-1)


def test_num_proc_gives_the_same_rows(tmp_path):
    stems = [path.stem for path in sorted((SPRSOUND / "test_json" / "inter_test_json").glob("*.json"))[:12]]
    for stem in stems:
        copy_pair(stem, tmp_path)
    serial = load_sprsound_levels(tmp_path, decode=False, progress=False)
    parallel = load_sprsound_levels(tmp_path, decode=False, num_proc=2, progress=False)
    for level in ("record", "event"):
        assert serial[level]["train"].to_dict() == parallel[level]["train"].to_dict()
    assert serial["event"]["train"].num_rows > 12


def test_without_a_decoder(tmp_path, monkeypatch):
    copy_pair(UNSORTED, tmp_path)
    monkeypatch.setattr("respstf.hub_dataset.audio.audio_decoder_problem",
                        lambda: "RuntimeError: Could not load libtorchcodec (no FFmpeg libraries found)")
    with pytest.raises(RuntimeError, match="needs torchcodec.*decode=False"):
        load_sprsound(tmp_path, level="record", progress=False)
    records = load_flat(tmp_path)  # decode=False needs no decoder
    assert records["train"].features["audio"] == Audio(decode=False)
    waveform, rate = read_audio(records["train"][0]["audio"])
    np.testing.assert_array_equal(waveform, read_audio(real_pair(UNSORTED)[1])[0])
    assert rate == 8000


# --- layouts -----------------------------------------------------------------------------------------------

def test_flat_folder_of_release_wav_files_matches_the_flac_copy(sprsound):
    example = load_sprsound(SPRSOUND / "example_original_wav", level="record", decode=False, progress=False)
    assert list(example) == ["train"] and example["train"].num_rows == 50
    records = sprsound["record"]["train"]
    positions = {recording: i for i, recording in enumerate(records["recording_id"])}
    for row in example["train"].select(range(5)):
        twin = records[positions[row["recording_id"]]]
        assert row["audio"]["path"].endswith(".wav") and twin["audio"].metadata.path.endswith(".flac")
        assert row["events"] == twin["events"] and row["record_label"] == twin["record_label"]
        np.testing.assert_array_equal(read_audio(row["audio"])[0], twin["audio"]["array"].astype(np.float32))


def test_newer_official_layout(tmp_path):
    release = tmp_path / "release"
    inter_stem = next((SPRSOUND / "test_json" / "inter_test_json").glob("*.json")).stem
    copy_pair(UNSORTED, release / "BioCAS2022/train2022_json", audio_folder=release / "BioCAS2022/train2022_wav")
    copy_pair(inter_stem, release / "BioCAS2022/test2022_json/inter_test_json",
              audio_folder=release / "BioCAS2022/test2022_wav")
    copy_pair(POOR_QUALITY, release / "BioCAS2023/test2023_json", audio_folder=release / "BioCAS2023/test2023_wav")
    (release / "BioCAS2022/test2022_json/intra_test_json").mkdir()  # a held-back split: its folder, empty
    with pytest.warns(hub.DataQualityWarning, match=r"No annotation files in \S+intra_test_json \(intra_test\): that "
                                                     r"split is left out\."):
        records = load_flat(release)
    assert list(records) == ["train", "inter_test", "test2023"]
    with pytest.warns(hub.DataQualityWarning), pytest.raises(ValueError, match=r"Split\(s\) \['intra_test'\] not found"):
        load_flat(release, splits=["intra_test"])
    assert [records[split][0]["recording_id"] for split in records] == [UNSORTED, inter_stem, POOR_QUALITY]
    only_2023 = load_flat(release / "BioCAS2023")  # the BioCAS2023 folder on its own
    assert list(only_2023) == ["test2023"]
    held_back = tmp_path / "held_back"  # nothing but the empty split's folder
    (held_back / "BioCAS2022/test2022_json/intra_test_json").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"holds no SPRSound annotations\. .* Found, but without annotation "
                                                r"files: \S+intra_test_json \(intra_test\)\."):
        load_flat(held_back)


def test_2022_layout_with_both_test_halves_sharing_test_wav(tmp_path):
    inter_stem = next((SPRSOUND / "test_json" / "inter_test_json").glob("*.json")).stem
    copy_pair(inter_stem, tmp_path / "test_json/inter_test_json", audio_folder=tmp_path / "test_wav")
    copy_pair(UNSORTED, tmp_path / "test_json/intra_test_json", audio_folder=tmp_path / "test_wav")
    both = load_flat(tmp_path)
    assert {split: both[split]["recording_id"] for split in both} == {"inter_test": [inter_stem],
                                                                     "intra_test": [UNSORTED]}
    inter_only = load_flat(tmp_path, splits=["inter_test"])  # intra's audio is not "audio without JSON"
    assert list(inter_only) == ["inter_test"] and inter_only.loading_summary.skipped == []


# --- quirks (real files, altered copies) ---------------------------------------------------------------------

def test_integer_start_and_end_load_like_strings(tmp_path):
    def to_int(annotation):
        for event in annotation["event_annotation"]:
            event["start"], event["end"] = int(event["start"]), int(event["end"])

    copy_pair(UNSORTED, tmp_path / "strings")
    copy_pair(UNSORTED, tmp_path / "ints", edit=to_int)
    first_event = json.loads((tmp_path / "ints" / f"{UNSORTED}.json").read_text())["event_annotation"][0]
    assert isinstance(first_event["start"], int)
    strings, ints = load_flat(tmp_path / "strings", "event"), load_flat(tmp_path / "ints", "event")
    assert strings["train"].to_dict() == ints["train"].to_dict()


def test_recording_annotation_key(tmp_path):
    def rename(annotation):
        return {"recording_annotation": annotation.pop("record_annotation"), **annotation}

    copy_pair(WHEEZE_CRACKLE, tmp_path, edit=rename)
    row = load_flat(tmp_path)["train"][0]
    assert hub.RECORD_LABELS[row["record_label"]] == "CAS & DAS"


def test_wheeze_and_crackle_spellings(tmp_path):
    def respell(annotation):
        for event in annotation["event_annotation"]:
            event["type"] = event["type"].replace("Wheeze+Crackle", "Wheeze & Crackle")

    copy_pair(WHEEZE_CRACKLE, tmp_path, edit=respell)
    assert "Wheeze & Crackle" in (tmp_path / f"{WHEEZE_CRACKLE}.json").read_text()
    events = load_flat(tmp_path, "event")["train"]
    assert named_counts(events, "task12") == {"Normal": 2, "Fine Crackle": 1, "Wheeze+Crackle": 1}
    assert load_flat(tmp_path)["train"][0]["events"][0]["type"] == "Wheeze+Crackle"


def test_leading_zero_patient_ids_stay_strings(tmp_path):
    copy_pair(POOR_QUALITY, tmp_path, new_stem="00014365_15.3_0_p1_981")
    copy_pair(UNSORTED, tmp_path, new_stem="6624420_5.6_1_p3_12")
    records = load_flat(tmp_path)["train"]
    assert records["patient_id"] == ["00014365", "6624420"]
    assert records["location_name"] == ["left posterior", "right posterior"]


def test_event_past_the_end_is_clipped_and_counted(tmp_path):
    def overrun(annotation):
        annotation["event_annotation"][0]["end"] = "99999"

    copy_pair(UNSORTED, tmp_path, edit=overrun)  # the event listed first (1.468 s - 2.725 s) now ends at 99.999 s
    with pytest.warns(DataQualityWarning, match="1 annotated events ended after their recording"):
        records = load_sprsound_levels(tmp_path, decode=False, progress=False)
    assert records["record"].loading_summary.clipped_event_ends == 1
    duration = records["record"]["train"][0]["duration_s"]
    clipped = [event for event in records["record"]["train"][0]["events"] if event["start_s"] == 1.468]
    assert clipped[0]["end_s"] == duration
    event = records["event"]["train"].filter(lambda row: row["start_s"] == 1.468)[0]
    assert event["end_s"] == duration
    assert len(read_audio(event["audio"])[0]) == round(duration * 8000) - round(1.468 * 8000)


def test_event_starting_after_the_recording_is_an_error(tmp_path):
    def move(annotation):
        annotation["event_annotation"][0].update(start="50000", end="51000")

    json_path, audio_path = copy_pair(UNSORTED, tmp_path, edit=move)  # sorted by start, it would be the last
    with pytest.raises(ValueError, match="starts at 50.000 s, at or after the end of the recording") as error:
        load_flat(tmp_path)
    assert str(error.value).startswith(f"{json_path}, event 0: ")  # the event as written in the JSON
    assert str(audio_path) in str(error.value) and "unit" not in str(error.value)  # 50 s on 15 s: no unit hint


def test_record_label_that_contradicts_its_events_is_kept_and_reported(tmp_path):
    # UNSORTED has 10 Normal events, so its record is Normal by the release's rule.
    copy_pair(UNSORTED, tmp_path, edit=lambda annotation: annotation.update(record_annotation="Poor Quality"))
    copy_pair(POOR_QUALITY, tmp_path)  # no events, Poor Quality: consistent
    with pytest.warns(DataQualityWarning, match=f"1 record labels contradict their events .*{UNSORTED}.json: "
                                                "'Poor Quality', its events make it 'Normal'"):
        records = load_flat(tmp_path)
    assert [hub.RECORD_LABELS[label] for label in records["train"]["record_label"]] == ["Poor Quality"] * 2
    assert records.loading_summary.inconsistent_record_labels == [
        (str(tmp_path / f"{UNSORTED}.json"), "Poor Quality", "Normal")]
    assert "record labels that contradict their events (kept as annotated): 1" in str(records.loading_summary)


def test_byte_order_mark_and_hidden_files(tmp_path):
    json_path, _ = copy_pair(UNSORTED, tmp_path)
    json_path.write_bytes(b"\xef\xbb\xbf" + json_path.read_bytes())  # saved "with BOM" by an editor
    (tmp_path / f"._{UNSORTED}.json").write_bytes(b"\x00\x05\x16\x07")  # macOS resource forks: not data
    (tmp_path / f"._{UNSORTED}.flac").write_bytes(b"\x00\x05\x16\x07")
    records = load_flat(tmp_path)
    assert records["train"]["recording_id"] == [UNSORTED] and records.loading_summary.skipped == []
    assert len(records["train"][0]["events"]) == 10


# --- bad input ---------------------------------------------------------------------------------------------------

def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sprsound(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds no SPRSound annotations"):
        load_sprsound(tmp_path)


def test_json_without_audio_and_audio_without_json(tmp_path):
    copy_pair(UNSORTED, tmp_path)
    json_only, _ = copy_pair(POOR_QUALITY, tmp_path)
    (tmp_path / f"{POOR_QUALITY}.flac").unlink()
    _, audio_only = copy_pair(SHORTEST, tmp_path)
    (tmp_path / f"{SHORTEST}.json").unlink()
    with pytest.raises(FileNotFoundError, match="2 SPRSound files have no partner") as error:
        load_flat(tmp_path)
    assert str(json_only) in str(error.value) and str(audio_only) in str(error.value)
    with pytest.warns(DataQualityWarning, match="skipped 2 files"):
        records = load_flat(tmp_path, on_missing="skip")
    assert records["train"]["recording_id"] == [UNSORTED]
    assert sorted(records.loading_summary.skipped) == sorted([(str(json_only), "JSON without audio"),
                                                              (str(audio_only), "audio without JSON")])
    assert "1 × JSON without audio" in str(records.loading_summary)


def test_malformed_json(tmp_path):
    json_path, _ = copy_pair(UNSORTED, tmp_path)
    json_path.write_text(json_path.read_text()[:-20])
    with pytest.raises(ValueError, match=f"{UNSORTED}.json: not valid JSON"):
        load_flat(tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda a: a.update(record_annotation="Crackles"), "unknown record label 'Crackles'"),
    (lambda a: a["event_annotation"][0].update(type="Squawk"), "unknown type 'Squawk'"),
    (lambda a: a["event_annotation"][0].update(start="5000", end="4000"), "starts at 5000 ms, not before its end"),
    (lambda a: a["event_annotation"][0].update(start="abc"), "start='abc'"),
    (lambda a: a.pop("record_annotation"), "missing the record label"),
    (lambda a: a.pop("event_annotation"), "'event_annotation' must be a list"),
])
def test_bad_annotations_name_the_file_and_the_problem(tmp_path, edit, message):
    copy_pair(UNSORTED, tmp_path, edit=edit)
    with pytest.raises(ValueError, match=message) as error:
        load_flat(tmp_path)
    assert f"{UNSORTED}.json" in str(error.value)


def test_file_name_that_does_not_parse(tmp_path):
    copy_pair(UNSORTED, tmp_path, new_stem="recording_from_clinic_b")
    with pytest.warns(DataQualityWarning, match="1 file names did not follow the naming scheme"):
        records = load_flat(tmp_path)
    row = records["train"][0]
    assert row["recording_id"] == "recording_from_clinic_b"
    assert [row[key] for key in ("patient_id", "age", "gender", "location")] == [None] * 4
    assert len(row["events"]) == 10
    assert records.loading_summary.unparsed_file_names == ["recording_from_clinic_b.json"]


@pytest.mark.parametrize("damage", ["text", "truncated", "empty"])
def test_corrupt_or_non_audio_file(tmp_path, damage):
    _, audio_path = copy_pair(UNSORTED, tmp_path)
    data = audio_path.read_bytes()
    audio_path.write_bytes({"text": b"this is not audio\n" * 100, "truncated": data[: len(data) // 2],
                            "empty": b""}[damage])
    with pytest.raises(ValueError, match="not a readable audio file|empty or truncated") as error:
        load_flat(tmp_path)
    assert str(audio_path) in str(error.value)
    with pytest.raises(ValueError, match=audio_path.name):
        read_audio(audio_path)


def test_undecodable_audio_is_skipped_on_request(tmp_path):
    _, broken = copy_pair(UNSORTED, tmp_path)
    copy_pair(POOR_QUALITY, tmp_path)
    broken.write_bytes(b"this is not audio\n" * 100)
    with pytest.raises(ValueError, match=f"{broken.name}: not a readable audio file .*Pass on_missing='skip'"):
        load_flat(tmp_path)
    with pytest.warns(DataQualityWarning, match=f"skipped 1 files: .*{broken.name} \\(unreadable audio\\)"):
        records = load_flat(tmp_path, on_missing="skip")
    assert records["train"]["recording_id"] == [POOR_QUALITY]


def test_a_recording_annotated_twice_is_refused(tmp_path):
    inter_stem = next((SPRSOUND / "test_json" / "inter_test_json").glob("*.json")).stem
    copy_pair(UNSORTED, tmp_path / "train_json", audio_folder=tmp_path / "train_wav")
    copy_pair(inter_stem, tmp_path / "test_json/inter_test_json", audio_folder=tmp_path / "test_wav")
    copy_pair(UNSORTED, tmp_path / "test_json/inter_test_json", audio_folder=tmp_path / "test_wav")  # also in test
    with pytest.raises(ValueError, match=f"Recording {UNSORTED} is annotated twice: .*train_json/{UNSORTED}.json "
                                         rf"\(train\) and .*inter_test_json/{UNSORTED}.json \(inter_test\); keep one"):
        load_flat(tmp_path)
    assert load_flat(tmp_path, splits=["train"])["train"]["recording_id"] == [UNSORTED]  # one split alone is fine


def test_event_times_written_in_seconds_are_reported(tmp_path):
    def in_seconds(annotation):
        for event in annotation["event_annotation"]:
            event["start"], event["end"] = str(int(event["start"]) / 1000), str(int(event["end"]) / 1000)

    copy_pair(UNSORTED, tmp_path, edit=in_seconds)
    with pytest.warns(DataQualityWarning, match=r"annotated events are too short to be a breath sound \(e.g. "
                                                rf".*{UNSORTED}.json, event 0 \(\d\.\d ms\).*were their times written in "
                                                "seconds where milliseconds are expected"):
        records = load_flat(tmp_path)
    assert "events too short to be a sound (kept as annotated): " in str(records.loading_summary)


def test_two_audio_files_for_one_recording(tmp_path):
    _, audio_path = copy_pair(UNSORTED, tmp_path)
    shutil.copyfile(SPRSOUND / "example_original_wav" / f"{UNSORTED}.wav", tmp_path / f"{UNSORTED}.wav")
    with pytest.raises(ValueError, match="Two audio files"):
        load_flat(tmp_path)


# --- card, saving, pushing, CLI --------------------------------------------------------------------------------

def test_dataset_card(sprsound, tmp_path):
    configs = {"record": sprsound["record"], "event": sprsound["event"]}
    card = build_dataset_card(configs, path=tmp_path / "README.md")
    parsed = DatasetCard.load(tmp_path / "README.md")
    metadata = parsed.data.to_dict()
    assert metadata["license"] == "gpl-3.0" and metadata["task_categories"] == ["audio-classification"]
    assert metadata["size_categories"] == ["1K<n<10K"]
    assert [(config["config_name"], [files["split"] for files in config["data_files"]])
            for config in metadata["configs"]] == [("record", ["train", "inter_test"]),
                                                   ("event", ["train", "inter_test"])]
    text = parsed.text
    assert "| Normal | 1303 | 241 |" in text and "| Poor Quality | 177 | 8 |" in text
    assert "| Wheeze | 452 | 305 |" in text and "| Stridor | 15 | 0 |" in text
    assert "Score = (AS + HS) / 2" in text and "HS = 2 · SE · SP / (SE + SP)" in text
    assert "patient_age_gender_location_recording" in text and "@article{zhang2022sprsound" in text
    assert str(card) == (tmp_path / "README.md").read_text()


def test_save_and_reload_both_formats(sprsound, tmp_path):
    configs = {level: DatasetDict(inter_test=sprsound[level]["inter_test"].select(range(40)))
               for level in ("record", "event")}
    save_hub_folder(configs, tmp_path / "parquet")
    save_hub_folder(configs, tmp_path / "arrow", file_format="arrow")
    for level, original in configs.items():
        from_parquet = load_dataset(str(tmp_path / "parquet"), level)  # reads the card's `configs`
        from_arrow = load_from_disk(str(tmp_path / "arrow" / level))
        from_arrow_card = load_dataset(str(tmp_path / "arrow"), level)  # the card points at the Arrow files
        for reloaded in (from_parquet, from_arrow, from_arrow_card):
            assert list(reloaded) == ["inter_test"]
            assert reloaded["inter_test"].features == original["inter_test"].features
            assert reloaded["inter_test"].remove_columns("audio").to_dict() == \
                original["inter_test"].remove_columns("audio").to_dict()
            first = reloaded["inter_test"][0]["audio"]["array"]
            np.testing.assert_array_equal(first, original["inter_test"][0]["audio"]["array"])
    assert DatasetCard.load(tmp_path / "parquet" / "README.md").data.configs[1]["config_name"] == "event"
    arrow_configs = DatasetCard.load(tmp_path / "arrow" / "README.md").data.configs
    assert arrow_configs[1]["data_files"] == [{"split": "inter_test", "path": "event/inter_test/data-*.arrow"}]


def test_push_to_hub_publishes_the_card_then_each_config(sprsound, monkeypatch):
    calls = []
    monkeypatch.setattr("huggingface_hub.HfApi.create_repo",
                        lambda self, repo_id, **kw: calls.append(("repo", repo_id, kw)))
    monkeypatch.setattr(DatasetCard, "push_to_hub", lambda self, repo_id, **kw: calls.append(("card", repo_id, self)))
    monkeypatch.setattr(DatasetDict, "push_to_hub",
                        lambda self, repo_id, config_name, **kw: calls.append(("data", config_name, self)))
    configs = {level: DatasetDict(inter_test=sprsound[level]["inter_test"]) for level in ("record", "event")}
    configs["event"] = configs["event"].cast_column("audio", Audio(decode=False))
    hub.push_to_hub("someone/sprsound", configs=configs, private=True)
    assert [call[:2] for call in calls] == [("repo", "someone/sprsound"), ("card", "someone/sprsound"),
                                           ("data", "record"), ("data", "event")]
    assert calls[0][2]["repo_type"] == "dataset" and calls[0][2]["private"] is True
    assert 'load_dataset("someone/sprsound", "event")' in calls[1][2].text
    assert calls[3][2]["inter_test"].features["audio"] == Audio()  # published decodable
    with pytest.raises(ValueError, match="root"):
        hub.push_to_hub("someone/sprsound")


def test_cli_help_explains_the_layouts():
    result = subprocess.run([sys.executable, "-m", "respstf.hub_dataset", "convert", "--help"],
                            capture_output=True, text=True, check=True)
    for text in ("train_wav/", "BioCAS2022/train2022_wav/", "BioCAS2023/test2023_wav/", "flat folder", "--push",
                 "with --format arrow"):
        assert text in " ".join(result.stdout.split())


def test_cli_convert(tmp_path, capsys):
    for stem in (UNSORTED, POOR_QUALITY, WHEEZE_CRACKLE):
        copy_pair(stem, tmp_path / "flat")
    from respstf.hub_dataset.__main__ import main

    assert main(["convert", str(tmp_path / "flat"), str(tmp_path / "out"), "--level", "event"]) == 0
    output = capsys.readouterr()
    assert "event / train: 14 rows" in output.out and "Reading SPRSound" in output.err  # summary and progress bar
    events = load_dataset(str(tmp_path / "out"), "event")
    assert events["train"].num_rows == 14 and not (tmp_path / "out" / "record").exists()
    assert main(["convert", str(tmp_path / "nowhere"), str(tmp_path / "out2")]) == 1
    assert "error: SPRSound root" in capsys.readouterr().err and not (tmp_path / "out2").exists()


def test_cli_push_checks_the_repo_id_first_and_reports_hub_errors(tmp_path, capsys, monkeypatch):
    from huggingface_hub.errors import OfflineModeIsEnabled

    import respstf.hub_dataset.__main__ as cli

    copy_pair(POOR_QUALITY, tmp_path / "flat")
    assert cli.main(["convert", str(tmp_path / "flat"), str(tmp_path / "out"), "--push", "my org/sprsound"]) == 1
    assert "error: --push 'my org/sprsound' is not a Hub repository id" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing converted

    monkeypatch.setattr(cli, "get_token", lambda: None)
    assert cli.main(["convert", str(tmp_path / "flat"), str(tmp_path / "out"), "--push", "my-org/sprsound"]) == 1
    assert "error: --push needs a Hub token" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    class ConnectError(Exception):
        """What huggingface_hub's HTTP client raises for a refused connection: not an OSError."""

    monkeypatch.setattr(cli, "get_token", lambda: "hf_fake")
    for failure in (OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled."),
                    ConnectError("All connection attempts failed")):
        def push(repo_id, **kwargs):
            raise failure

        monkeypatch.setattr(cli, "push_to_hub", push)
        assert cli.main(["convert", str(tmp_path / "flat"), str(tmp_path / "out"), "--push", "my-org/sprsound"]) == 1
        error = capsys.readouterr().err
        assert f"error: could not publish to my-org/sprsound ({type(failure).__name__}: {failure}" in error
        assert f"the converted files are in {tmp_path / 'out'}" in error and (tmp_path / "out" / "README.md").is_file()
