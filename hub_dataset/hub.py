"""Writing the converted SPRSound configs to a folder laid out like the Hub repository, and publishing them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from datasets import Audio, DatasetDict
from huggingface_hub import HfApi

from .card import build_dataset_card, check_file_format
from .sprsound import LEVELS, load_sprsound_levels


def _decodable(datasets: DatasetDict) -> DatasetDict:
    # The feature is stored with the data: publish `Audio()` so readers get decoded audio by default,
    # even when the rows were built with decode=False (a cast of the feature only, no re-encoding).
    return datasets.cast_column("audio", Audio())


def save_hub_folder(configs: Mapping[str, DatasetDict], out_dir: str | Path, file_format: str = "parquet") -> Path:
    """Write each config and the dataset card to ``out_dir``.

    ``parquet`` mirrors the Hub repository (``<config>/<split>-00000-of-00001.parquet`` + ``README.md``),
    so ``datasets.load_dataset(out_dir, "event")`` works and the folder can be uploaded as is;
    ``arrow`` writes ``<config>/`` with `DatasetDict.save_to_disk` (read back with
    ``load_from_disk(out_dir / "event")``, or ``load_dataset(out_dir, "event")`` through the card).
    """
    check_file_format(file_format)  # before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, datasets in configs.items():
        if file_format == "arrow":
            _decodable(datasets).save_to_disk(str(out_dir / name))
            continue
        (out_dir / name).mkdir(exist_ok=True)
        for split, dataset in _decodable(datasets).items():
            # datasets < 5.2 divides by the row count when it sizes row groups itself: an empty split gets a size.
            dataset.to_parquet(str(out_dir / name / f"{split}-00000-of-00001.parquet"), batch_size=None if len(dataset) else 1)
    build_dataset_card(configs, path=out_dir / "README.md", file_format=file_format)
    return out_dir


def push_to_hub(
    repo_id: str,
    root: str | Path | None = None,
    configs: Mapping[str, DatasetDict] | None = None,
    levels: tuple[str, ...] = LEVELS,
    private: bool | None = None,
    token: str | None = None,
    **load_kwargs,
) -> dict[str, DatasetDict]:
    """Publish SPRSound to the Hub as a dataset repository with ``record`` and ``event`` configs and the card.

    Either pass ``root`` (converted here with `load_sprsound_levels`, ``load_kwargs`` forwarded) or
    already loaded ``configs`` (config name -> `DatasetDict`). The card goes first; each
    `DatasetDict.push_to_hub(config_name=...)` then adds its data files and ``dataset_info`` to it.
    Returns the configs pushed.

    Example::

        push_to_hub("my-org/sprsound", root="../shared/data/sprsound")
        # then: datasets.load_dataset("my-org/sprsound", "event")
    """
    if configs is None:
        if root is None:
            raise ValueError("Pass the SPRSound root folder or already loaded configs.")
        configs = load_sprsound_levels(root, levels, **load_kwargs)
    card = build_dataset_card(configs, repo_id=repo_id)
    HfApi(token=token).create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    card.push_to_hub(repo_id, repo_type="dataset", token=token)
    for name, datasets in configs.items():
        _decodable(datasets).push_to_hub(repo_id, config_name=name, private=private, token=token)
    return dict(configs)
