"""The SPRSound dataset card (README.md with YAML metadata), with counts measured from the data."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from datasets import DatasetDict
from huggingface_hub import DatasetCard, DatasetCardData

from .builder import count_labels, label_columns
from .labels import TASKS
from .sprsound import CITATION, FILE_NAME_SCHEME, GENDERS, HOMEPAGE, LICENSE, LOCATIONS

# Where each config's split files are, per file format: the Hub's Parquet layout (what `push_to_hub` and
# `save_hub_folder` write) or `DatasetDict.save_to_disk`'s Arrow files, which `load_dataset` reads as well.
DATA_FILE_PATTERNS = {"parquet": "{config}/{split}-*", "arrow": "{config}/{split}/data-*.arrow"}
_SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
_TASK_NAMES = {"11": "Task 1-1 (event, binary)", "12": "Task 1-2 (event, 7 classes)",
               "21": "Task 2-1 (record, ternary)", "22": "Task 2-2 (record, 5 classes)"}
_LEVEL_TEXT = {
    "record": "one row per recording: the whole recording's audio, its record label, the task 2-1/2-2 "
              "labels, metadata from the file name and the sorted list of annotated events (`events`).",
    "event": "one row per annotated event: the audio cut to the event (plus any context padding, see "
             "`audio_offset_s`), the task 1-1/1-2 labels, the event's `start_s`/`end_s` in its recording, "
             "and the parent `recording_id` and `patient_id`.",
}


def size_category(num_rows: int) -> str:
    """The Hub's size category for a number of rows."""
    return next((name for limit, name in _SIZE_CATEGORIES if num_rows < limit), "n>1M")


def _config_name(datasets: DatasetDict) -> str:
    columns = next(iter(datasets.values())).column_names
    return "record" if "events" in columns else "event"


def _counts_markdown(datasets: DatasetDict) -> str:
    splits = list(datasets)
    lines = ["| split | rows |", "|---|---|"] + [f"| {split} | {datasets[split].num_rows} |" for split in splits]
    for column in label_columns(next(iter(datasets.values())).features):
        counts = {split: count_labels(datasets[split], column) for split in splits}
        lines += ["", f"`{column}`:", "", "| label | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
        for label in counts[splits[0]]:
            lines.append(f"| {label} | " + " | ".join(str(counts[split][label]) for split in splits) + " |")
    return "\n".join(lines)


def check_file_format(file_format: str) -> None:
    """Validate the ``file_format`` of a converted folder (a key of :data:`DATA_FILE_PATTERNS`)."""
    if file_format not in DATA_FILE_PATTERNS:
        raise ValueError(f"file_format must be one of {list(DATA_FILE_PATTERNS)}, got {file_format!r}.")


def build_dataset_card(
    datasets: DatasetDict | Mapping[str, DatasetDict],
    path: str | Path | None = None,
    pretty_name: str = "SPRSound",
    repo_id: str | None = None,
    file_format: str = "parquet",
) -> DatasetCard:
    """The dataset card of SPRSound `DatasetDict`s, one config per level.

    Args:
        datasets: a `DatasetDict` from `load_sprsound` (its config, ``record`` or ``event``, is read
            from its columns) or a mapping config name -> `DatasetDict`.
        path: where to write the card (a README.md), if given.
        pretty_name: the card's title.
        repo_id: the Hub repository, used in the usage example.
        file_format: the layout the card's ``configs`` point at: ``"parquet"`` (the Hub's) or ``"arrow"``
            (``save_to_disk`` under ``<config>/``), so that ``datasets.load_dataset(folder, config)`` reads either.
    """
    check_file_format(file_format)
    configs = dict(datasets) if not isinstance(datasets, DatasetDict) else {_config_name(datasets): datasets}
    pattern = DATA_FILE_PATTERNS[file_format]
    largest = max(sum(split.num_rows for split in dsdict.values()) for dsdict in configs.values())
    metadata = DatasetCardData(
        license=LICENSE,
        task_categories=["audio-classification"],
        size_categories=[size_category(largest)],
        pretty_name=pretty_name,
        annotations_creators=["expert-generated"],
        source_datasets=["original"],
        tags=["audio", "medical", "respiratory-sounds", "stethoscope", "paediatrics", "biocas"],
        configs=[{"config_name": name, "data_files": [{"split": split, "path": pattern.format(config=name, split=split)}
                                                      for split in dsdict]} for name, dsdict in configs.items()],
    )
    repo = repo_id or "<user>/sprsound"
    sections = [
        f"# {pretty_name}",
        "SPRSound, the SJTU Paediatric Respiratory Sound Database (BioCAS 2022 Grand Challenge release): "
        "stethoscope recordings of children aged 1 month to 18 years, 8 kHz, mono, 16-bit, annotated by "
        f"clinicians at the event and record level. Source: {HOMEPAGE}.",
        "## Configurations\n\n" + "\n".join(f"- `{name}`: {_LEVEL_TEXT.get(name, '')}" for name in configs),
        "```python\nfrom datasets import Audio, load_dataset\n\n"
        f'events = load_dataset("{repo}", "event")\n'
        'events = events.cast_column("audio", Audio(sampling_rate=8000))\n'
        'waveform = events["train"][0]["audio"]["array"]\n```',
    ]
    for name, dsdict in configs.items():
        sections.append(f"## Counts: `{name}` (measured from the data)\n\n{_counts_markdown(dsdict)}")
    task_lines = [f"- **{_TASK_NAMES[key]}**, column `{task['column']}`: " + ", ".join(task["labels"])
                  for key, task in TASKS.items()]
    sections += [
        "## Tasks\n\n" + "\n".join(task_lines) + "\n\n`Normal` is class 0 in every task.",
        "## Official Score\n\n"
        "SE (sensitivity) is the fraction of adventitious (non-Normal) samples classified correctly, SP "
        "(specificity) the fraction of Normal samples classified correctly. Then\n\n"
        "- AS = (SE + SP) / 2 (average score)\n- HS = 2 · SE · SP / (SE + SP) (harmonic score)\n"
        "- **Score = (AS + HS) / 2**",
        "## File names and metadata\n\n"
        f"`{FILE_NAME_SCHEME}`, e.g. `40069321_15.3_0_p1_981`: patient id (a string; ids keep leading "
        "zeros and vary in length), age in years, gender ("
        + ", ".join(f"{code} {name}" for code, name in GENDERS.items()) + "), recording location ("
        + ", ".join(f"{code} {name}" for code, name in LOCATIONS.items()) + ") and recording number. "
        "The `recording_id` column is the whole stem; each recording's annotation is a JSON file of the "
        "same stem with the record label and the events (start/end in milliseconds, type).",
        "## Splits\n\n`train` is the official training set, `inter_test` the official inter-patient test set "
        "(patients not in train); `intra_test` and `test2023` appear when their folders were converted. "
        "For validation, carve whole patients out of train (`respstf.hub_dataset.patient_disjoint_split`).",
        "## License\n\nGPL-3.0 (the release carries the GPL-3.0 text).",
        f"## Citation\n\n```bibtex\n{CITATION}\n```",
    ]
    card = DatasetCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
    if path is not None:
        card.save(str(path))
    return card
