"""ICBHI 2017 Respiratory Sound Database: cycle level and patient level, with the official split.

Layout under ``root``: the WAV + TXT pairs (in ``audio_and_txt_files/``, ``ICBHI_final_database/`` or
``root`` itself), ``patient_diagnosis.csv``, ``ICBHI_challenge_train_test.txt`` (stem -> train/test)
and, optionally, ``demographic_info.txt``. Each TXT line is ``cycle_start_s cycle_end_s crackles wheezes``.
Audio keeps its native format (4 kHz or 44.1 kHz, 16/24/32-bit): resampling belongs to the feature
extractor.
"""

from __future__ import annotations

import re
from pathlib import Path

from datasets import ClassLabel, DatasetDict, DatasetInfo, Features, List, Value

from .audio import is_hidden
from .builder import SKIP_HINT, LoadingSummary, RECORD, Recording, SPAN, Span, build_levels, check_on_missing
from .labels import ICBHI_CYCLE_LABELS, ICBHI_DIAGNOSES, icbhi_cycle_label

LEVELS = ("cycle", "patient")
LABEL_COLUMNS = {"cycle": "cycle_label", "patient": "diagnosis"}  # the class column of each level
CHEST_LOCATIONS = {"Tc": "trachea", "Al": "anterior left", "Ar": "anterior right", "Pl": "posterior left",
                   "Pr": "posterior right", "Ll": "lateral left", "Lr": "lateral right"}
_FILE_NAME = re.compile(
    r"^(?P<patient>\d+)_(?P<index>\w+?)_(?P<location>Tc|Al|Ar|Pl|Pr|Ll|Lr)_(?P<mode>sc|mc)_(?P<equipment>\w+)$")
_AUDIO_FOLDERS = ("audio_and_txt_files", "ICBHI_final_database", ".")
SPLIT_FILE = "ICBHI_challenge_train_test.txt"
DIAGNOSIS_FILE = "patient_diagnosis.csv"
DEMOGRAPHICS_FILE = "demographic_info.txt"

CITATION = """@article{rocha2019open,
  title={An open access database for the evaluation of respiratory sound classification algorithms},
  author={Rocha, Bruno M. and others},
  journal={Physiological Measurement},
  volume={40},
  number={3},
  year={2019}
}"""

_METADATA_FEATURES = {
    "recording_id": Value("string"),
    "patient_id": Value("string"),
    "age": Value("float64"),
    "gender": Value("string"),
    "location": Value("string"),  # chest location code (Tc, Al, Ar, Pl, Pr, Ll, Lr)
    "location_name": Value("string"),
    "acquisition_mode": Value("string"),  # sc: sequential/single channel, mc: simultaneous/multichannel
    "equipment": Value("string"),
    "diagnosis": ClassLabel(names=ICBHI_DIAGNOSES),
}


def _read_lines(path: Path) -> list[str]:
    # utf-8-sig: a byte-order mark would otherwise glue itself to the first field (and hide a first line
    # of patient_diagnosis.csv as a "header").
    return path.read_text(encoding="utf-8-sig").splitlines()


def _read_split_file(path: Path) -> dict[str, str]:
    splits = {}
    for number, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in ("train", "test"):
            raise ValueError(f"{path}, line {number}: expected '<file stem> train|test', got {line!r}.")
        splits[fields[0]] = fields[1]
    return splits


def _read_diagnoses(path: Path) -> dict[str, str]:
    diagnoses = {}
    for number, line in enumerate(_read_lines(path), 1):
        fields = [field.strip() for field in line.replace("\t", ",").split(",")]
        if not line.strip() or (number == 1 and not fields[0].isdigit()):  # some copies carry a header
            continue
        if len(fields) != 2 or fields[1] not in ICBHI_DIAGNOSES:
            raise ValueError(f"{path}, line {number}: expected '<patient>,<diagnosis>' with a diagnosis in "
                             f"{ICBHI_DIAGNOSES}, got {line!r}.")
        diagnoses[fields[0]] = fields[1]
    return diagnoses


def _read_demographics(path: Path) -> dict[str, dict]:
    # patient, age, sex, adult BMI, child weight, child height; "NA" where unknown.
    demographics = {}
    for line in _read_lines(path) if path.is_file() else []:
        fields = line.split()
        if len(fields) >= 3:
            demographics[fields[0]] = {"age": None if fields[1] == "NA" else float(fields[1]),
                                       "gender": {"F": "female", "M": "male"}.get(fields[2])}
    return demographics


def read_cycles(path: Path) -> list[Span]:
    """The respiratory cycles of one TXT annotation file, sorted by start."""
    spans = []
    for number, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            start, end = float(fields[0]), float(fields[1])
            crackles, wheezes = (int(flag) for flag in fields[2:4])
        except (ValueError, IndexError):
            raise ValueError(f"{path}, line {number}: expected 'start_s end_s crackles(0/1) wheezes(0/1)', "
                             f"got {line!r}.") from None
        if len(fields) != 4 or crackles not in (0, 1) or wheezes not in (0, 1):
            raise ValueError(f"{path}, line {number}: expected 4 fields with 0/1 flags, got {line!r}.")
        if not 0 <= start < end:
            raise ValueError(f"{path}, line {number}: the cycle must start before it ends, got {line!r}.")
        label = icbhi_cycle_label(crackles, wheezes)
        spans.append(Span(start, end, label, {"cycle_label": label, "crackles": bool(crackles),
                                               "wheezes": bool(wheezes)}, f"{path}, line {number}"))
    return sorted(spans, key=lambda span: span.start_s)


