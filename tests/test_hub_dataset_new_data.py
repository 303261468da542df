"""hub_dataset for new data: the ICBHI 2017 loader, the generic folder loader and `read_audio`, on real
recordings from the shared data (copied into tmp_path when a case needs altered or rearranged files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from datasets import ClassLabel

from respstf.hub_dataset import (
    ICBHI_CYCLE_LABELS,
    ICBHI_DIAGNOSES,
    count_labels,
    load_audio_folder,
    load_icbhi,
    patient_disjoint_split,
    read_audio,
    task_labels,
    wav_shortfall,
)

from conftest import DATA_DIR, ICBHI, SPRSOUND  # noqa: E402
pytestmark = pytest.mark.skipif(not (ICBHI / "audio_and_txt_files").is_dir() or not (SPRSOUND / "train_wav").is_dir(),
                                reason=f"the shared data is not at {DATA_DIR} (set RESPSTF_DATA_DIR)")

ICBHI_32_BIT = "101_1b1_Al_sc_Meditron"  # 44.1 kHz PCM_32
ICBHI_4_KHZ = "104_1b1_Al_sc_Litt3200"  # 4 kHz PCM_16


def copy_icbhi(tmp_path: Path, stems=None) -> Path:
    """A copy of the ICBHI sample (all of it, or only `stems`) to alter."""
    root = tmp_path / "icbhi"
    shutil.copytree(ICBHI, root, ignore=shutil.ignore_patterns("audio_and_txt_files"))
    (root / "audio_and_txt_files").mkdir()
    for path in sorted((ICBHI / "audio_and_txt_files").iterdir()):
        if stems is None or path.stem in stems:
            shutil.copyfile(path, root / "audio_and_txt_files" / path.name)
    return root


def named_counts(dataset, column: str) -> dict[str, int]:
    return {label: count for label, count in count_labels(dataset, column).items() if count}


# --- ICBHI ---------------------------------------------------------------------------------------------------

def test_icbhi_cycles_official_split_and_native_rates():
    cycles = load_icbhi(ICBHI, "cycle", progress=False)
    assert list(cycles) == ["train", "test"]  # from ICBHI_challenge_train_test.txt: 103 is train, the rest test
    assert set(cycles["train"]["recording_id"]) == {"103_2b2_Ar_mc_LittC2SE"}
    assert cycles["train"].num_rows + cycles["test"].num_rows == 97
    train, test = count_labels(cycles["train"], "cycle_label"), count_labels(cycles["test"], "cycle_label")
    total = {label: train[label] + test[label] for label in ICBHI_CYCLE_LABELS}
    assert total == {"Normal": 82, "Crackle": 1, "Wheeze": 14, "Both": 0}  # the README's counts
    assert cycles["test"].features["cycle_label"] == ClassLabel(names=ICBHI_CYCLE_LABELS)
    assert cycles["test"].features["diagnosis"] == ClassLabel(names=ICBHI_DIAGNOSES)
    rows = cycles["test"].filter(lambda row: row["recording_id"] in (ICBHI_32_BIT, ICBHI_4_KHZ))
    for stem, rate in ((ICBHI_32_BIT, 44100), (ICBHI_4_KHZ, 4000)):
        recording, native_rate = read_audio(ICBHI / "audio_and_txt_files" / f"{stem}.wav")
        row = rows[rows["recording_id"].index(stem)]
        assert native_rate == rate and row["audio"]["sampling_rate"] == rate  # not resampled here
        first = round(row["start_s"] * rate)
        cut = row["audio"]["array"]
        np.testing.assert_allclose(cut, recording[first:first + len(cut)], atol=1e-6)  # lossless, also at 32-bit
        assert len(cut) == round(row["end_s"] * rate) - first
    first_row = rows[0]
    assert first_row["patient_id"] == "101" and first_row["age"] == 3.0 and first_row["gender"] == "female"
    assert first_row["location_name"] == "anterior left" and first_row["equipment"] == "Meditron"
    assert ICBHI_DIAGNOSES[first_row["diagnosis"]] == "URTI"


def test_icbhi_patient_level():
    recordings = load_icbhi(ICBHI, "patient", progress=False)
    assert recordings["train"].num_rows == 1 and recordings["test"].num_rows == 9
    assert named_counts(recordings["test"], "diagnosis") == {"Healthy": 1, "URTI": 2, "COPD": 6}
    assert ICBHI_DIAGNOSES[recordings["train"][0]["diagnosis"]] == "Asthma"
    assert sum(len(events) for events in recordings["test"]["events"]) + len(recordings["train"][0]["events"]) == 97
    row = recordings["test"][recordings["test"]["recording_id"].index(ICBHI_4_KHZ)]
    assert row["duration_s"] == pytest.approx(15.856) and row["audio"]["sampling_rate"] == 4000
    with pytest.raises(ValueError, match="Unknown ICBHI level"):
        load_icbhi(ICBHI, "record")


def test_icbhi_bad_input(tmp_path):
    root = copy_icbhi(tmp_path, stems={ICBHI_4_KHZ, ICBHI_32_BIT})
    split_file = root / "ICBHI_challenge_train_test.txt"
    split_file.write_text("".join(line + "\n" for line in split_file.read_text().splitlines()
                                  if not line.startswith(ICBHI_4_KHZ)))
    with pytest.raises(FileNotFoundError, match=f"{ICBHI_4_KHZ}.wav \\(not in ICBHI_challenge_train_test.txt\\)"):
        load_icbhi(root, decode=False, progress=False)
    with pytest.warns(UserWarning, match="skipped 1 files"):
        cycles = load_icbhi(root, on_missing="skip", decode=False, progress=False)
    assert set(cycles["test"]["recording_id"]) == {ICBHI_32_BIT}

    annotation = root / "audio_and_txt_files" / f"{ICBHI_32_BIT}.txt"
    annotation.write_text(annotation.read_text().replace("0.579\t2.45\t0\t0", "0.579\t2.45\t0\tyes"))
    with pytest.raises(ValueError, match=f"{ICBHI_32_BIT}.txt, line 2: expected"):
        load_icbhi(root, on_missing="skip", decode=False, progress=False)
    with pytest.raises(FileNotFoundError, match="ICBHI_challenge_train_test.txt not found"):
        split_file.unlink()
        load_icbhi(root)


def test_icbhi_skips_undecodable_audio_on_request(tmp_path):
    root = copy_icbhi(tmp_path, stems={ICBHI_4_KHZ, ICBHI_32_BIT})
    (root / "audio_and_txt_files" / f"{ICBHI_4_KHZ}.wav").write_text("not audio")
    with pytest.raises(ValueError, match=f"{ICBHI_4_KHZ}.wav: not a readable audio file .*Pass on_missing='skip'"):
        load_icbhi(root, decode=False, progress=False)
    with pytest.warns(UserWarning, match=f"skipped 1 files: .*{ICBHI_4_KHZ}.wav \\(unreadable audio\\)"):
        cycles = load_icbhi(root, on_missing="skip", decode=False, progress=False)
    assert set(cycles["test"]["recording_id"]) == {ICBHI_32_BIT}


def test_icbhi_one_split_by_name_and_files_saved_with_a_byte_order_mark(tmp_path):
    root = copy_icbhi(tmp_path, stems={ICBHI_4_KHZ, "103_2b2_Ar_mc_LittC2SE"})
    for name in ("patient_diagnosis.csv", "ICBHI_challenge_train_test.txt", f"audio_and_txt_files/{ICBHI_4_KHZ}.txt"):
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())  # Windows editors add one
    patients = load_icbhi(root, "patient", splits="test", decode=False, progress=False)  # a str, not ['t', 'e', ...]
    assert list(patients) == ["test"] and patients["test"]["recording_id"] == [ICBHI_4_KHZ]
    assert ICBHI_DIAGNOSES[patients["test"][0]["diagnosis"]] == "COPD"
    # Without utf-8-sig the mark hid patient 101 (the first line) as a header; it is still there.
    from respstf.hub_dataset.icbhi import _read_diagnoses
    assert _read_diagnoses(root / "patient_diagnosis.csv")["101"] == "URTI"


def test_icbhi_unknown_diagnosis(tmp_path):
    root = copy_icbhi(tmp_path, stems={ICBHI_4_KHZ})
    diagnoses = root / "patient_diagnosis.csv"
    diagnoses.write_text(diagnoses.read_text().replace("104,COPD", "104,Flu"))
    with pytest.raises(ValueError, match="patient_diagnosis.csv, line 5: .*'104,Flu'"):
        load_icbhi(root)


# --- the generic folder loader -----------------------------------------------------------------------------------

def sprsound_audio(count: int) -> list[Path]:
    return sorted((SPRSOUND / "test_wav").glob("*.flac"))[:count]


def test_folder_with_a_csv_of_segments(tmp_path):
    files = sprsound_audio(3)
    for path in files:
        shutil.copyfile(path, tmp_path / path.name)
    (tmp_path / "metadata.csv").write_text(
        "file,label,start,end,patient_id\n"
        f"{files[0].name},Wheeze,1.0,2.5,p1\n"
        f"{files[0].name},Normal,0.2,0.9,p1\n"
        f"{files[1].name},Normal,,,p2\n"  # no times: the whole file
        f"{files[2].name},Crackle,3.0,40.0,p3\n"  # past the end: clipped and counted
    )
    with pytest.warns(UserWarning, match=r"1 annotated events ended after their recording; their end was clipped to the "
                                         r"recording's end: .*metadata.csv, entry 4 \(end 40.000 s, recording "
                                         f"{files[2].name} {sf.info(files[2]).duration:.3f} s\\)"):
        segments = load_audio_folder(tmp_path, decode=False, progress=False)
    train = segments["train"]
    assert train.features["label"] == ClassLabel(names=["Normal", "Crackle", "Wheeze"])  # Normal is class 0
    assert train["recording_id"] == [files[0].stem, files[0].stem, files[1].stem, files[2].stem]
    assert train["start_s"] == [0.2, 1.0, 0.0, 3.0]  # sorted within a recording
    assert train["patient_id"] == ["p1", "p1", "p2", "p3"]
    whole, rate = read_audio(files[1])
    assert train["end_s"][2] == pytest.approx(len(whole) / rate)
    np.testing.assert_array_equal(read_audio(train[2]["audio"])[0], whole)
    assert train["end_s"][3] == pytest.approx(sf.info(files[2]).duration)
    assert [len(read_audio(row["audio"])[0]) for row in train.select(range(2))] == [5600, 12000]


def test_folder_with_sprsound_labels_and_json_metadata(tmp_path):
    files = sprsound_audio(2)
    for path in files:
        shutil.copyfile(path, tmp_path / path.name)
    entries = [{"file": files[0].name, "label": "Stridor"}, {"file": files[1].name, "label": "Normal", "split": "test"}]
    (tmp_path / "labels.json").write_text(json.dumps(entries))
    segments = load_audio_folder(tmp_path, label_names=task_labels("12"), decode=False, progress=False)
    assert list(segments) == ["train", "test"]
    assert segments["train"].features["label"].names == task_labels("12")
    assert task_labels("12")[segments["train"][0]["label"]] == "Stridor"
    entries[1]["label"] = "Squeak"
    (tmp_path / "labels.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match="labels.json, entry 2: unknown label 'Squeak'"):
        load_audio_folder(tmp_path, label_names=task_labels("12"), decode=False, progress=False)


def test_audiofolder_convention_with_split_folders(tmp_path):
    files = sprsound_audio(6)
    for index, path in enumerate(files):
        folder = tmp_path / ("train" if index < 4 else "test") / ("Normal" if index % 2 else "Wheeze")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / path.name)
    shutil.copyfile(ICBHI / "audio_and_txt_files" / f"{ICBHI_32_BIT}.wav", tmp_path / "train" / "Wheeze" / "icbhi.wav")
    segments = load_audio_folder(tmp_path, progress=False)
    assert {split: segments[split].num_rows for split in segments} == {"test": 2, "train": 5}
    assert named_counts(segments["train"], "label") == {"Normal": 2, "Wheeze": 3}
    icbhi_row = segments["train"][segments["train"]["recording_id"].index("train/Wheeze/icbhi")]
    assert icbhi_row["audio"]["sampling_rate"] == 44100 and icbhi_row["end_s"] == pytest.approx(20.0)
    split = patient_disjoint_split(segments["train"], fraction=0.4, seed=0)  # no patient ids: by recording
    assert split["train"].num_rows + split["validation"].num_rows == 5 and split["validation"].num_rows >= 1


def test_folder_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_audio_folder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no metadata file"):
        load_audio_folder(tmp_path)
    path = sprsound_audio(1)[0]
    shutil.copyfile(path, tmp_path / path.name)
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / "metadata.csv").write_text(f"file,label\n{path.name},Normal\nmissing.wav,Normal\nnotes.txt,Wheeze\n")
    with pytest.raises(FileNotFoundError, match="metadata.csv, entry 2: .*missing.wav: file not found"):
        load_audio_folder(tmp_path, progress=False)
    with pytest.warns(UserWarning, match="skipped 2 files"):
        segments = load_audio_folder(tmp_path, on_missing="skip", decode=False, progress=False)
    assert segments["train"].num_rows == 1 and segments.loading_summary.skipped[1][1].startswith("not an audio file")
    (tmp_path / "metadata.csv").write_text(f"file,label,start,end\n{path.name},Normal,2.0,1.0\n")
    with pytest.raises(ValueError, match="entry 1: start 2.0 s is not before end 1.0 s"):
        load_audio_folder(tmp_path)
    (tmp_path / "metadata.csv").write_text(f"file,label\n{path.name},\n")
    with pytest.raises(ValueError, match="entry 1: needs 'file'"):
        load_audio_folder(tmp_path)


def copy_sprsound_audio(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in sprsound_audio(count):
        copies.append(folder / path.name)
        shutil.copyfile(path, copies[-1])
    return copies


def test_folder_ignores_hidden_and_tool_folders(tmp_path):
    files = sprsound_audio(4)
    for index, path in enumerate(files):
        folder = tmp_path / "splits" / ("train" if index < 2 else "test") / ("Normal" if index % 2 else "Wheeze")
        folder.mkdir(parents=True)
        shutil.copyfile(path, folder / path.name)
    (tmp_path / "splits" / ".ipynb_checkpoints").mkdir()  # once made split folders look like labels
    (tmp_path / "splits" / "__MACOSX" / "train" / "Normal").mkdir(parents=True)
    (tmp_path / "splits" / "__MACOSX" / "train" / "Normal" / f"._{files[1].name}").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "splits" / "train" / "Normal" / f"._{files[1].name}").write_bytes(b"\x00\x05\x16\x07")
    segments = load_audio_folder(tmp_path / "splits", decode=False, progress=False)
    assert {split: segments[split].num_rows for split in segments} == {"test": 2, "train": 2}
    assert segments["train"].features["label"].names == ["Normal", "Wheeze"]

    plain = tmp_path / "plain"
    copy_sprsound_audio(plain / "Normal", 1)
    checkpoint = plain / "Normal" / ".ipynb_checkpoints"  # hidden folders are skipped at every depth
    copy_sprsound_audio(checkpoint, 1)
    copy_sprsound_audio(plain / ".ipynb_checkpoints", 1)
    segments = load_audio_folder(plain, decode=False, progress=False)
    assert segments["train"].num_rows == 1 and segments["train"].features["label"].names == ["Normal"]

    copy_sprsound_audio(tmp_path / "splits" / "extra" / "Normal", 1)
    with pytest.raises(ValueError, match=r"split folders \['test', 'train'\] next to other folders \['extra'\]"):
        load_audio_folder(tmp_path / "splits", decode=False, progress=False)


def test_folder_table_with_byte_order_mark_and_padded_values(tmp_path):
    files = copy_sprsound_audio(tmp_path, 2)
    (tmp_path / "metadata.csv").write_text(  # Excel's "CSV UTF-8", cells typed with spaces
        f"file,label,patient_id,split\n {files[0].name} , Normal , p1 , train \n{files[1].name},Wheeze, p2,test\n",
        encoding="utf-8-sig")
    segments = load_audio_folder(tmp_path, decode=False, progress=False)
    assert {split: segments[split]["patient_id"] for split in segments} == {"train": ["p1"], "test": ["p2"]}
    assert segments["train"]["recording_id"] == [files[0].stem]
    (tmp_path / "metadata.csv").unlink()
    (tmp_path / "metadata.jsonl").write_bytes(
        b"\xef\xbb\xbf" + json.dumps({"file": files[0].name, "label": "Normal", "patient_id": 7}).encode() + b"\n")
    assert load_audio_folder(tmp_path, decode=False, progress=False)["train"]["patient_id"] == ["7"]


def test_folder_rejects_an_empty_table_and_contradictions(tmp_path):
    files = copy_sprsound_audio(tmp_path, 2)
    table = tmp_path / "metadata.csv"
    table.write_text("file,label,start,end\n")
    with pytest.raises(ValueError, match="metadata.csv has no entries"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    table.write_text("file,label\nmissing.wav,Normal\n")
    with pytest.raises(ValueError, match=r"no usable recordings \(1 files skipped: .*missing.wav \(file not found\)"):
        load_audio_folder(tmp_path, on_missing="skip", decode=False, progress=False)
    table.write_text(f"file,label,patient_id\n{files[0].name},Normal,1\n{files[1].name},Normal,2\n"
                     f"{files[0].name},Wheeze,3\n")
    with pytest.raises(ValueError, match=f"{files[0].name} is listed with patient_id '1' "
                                         r"\(.*metadata.csv, entry 1\) and '3' \(.*metadata.csv, entry 3\)"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    table.write_text(f"file,label,split\n{files[0].name},Normal,train\n{files[0].name},Normal,test\n")
    with pytest.raises(ValueError, match=f"{files[0].name} is listed with split 'train' .* and 'test' .*leaks"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    table.write_text(f"file,label,split\n{files[0].name},Normal,train\n{files[1].name},Normal,val-1\n")
    with pytest.raises(ValueError, match="metadata.csv, entry 2: split 'val-1' is not a valid split name"):
        load_audio_folder(tmp_path, decode=False, progress=False)


def test_folder_skips_unreadable_audio_and_keeps_every_class(tmp_path):
    files = copy_sprsound_audio(tmp_path, 2)
    (tmp_path / "notes.wav").write_text("not audio")  # a .wav name, text inside
    (tmp_path / "metadata.csv").write_text(f"file,label\n{files[0].name},Normal\nnotes.wav,Wheeze\n")
    with pytest.raises(ValueError, match="notes.wav: not a readable audio file .*Pass on_missing='skip'"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    (tmp_path / "metadata.csv").write_text(f"file,label\n{files[0].name},Normal\nnotes.wav,Wheeze\n"
                                           f"missing.flac,Crackle\n{files[1].name},Stridor\n")
    for num_proc in (None, 2):  # in this process and from worker processes
        with pytest.warns(UserWarning, match="skipped 2 files"):
            segments = load_audio_folder(tmp_path, on_missing="skip", decode=False, progress=False, num_proc=num_proc)
        assert segments["train"]["recording_id"] == [files[0].stem, files[1].stem]
        # Every listed class stays, so the ids do not depend on which files could be read.
        assert segments["train"].features["label"].names == ["Normal", "Crackle", "Stridor", "Wheeze"]
        summary = segments.loading_summary
        assert sorted(reason for _, reason in summary.skipped) == ["file not found", "unreadable audio"]
        assert "skipped files: 2" in str(summary)


def test_folder_refuses_or_skips_nan_and_silent_audio(tmp_path):
    """Issue 32, defects 1 and 3: a float WAV with NaN samples and an all-zero file were loaded without a word (training
    then died inside datasets.map naming no file, and --on-missing skip did not help)."""
    files = copy_sprsound_audio(tmp_path, 2)
    waveform, rate = sf.read(files[0], dtype="float32")
    corrupted = waveform.copy()
    corrupted[1000:1010] = np.nan
    sf.write(tmp_path / "nan.wav", corrupted, rate, subtype="FLOAT")
    sf.write(tmp_path / "silent.wav", np.zeros_like(waveform), rate, subtype="PCM_16")
    table = f"file,label\n{files[0].name},Normal\n{files[1].name},Wheeze\n"
    (tmp_path / "metadata.csv").write_text(table + "nan.wav,Wheeze\n")
    with pytest.raises(ValueError, match=r"nan.wav has 10 NaN/Inf samples: expected finite audio\. Pass on_missing='skip'"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    (tmp_path / "metadata.csv").write_text(table + "silent.wav,Wheeze\n")
    with pytest.raises(ValueError, match=r"silent.wav is silent \(peak amplitude 0\.0e\+00 around its mean, below 1e-04\)"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    (tmp_path / "metadata.csv").write_text(table + "nan.wav,Wheeze\nsilent.wav,Crackle\n")
    for num_proc in (None, 2):  # in this process and from worker processes
        with pytest.warns(UserWarning, match="skipped 2 files"):
            segments = load_audio_folder(tmp_path, on_missing="skip", decode=False, progress=False, num_proc=num_proc)
        assert segments["train"]["recording_id"] == [files[0].stem, files[1].stem]
        reasons = [reason for _, reason in segments.loading_summary.skipped]
        assert reasons == ["unusable audio (NaN/Inf, silent or sampled too low)"] * 2


def test_truncated_flac_is_refused_as_truncated(tmp_path):
    """A FLAC cut short stops decoding partway ("flac decoder lost sync"): refused as truncated, with the frames that
    decode, as a truncated WAV is."""
    (tmp_path / "Normal").mkdir()
    data = (SPRSOUND / "train_wav" / "40638274_9.7_1_p1_1789.flac").read_bytes()  # 9.2 s, 73,728 frames
    (tmp_path / "Normal" / "cut.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.flac: the audio file is empty or truncated \(\d+ of 73728 frames\)\. "
                                         r"Pass on_missing='skip'"):
        load_audio_folder(tmp_path, decode=False, progress=False)


def test_folder_span_errors_name_the_entry(tmp_path):
    files = copy_sprsound_audio(tmp_path, 1)
    duration = sf.info(files[0]).duration
    (tmp_path / "metadata.csv").write_text(f"file,label,start,end\n{files[0].name},Normal,1,2\n"
                                           f"{files[0].name},Wheeze,{duration + 10:.1f},{duration + 20:.1f}\n")
    with pytest.raises(ValueError, match=r"metadata.csv, entry 2: the span starts at .* at or after the end of the "
                                         f"recording .*{files[0].name}") as error:
        load_audio_folder(tmp_path, decode=False, progress=False)
    assert "unit" not in str(error.value)
    (tmp_path / "metadata.csv").write_text(f"file,label,start,end\n{files[0].name},Normal,1000,2000\n")  # ms
    with pytest.raises(ValueError, match="entry 1: the span starts at 1000.000 s.*over 10 times the recording's "
                                         "length: check the unit"):
        load_audio_folder(tmp_path, decode=False, progress=False)


def test_folder_table_is_never_misread(tmp_path):
    """Misspelt columns, rows that do not fit the header, missing-value labels and labels that differ only in
    case are refused, naming the table (and entry); columns the loader does not read are named in a warning."""
    files = copy_sprsound_audio(tmp_path, 2)
    table = tmp_path / "metadata.csv"
    for misspelt, meant in (("strat", "start"), ("start_time", "start"), ("onset", "start"), ("spilt", "split"),
                            ("patientid", "patient_id"), ("Subject ID", "patient_id"), ("Label", "label")):
        header = "file,label,start,end,patient_id,split".replace(meant, misspelt, 1)
        table.write_text(f"{header}\n{files[0].name},Normal,1,2,p1,train\n")
        with pytest.raises(ValueError, match=f"metadata.csv: column '{misspelt}' is not one this loader reads; did you "
                                             f"mean '{meant}'\\? Columns read: file, file_name, label"):
            load_audio_folder(tmp_path, decode=False, progress=False)
    # A column like one the table has is extra information, not a misspelling; so are names that only share a word.
    table.write_text(f"file,label,start,end,device,start_time,patient_age,state\n"
                     f"{files[0].name},Normal,1,2,Littmann,10:31,4,ok\n{files[1].name},Wheeze,,,Yunting,10:32,6,ok\n")
    with pytest.warns(UserWarning, match=r"metadata.csv: columns \['device', 'patient_age', 'start_time', 'state'\] are "
                                         "not read"):
        assert load_audio_folder(tmp_path, decode=False, progress=False)["train"].num_rows == 2

    table.write_text(f"file,label\n{files[0].name},Normal\n{files[1].name},Crackle, fine\n")
    with pytest.raises(ValueError, match=r"metadata.csv, entry 2: 3 values where the header has 2 columns; quote a value "
                                         "that holds a comma"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    table.write_text(f"file,label,patient_id\n{files[0].name},Normal,p1\n{files[1].name},Wheeze\n")
    with pytest.raises(ValueError, match=r"metadata.csv, entry 2: 2 values where the header has 3 columns\.$"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    table.write_text(f"file,label\n{files[0].name},Normal,\n{files[1].name},Wheeze,\n")  # trailing commas: nothing lost
    assert load_audio_folder(tmp_path, decode=False, progress=False)["train"].num_rows == 2
    table.write_text(f"file;label\n{files[0].name};Normal\n")  # Excel in locales that write decimal commas
    with pytest.raises(ValueError, match="metadata.csv: the header 'file;label' is one column: this table separates its "
                                         "columns with ';'; save it with commas"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    table.write_text(f"file,label,label\n{files[0].name},Normal,Wheeze\n")
    with pytest.raises(ValueError, match=r"metadata.csv: column\(s\) \['label'\] appear more than once in the header"):
        load_audio_folder(tmp_path, decode=False, progress=False)

    for marker in ("NaN", "NA", "n/a", "#N/A"):  # pandas, R, spreadsheets
        table.write_text(f"file,label\n{files[0].name},Normal\n{files[1].name},{marker}\n")
        with pytest.raises(ValueError, match=f"metadata.csv, entry 2: label '{marker}' marks a missing value"):
            load_audio_folder(tmp_path, decode=False, progress=False)
    table.unlink()
    (tmp_path / "metadata.jsonl").write_text(f'{{"file": "{files[0].name}", "label": NaN}}\n')  # json.dumps of a float NaN
    with pytest.raises(ValueError, match="metadata.jsonl, entry 1: label nan marks a missing value"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    (tmp_path / "metadata.jsonl").write_text(f'{{"file": "{files[0].name}", "label": "Normal"}}\n'
                                             f'{{"file": "{files[1].name}", "label": "normal"}}\n')
    with pytest.raises(ValueError, match=r"labels \['Normal', 'normal'\] differ only in case \(.*metadata.jsonl, entry "
                                         r"1; .*metadata.jsonl, entry 2\)"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    (tmp_path / "metadata.jsonl").write_text(f'{{"file": "{files[0].name}", "label": "Normal", "end": Infinity}}\n')
    with pytest.raises(ValueError, match="entry 1: end=inf must be a finite number of seconds >= 0"):
        load_audio_folder(tmp_path, decode=False, progress=False)


def test_folder_convention_refuses_loose_audio_and_takes_capitalised_splits(tmp_path):
    for split, label in (("Train", "Normal"), ("Train", "Wheeze"), ("Test", "Normal"), ("Dev", "Wheeze")):
        copy_sprsound_audio(tmp_path / split / label, 1)
    segments = load_audio_folder(tmp_path, decode=False, progress=False)
    assert sorted(segments) == ["test", "train", "validation"]
    assert segments["train"].features["label"].names == ["Normal", "Wheeze"]
    loose = copy_sprsound_audio(tmp_path / "Train", 1)[0]  # beside the label folders: no label
    with pytest.raises(ValueError, match=f"Train: audio files \\['{loose.name}'\\] lie outside any label folder; this "
                                         "folder should hold label folders only"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    loose.rename(tmp_path / loose.name)
    with pytest.raises(ValueError, match="lie outside any label folder; this folder should hold split folders only"):
        load_audio_folder(tmp_path, decode=False, progress=False)


def test_truncated_wav_is_refused_not_read_short(tmp_path):
    whole = ICBHI / "audio_and_txt_files" / f"{ICBHI_4_KHZ}.wav"
    (tmp_path / "Normal").mkdir()
    data = whole.read_bytes()
    (tmp_path / "Normal" / "cut.wav").write_bytes(data[: len(data) // 2])  # a copy cut short: libsndfile reads half
    with pytest.raises(ValueError, match=r"cut.wav: the WAV file is truncated: its header declares \d+ bytes of audio, "
                                         r"the file holds \d+ \(50%\)\. Pass on_missing='skip'"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    streamed = bytearray(data)  # as arecord writes to a pipe: the data size left at 0x7FFFFF00, the file complete
    data_at = streamed.index(b"data") + 4
    streamed[data_at : data_at + 4] = (0x7FFFFF00).to_bytes(4, "little")
    (tmp_path / "Normal" / "cut.wav").write_bytes(streamed)
    rows = load_audio_folder(tmp_path, decode=False, progress=False)["train"]
    assert rows[0]["end_s"] == pytest.approx(sf.info(whole).duration)



@pytest.mark.parametrize("container", ["RF64", "W64"])
def test_truncated_64_bit_wav_is_refused_not_read_short(tmp_path, container):
    """RF64 (sizes in its ds64 chunk) and Sony Wave64 (GUID chunks, 64-bit sizes): libsndfile reads half of a file
    cut in half without a word, as it does a plain WAV."""
    waveform, rate = sf.read(ICBHI / "audio_and_txt_files" / f"{ICBHI_4_KHZ}.wav", dtype="int16")
    whole = tmp_path / f"whole.{container.lower()}"
    sf.write(whole, waveform, rate, format=container, subtype="PCM_16")
    assert wav_shortfall(whole) is None
    data = whole.read_bytes()
    cut = tmp_path / "Normal" / "cut.wav"  # RF64 files are named .wav
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    assert wav_shortfall(cut) == (2 * len(waveform), len(data) // 2 - (len(data) - 2 * len(waveform)))
    with pytest.raises(ValueError, match=r"cut.wav: the WAV file is truncated: its header declares \d+ bytes of audio, "
                                         r"the file holds \d+ \(50%\)"):
        load_audio_folder(tmp_path, decode=False, progress=False)
    if container == "RF64":  # as a writer to a pipe leaves it: the 64-bit audio size unknown, the file complete
        streamed = bytearray(data)
        size_at = streamed.index(b"ds64") + 16
        streamed[size_at : size_at + 8] = (2**64 - 1).to_bytes(8, "little")
        cut.write_bytes(streamed)
        assert wav_shortfall(cut) is None
    else:  # a damaged chunk size (0) ends the search instead of reading the same chunk for ever
        damaged = bytearray(data)
        damaged[40 + 16 : 40 + 24] = bytes(8)
        cut.write_bytes(damaged)
        assert wav_shortfall(cut) is None


# --- read_audio --------------------------------------------------------------------------------------------------

def test_read_audio_sources_and_formats(tmp_path):
    flac = sorted((SPRSOUND / "train_wav").glob("*.flac"))[0]
    waveform, rate = read_audio(flac)
    assert waveform.dtype == np.float32 and waveform.ndim == 1 and rate == 8000
    assert np.array_equal(read_audio(flac.read_bytes())[0], waveform)
    assert np.array_equal(read_audio({"bytes": None, "path": str(flac)})[0], waveform)
    for stem in ("101_1b1_Pr_sc_Meditron", ICBHI_32_BIT):  # 24- and 32-bit
        samples, rate = read_audio(ICBHI / "audio_and_txt_files" / f"{stem}.wav")
        assert rate == 44100 and samples.dtype == np.float32 and np.abs(samples).max() <= 1.0
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([waveform, np.zeros_like(waveform)], axis=1), 8000)
    assert read_audio(stereo, mono=False)[0].shape == (len(waveform), 2)
    np.testing.assert_allclose(read_audio(stereo)[0], waveform / 2, atol=1e-4)


def test_read_audio_bad_input(tmp_path):
    with pytest.raises(ValueError, match="missing.wav: audio file not found"):
        read_audio(tmp_path / "missing.wav")
    text = tmp_path / "notes.wav"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.wav: not a readable audio file"):
        read_audio(text)
    with pytest.raises(ValueError, match="<audio bytes>: not a readable audio file"):
        read_audio(b"\x00" * 100)
    with pytest.raises(TypeError, match="got int"):
        read_audio(3)


def test_read_audio_of_a_decoded_row_says_how_to_read_it(tmp_path):
    from respstf.hub_dataset.audio import audio_decoder_problem

    if audio_decoder_problem():
        pytest.skip(f"no audio decoder here: {audio_decoder_problem()}")
    copy_sprsound_audio(tmp_path / "Normal", 1)
    row = load_audio_folder(tmp_path, progress=False)["train"][0]  # decode=True: the audio is a decoder object
    with pytest.raises(TypeError, match="got a decoded `datasets.Audio` value. Load the dataset with decode=False"):
        read_audio(row["audio"])
