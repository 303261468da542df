"""Command line: ``python -m respstf.hub_dataset convert ROOT OUT [--level …] [--push REPO]``."""

from __future__ import annotations

import argparse
import sys
import time

from huggingface_hub import get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from . import sprsound
from .hub import push_to_hub, save_hub_folder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m respstf.hub_dataset",
                                     description="Convert SPRSound to Hugging Face datasets and publish it.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="convert an SPRSound release folder to record- and/or event-level datasets",
        description="Convert an SPRSound release folder to `datasets` (record and/or event level), write them "
                    "with a dataset card to OUT and optionally push them to the Hub.",
        epilog=sprsound.__doc__.split("\n\n", 1)[1] + "\nOUT receives <level>/<split>-00000-of-00001.parquet "
               "(with --format arrow: <level>/ as written by save_to_disk) and README.md (the dataset card): "
               "datasets.load_dataset(OUT, 'event') reads either back.",
    )
    convert.add_argument("root", help="the SPRSound folder (any layout below)")
    convert.add_argument("out", help="output folder")
    convert.add_argument("--level", choices=["event", "record", "both"], default="both",
                         help="which level(s) to build (default: both)")
    convert.add_argument("--splits", nargs="+", choices=sprsound.SPLITS,
                         help="only these splits (default: every split found)")
    convert.add_argument("--context-s", type=float, default=0.0,
                         help="event level: seconds of audio kept before and after each event")
    convert.add_argument("--on-missing", choices=["error", "skip"], default="error",
                         help="a JSON without audio, audio without JSON or audio that cannot be decoded: stop "
                              "(default) or skip and count it")
    convert.add_argument("--num-proc", type=int, default=None, help="processes reading and cutting audio")
    convert.add_argument("--format", choices=["parquet", "arrow"], default="parquet",
                         help="parquet (Hub layout, default) or arrow (save_to_disk, read with load_from_disk)")
    convert.add_argument("--push", metavar="REPO", help="also publish to this Hub dataset repository")
    convert.add_argument("--private", action="store_true", help="make the pushed repository private")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    levels = sprsound.LEVELS if args.level == "both" else (args.level,)
    if args.push:
        try:  # before converting, which takes a while
            validate_repo_id(args.push)
        except HFValidationError as err:
            print(f"error: --push {args.push!r} is not a Hub repository id such as 'my-org/sprsound': {err}",
                  file=sys.stderr)
            return 1
        if get_token() is None:
            print("error: --push needs a Hub token: log in with `hf auth login` (or set HF_TOKEN) first.", file=sys.stderr)
            return 1
    started = time.perf_counter()
    try:
        configs = sprsound.load_sprsound_levels(args.root, levels, splits=args.splits, on_missing=args.on_missing,
                                                context_s=args.context_s, decode=False, num_proc=args.num_proc,
                                                progress=True)
    except (FileNotFoundError, ValueError) as err:  # bad input: the message names the file and the problem
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(next(iter(configs.values())).loading_summary)
    save_hub_folder(configs, args.out, file_format=args.format)
    print(f"Wrote {', '.join(levels)} to {args.out} in {time.perf_counter() - started:.1f} s.")
    if args.push:
        try:
            push_to_hub(args.push, configs=configs, private=args.private or None)
        except Exception as err:  # any Hub failure (offline, no access, network: not all are OSErrors); the files stay
            print(f"error: could not publish to {args.push} ({type(err).__name__}: {err}); the converted files "
                  f"are in {args.out}.", file=sys.stderr)
            return 1
        print(f"Pushed to https://huggingface.co/datasets/{args.push}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
