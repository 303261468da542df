"""The Trainer of RespSTF runs: class-weighted clip loss and a training clock that survives a resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState


class RespSTFTrainer(Trainer):
    """`Trainer` whose clip loss (an event detector's: frame loss) weighs the classes by ``class_weights`` (one per
    class, or None: unweighted).

    The weights are a choice of the run (they follow its training labels and ``--imbalance``), so they are given
    here rather than kept in the model's config, where they would go stale with a new label set. The loss stays
    a per-batch mean, as the model's own (``accepts_loss_kwargs = False``).
    """

    def __init__(self, *args, class_weights: list[float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.class_weights is None or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels, unwrapped = inputs["labels"], self.accelerator.unwrap_model(model)
        # Without labels the model's loss is its frame loss alone (None without frame labels); the clip loss is added.
        outputs = model(**{name: value for name, value in inputs.items() if name != "labels"})
        loss = unwrapped.weighted_loss(outputs.logits, labels, self.class_weights)
        if outputs.loss is not None:
            loss = outputs.loss + loss
        outputs["loss"] = loss
        return (loss, outputs) if return_outputs else loss


def describe_device(device, precision: str | None = None) -> str:
    """A device as a person reads it in a results table: the GPU's name, or CPU with its thread count, and
    the arithmetic when given (``"fp32"``, or ``"bf16"`` / ``"fp16"`` for mixed precision)."""
    device, threads = torch.device(device), torch.get_num_threads()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type.upper()} ({threads} thread{'s' if threads > 1 else ''})"
    return f"{name}, {precision}" if precision else name


class TrainingClock(TrainerCallback, ExportableState):
    """Seconds spent training, kept in each checkpoint's ``trainer_state.json``, so that a run resumed after a kill
    reports its whole training time rather than the last segment's."""

    def __init__(self, seconds_before: float = 0.0):
        self.seconds_before, self.started = seconds_before, time.time()

    @classmethod
    def resumed_from(cls, checkpoint: str | None) -> TrainingClock:
        """The clock as ``checkpoint`` left it (zero for a fresh run, or a checkpoint saved without one)."""
        state_file = Path(checkpoint or "") / "trainer_state.json"
        saved = json.loads(state_file.read_text()).get("stateful_callbacks", {}) if checkpoint and state_file.is_file() else {}
        return cls(**saved[cls.__name__]["args"]) if cls.__name__ in saved else cls()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()
        # A checkpoint saved without this clock has no entry for it, and the Trainer's next save looks it up.
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    def state(self) -> dict:
        return {"args": {"seconds_before": self.seconds_before + time.time() - self.started}, "attributes": {}}
