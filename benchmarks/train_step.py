"""Training throughput in float32 and in bfloat16 autocast, side by side: examples per second of full
optimizer steps (forward, loss, backward, AdamW) on real SPRSound scalograms.

    python benchmarks/train_step.py                      # CPU, 2 torch threads
    python benchmarks/train_step.py --device cuda --paper_preset   # GPU

Rows: the shipped Task 2-2 model on whole recordings (960 frames, frame supervision on, as the
recipe's record runs train) and the shipped Task 1-2 model on events (128 frames), and with
``--paper_preset`` the paper preset (random weights) on the same recordings; each in fp32 and bf16,
the ratio printed beside bf16.
``train.py --bf16`` (``--bf16 --use_cpu`` on a CPU) trains in bf16 autocast; on a CPU it pays off only
with native bf16 instructions (AVX512-BF16 or AMX), which the first line reports.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoFeatureExtractor

from respstf import training
from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset import TASKS, load_sprsound
from respstf.modeling import RespSTFConfig, RespSTFForAudioClassification

ROOT = Path(__file__).resolve().parents[1]

SPRSOUND = Path(os.environ.get("RESPSTF_DATA_DIR", ROOT.parent / "shared" / "data")) / "sprsound"
TASK_OF_LEVEL = {"record": "22", "event": "12"}
CHECKPOINTS = {level: ROOT / "checkpoints" / f"sprsound-task{task}" for level, task in TASK_OF_LEVEL.items()}


def real_rows(level: str, batch_size: int):
    """The first ``batch_size`` rows of the 2022 train split at ``level``, audio undecoded."""
    return load_sprsound(SPRSOUND, task=TASK_OF_LEVEL[level], splits=["train"], decode=False, progress=False)["train"].select(range(batch_size))


def real_batch(rows, level: str, extractor) -> dict[str, torch.Tensor]:
    """``rows`` as the model's inputs, through ``respstf.training.featurize`` (what train.py uses): ``input_features`` ``(B, 1, F, T)``,
    ``attention_mask`` ``(B, T)``, ``labels`` ``(B,)`` and, for records, ``frame_labels`` ``(B, T)`` from the
    event timestamps."""
    column = TASKS[TASK_OF_LEVEL[level]]["column"]
    featurized = training.featurize(rows, extractor, column, with_frames=level == "record")
    return featurized.remove_columns("seconds").with_format("torch")[:]  # seconds: train.py's crop report


def candidates(level: str, paper_preset: bool) -> list[tuple[str, RespSTFFeatureExtractor, RespSTFForAudioClassification]]:
    """The shipped model of ``level`` (a fold ensemble's first member) and, with ``paper_preset``, the paper preset
    (random weights, its 128 scales) with the same heads."""
    extractor = AutoFeatureExtractor.from_pretrained(CHECKPOINTS[level])
    shipped = RespSTFForAudioClassification.from_pretrained(CHECKPOINTS[level])
    if shipped.config.ensemble_size > 1:  # a fold ensemble: time one member, as train.py fine-tunes one
        shipped = shipped.member(0)
    rows = [(f"checkpoints/{CHECKPOINTS[level].name}", extractor, shipped)]
    if paper_preset:
        paper = RespSTFConfig.paper(**{key: getattr(shipped.config, key) for key in ("id2label", "label2id", "num_frame_labels")})
        rows.append(("paper preset (random weights)", AutoFeatureExtractor.from_pretrained(CHECKPOINTS[level], n_scales=paper.n_scales),
                     RespSTFForAudioClassification(paper)))
    return rows


def examples_per_second(model, batch: dict[str, torch.Tensor], dtype: torch.dtype | None, steps: int, device: torch.device) -> float:
    """Median over ``steps`` timed optimizer steps (after one warm-up step) of batch size / step time."""
    model = model.to(device).train()
    batch = {key: value.to(device) for key, value in batch.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for step in range(steps + 1):
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert torch.isfinite(loss), f"non-finite loss {loss}"
        if step:  # step 0 warms up
            times.append(time.perf_counter() - started)
    return len(batch["labels"]) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row (after one warm-up step)")
    parser.add_argument("--paper_preset", action="store_true", help="also the paper preset (minutes per row on a CPU)")
    args = parser.parse_args()
    if not SPRSOUND.is_dir():
        raise SystemExit(f"{SPRSOUND} not found; set RESPSTF_DATA_DIR to the shared data folder.")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    native = (
        f"AVX512-BF16 {torch.cpu._is_avx512_bf16_supported()}, AMX {torch.cpu._is_amx_tile_supported()}"
        if device.type == "cpu" else "GPU"
    )
    print(f"{training.describe_device(device)} (native bf16: {native}); batch {args.batch_size}, median of {args.steps} steps")
    print(f"{'':32s} {'input':>14s} {'fp32 ex/s':>10s} {'bf16 ex/s':>10s} {'bf16/fp32':>10s}")
    for level in ("record", "event"):
        rows = real_rows(level, args.batch_size)
        for name, extractor, model in candidates(level, args.paper_preset):
            batch = real_batch(rows, level, extractor)
            shape = "x".join(str(n) for n in batch["input_features"].shape[2:])
            fp32 = examples_per_second(model, batch, None, args.steps, device)
            bf16 = examples_per_second(model, batch, torch.bfloat16, args.steps, device)
            print(f"{name:32s} {level + ' ' + shape:>14s} {fp32:10.1f} {bf16:10.1f} {bf16 / fp32:10.2f}", flush=True)


if __name__ == "__main__":
    main()
