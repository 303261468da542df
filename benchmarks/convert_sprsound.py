"""Time converting the whole shared SPRSound copy (2,304 recordings, 8,085 events) to both levels.

    python benchmarks/convert_sprsound.py [SPRSOUND_ROOT]

Measures `load_sprsound_levels` (read and validate every recording, cut every event, build the Arrow
tables) in one process and with ``num_proc=2``, then writing both configs as Hub-layout Parquet
(what ``python -m respstf.hub_dataset convert`` does).

Measured on the 2-core dev machine (no GPU), shared copy: both levels 8.7 s in one process, 6.2 s with
num_proc=2; writing the Parquet + card 0.2 s (101 MB). Counts: record 1,949 train + 355 inter_test,
event 6,656 train + 1,429 inter_test, as in the shared README.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from respstf.hub_dataset import load_sprsound_levels, save_hub_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = Path(os.environ.get("RESPSTF_DATA_DIR", REPO_ROOT.parent / "shared" / "data")) / "sprsound"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT, help=f"SPRSound folder (default {DEFAULT_ROOT})")
    root = parser.parse_args().root
    if not root.is_dir():
        print(f"SPRSound not found at {root}; pass its path or set RESPSTF_DATA_DIR.")
        return 1
    print(f"SPRSound at {root}, {os.cpu_count()} CPU cores")
    for num_proc in (None, 2):
        started = time.perf_counter()
        configs = load_sprsound_levels(root, decode=False, num_proc=num_proc, progress=False)
        seconds = time.perf_counter() - started
        rows = ", ".join(f"{level} {sum(split.num_rows for split in datasets.values())} rows"
                         for level, datasets in configs.items())
        print(f"both levels, num_proc={num_proc}: {seconds:.1f} s ({rows})")
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        save_hub_folder(configs, out)
        size = sum(path.stat().st_size for path in Path(out).rglob("*.parquet")) / 1e6
        print(f"writing Hub-layout Parquet + card: {time.perf_counter() - started:.1f} s ({size:.0f} MB)")
    print(configs["record"].loading_summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
