"""The Trainer of RespSTF runs: class-weighted clip loss and a training clock that survives a resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from respstf.modeling.modeling_respstf import output_frame_labels


class RespSTFTrainer(Trainer):
    """`Trainer` whose clip loss (an event detector's: frame loss) weighs the classes by ``class_weights`` (one per
    class, or None: unweighted), and for an event detector adds ``adventitious_loss_weight`` times
    `adventitious_frame_loss`.

    Both are choices of the run (the weights follow its training labels and ``--imbalance``), so they are given
    here rather than kept in the model's config, where they would go stale with a new label set. The loss stays
    a per-batch mean, as the model's own (``accepts_loss_kwargs = False``).
    """

    def __init__(self, *args, class_weights: list[float] | None = None, adventitious_loss_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights, self.adventitious_loss_weight = class_weights, adventitious_loss_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if (self.class_weights is None and not self.adventitious_loss_weight) or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels, unwrapped = inputs["labels"], self.accelerator.unwrap_model(model)
        # Without labels the model's loss is its frame loss alone (None without frame labels); the clip loss is added.
        outputs = model(**{name: value for name, value in inputs.items() if name != "labels"})
        loss = unwrapped.weighted_loss(outputs.logits, labels, self.class_weights)
        if self.adventitious_loss_weight:
            loss = loss + self.adventitious_loss_weight * adventitious_frame_loss(outputs.logits, labels, unwrapped)
        if outputs.loss is not None:
            loss = outputs.loss + loss
        outputs["loss"] = loss
        return (loss, outputs) if return_outputs else loss


def adventitious_frame_loss(logits: torch.Tensor, labels: torch.Tensor, detector) -> torch.Tensor:
    """An event detector's frame loss on adventitious against normal sound: ``-log p(Normal)`` over its output frames
    ``logits`` ``(B, T', C)`` labelled Normal, ``-log`` of the summed probability of the adventitious types (its
    ``config.detection`` continuous and discontinuous classes) over those labelled with one, the two groups' means
    averaged (so the rarer adventitious frames weigh as much as the normal ones); input-frame ``labels`` ``(B, T)``
    as its own loss takes them. Poor Quality and unlabelled frames take no part; 0 when no frame does."""
    detection = detector.config.detection
    label2id = {name: int(index) for index, name in detector.config.id2label.items()}
    adventitious = logits.new_tensor(sorted({label2id[name] for name in detection["continuous"] + detection["discontinuous"]}),
                                     dtype=torch.long)
    targets = output_frame_labels(labels, logits.shape[1], detector.frame_stride)
    log_probabilities = logits.float().log_softmax(-1)
    groups = [(targets == label2id[detection["normal"]], log_probabilities[..., label2id[detection["normal"]]]),
              (torch.isin(targets, adventitious), log_probabilities[..., adventitious].logsumexp(-1))]
    losses = [-log_probability[frames].mean() for frames, log_probability in groups if frames.any()]
    return torch.stack(losses).mean() if losses else logits.sum() * 0


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