def is_icbhi_release(root: str | Path) -> bool:
    """Whether ``root`` is laid out as the ICBHI database: it holds the official split file (`load_icbhi`
    then says what else is missing, if anything)."""
    return (Path(root) / SPLIT_FILE).is_file()


def load_icbhi(
    root: str | Path,
    level: str = "cycle",
    splits: str | list[str] | None = None,
    on_missing: str = "error",
    context_s: float = 0.0,
    decode: bool = True,
    num_proc: int | None = None,
    progress: bool | None = None,
) -> DatasetDict:
    """Load ICBHI 2017 as a `DatasetDict` with the official ``train``/``test`` split.

    Args:
        root: the database folder (see the module docstring).
        level: ``"cycle"`` (one row per respiratory cycle, audio cut to it, ``cycle_label`` Normal /
            Crackle / Wheeze / Both) or ``"patient"`` (one row per recording, labelled with its patient's
            ``diagnosis``; the cycles are in ``events``).
        on_missing: ``"error"`` or ``"skip"`` for a WAV without TXT (or the reverse), a recording
            missing from the split file, or audio that cannot be decoded.
        Other arguments as in `load_sprsound`.
    """
    if level not in LEVELS:
        raise ValueError(f"Unknown ICBHI level {level!r}: expected one of {LEVELS}.")
    check_on_missing(on_missing)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ICBHI root {root} does not exist or is not a folder.")
    for name in (SPLIT_FILE, DIAGNOSIS_FILE):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root / name} not found: ICBHI needs it next to the audio folder.")
    official_split = _read_split_file(root / SPLIT_FILE)
    diagnoses = _read_diagnoses(root / DIAGNOSIS_FILE)
    demographics = _read_demographics(root / DEMOGRAPHICS_FILE)
    audio_dir = next((root / folder for folder in _AUDIO_FOLDERS if any((root / folder).glob("*.wav"))), root)
    if isinstance(splits, str):
        splits = [splits]
    if splits is not None and not set(splits) <= {"train", "test"}:
        raise ValueError(f"ICBHI splits are 'train' and 'test', got {splits}.")

    summary = LoadingSummary("ICBHI 2017", str(root))
    wavs = {path.stem: path for path in sorted(audio_dir.glob("*.wav")) if not is_hidden(path.name)}
    txts = {path.stem: path for path in sorted(audio_dir.glob("*.txt"))
            if path.name not in (SPLIT_FILE, DEMOGRAPHICS_FILE, "filename_format.txt") and not is_hidden(path.name)}
    problems = [(wavs[stem], "audio without cycle annotations (.txt)") for stem in wavs if stem not in txts]
    problems += [(txts[stem], "cycle annotations without audio (.wav)") for stem in txts if stem not in wavs]
    problems += [(wavs[stem], f"not in {SPLIT_FILE}") for stem in wavs if stem in txts and stem not in official_split]
    if problems and on_missing == "error":
        listed = "; ".join(f"{path} ({reason})" for path, reason in problems[:5])
        raise FileNotFoundError(f"{len(problems)} ICBHI files cannot be used: {listed}. {SKIP_HINT}")
    summary.skipped += [(str(path), reason) for path, reason in problems]

    recordings = []
    for stem, wav in wavs.items():
        if stem not in txts or stem not in official_split:
            continue
        if splits is not None and official_split[stem] not in splits:
            continue
        match = _FILE_NAME.match(stem)
        if match is None:
            raise ValueError(f"{wav}: the name does not follow ICBHI's patient_index_location_mode_equipment "
                             "scheme, so its patient (and diagnosis) is unknown.")
        patient = match["patient"]
        if patient not in diagnoses:
            raise ValueError(f"{wav}: patient {patient} has no diagnosis in {root / DIAGNOSIS_FILE}.")
        metadata = {"patient_id": patient, **demographics.get(patient, {"age": None, "gender": None}),
                    "location": match["location"], "location_name": CHEST_LOCATIONS[match["location"]],
                    "acquisition_mode": match["mode"], "equipment": match["equipment"],
                    "diagnosis": diagnoses[patient]}
        recordings.append(Recording(official_split[stem], wav, stem, metadata, {}, read_cycles(txts[stem])))

    recordings.sort(key=lambda recording: recording.split != "train")  # train first, as in SPRSound

    if level == "patient":
        features = Features({**_METADATA_FEATURES, "duration_s": Value("float64"),
                             "events": List({"start_s": Value("float64"), "end_s": Value("float64"),
                                             "type": Value("string")})})
        kind = RECORD
    else:
        features = Features({**_METADATA_FEATURES, "cycle_label": ClassLabel(names=ICBHI_CYCLE_LABELS),
                             "crackles": Value("bool"), "wheezes": Value("bool"), "event_index": Value("int32"),
                             "start_s": Value("float64"), "end_s": Value("float64"),
                             "audio_offset_s": Value("float64")})
        kind = SPAN
    info = DatasetInfo(description="ICBHI 2017 Respiratory Sound Database", citation=CITATION,
                       homepage="https://bhichallenge.med.auth.gr/")
    return build_levels(recordings, {level: (kind, features)}, summary, info, context_s=context_s,
                        decode=decode, num_proc=num_proc, progress=progress, skip_unreadable=on_missing == "skip")[level]
