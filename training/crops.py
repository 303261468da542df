"""Record crops: training recordings drawn whole or as labelled windows (see `RecordCrops`)."""

from __future__ import annotations

import datasets
import torch

from respstf.hub_dataset.labels import (
    DETECTION_LABELS, DETECTION_TASK, POOR_QUALITY_LABEL, record_label_from_events, record_label_from_frame_labels,
    record_task_label,
)

# A window's label counts an event type only when at least this much of it is inside: a sliver of a
# crackle cut at the window's edge is not evidence a listener could hear.
MIN_EVENT_SECONDS_IN_CROP = 0.25


def crop_frames(extractor, min_seconds: float) -> tuple[int, int]:
    """``(min_frames, min_event_frames)`` of `RecordCrops` for ``extractor``'s frames: the shortest window
    (``min_seconds``, ``--record_crop_min_seconds``) and the shortest event sliver that counts in a label."""
    min_frames = round(min_seconds / extractor.frame_seconds)
    if min_frames >= extractor.n_frames:
        raise ValueError(
            f"--record_crop_min_seconds {min_seconds:g}: no window that long fits the model's {extractor.clip_seconds:.2f} s "
            "clip, so no recording would be cropped; pass a longer --n_frames or --record_crop_probability 0."
        )
    return min_frames, round(MIN_EVENT_SECONDS_IN_CROP / extractor.frame_seconds)


class RecordCrops(torch.utils.data.Dataset):
    """Training recordings of a record task or of the event detector, each drawn whole or, with probability
    ``probability``, as a random window (at least ``min_frames`` frames) moved to the start of the clip and
    labelled by the record rule applied to the events inside it (a record's class is fixed by its events' types).
    Each epoch then shows new, correctly labelled examples, and the model must find *where* the evidence is (a
    detector: at new places in its input). With probability ``pair_probability`` the window is followed by a
    window of another random training recording, and the pair is labelled from the events of both (so CAS & DAS
    examples are also made from a wheeze of one child and a crackle of another). Poor Quality recordings (no
    events) and windows without an annotated event stay whole.

    Items are those of ``records`` in torch format: ``input_features`` ``(1, F, T)``, ``attention_mask``
    ``(T,)``, and for a record task ``frame_labels`` ``(T,)`` (:data:`FRAME_LABELS`, -100 outside events) and
    ``labels`` (the record class); for the detector (``task`` ``"events"``, `featurize` with ``detection``)
    ``labels`` ``(T,)`` (:data:`DETECTION_LABELS`) and ``record_labels`` (the Task 2-2 class).
    """

    def __init__(self, records: datasets.Dataset, task: str, label_names: list[str], probability: float,
                 min_frames: int, min_event_frames: int, pair_probability: float = 0.0):
        self.records, self.task, self.label_names = records, task, label_names
        self.probability, self.min_frames, self.min_event_frames = probability, max(1, min_frames), max(1, min_event_frames)
        self.pair_probability = pair_probability
        detection = task == DETECTION_TASK
        self.frame_key, self.record_key = ("labels", "record_labels") if detection else ("frame_labels", "labels")
        # A detector's Poor Quality recordings have every frame labelled Poor Quality: they stay whole, as they do
        # (without frame labels) for a record task.
        self.poor_quality = DETECTION_LABELS.index(POOR_QUALITY_LABEL) if detection else None

    def record_label(self, frame_classes: list[int]) -> str:
        """The task's record class of a window whose labelled frames have these classes (at least one)."""
        if self.poor_quality is None:
            return record_task_label(record_label_from_frame_labels(frame_classes), self.task)
        return record_label_from_events([DETECTION_LABELS[c] for c in frame_classes])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.draw(self.records[index])

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """A batch read in one go (as the data loader asks when the dataset offers it)."""
        return [self.draw(item) for item in self.records.__getitems__(indices)]

    def window(self, item: dict[str, torch.Tensor], max_frames: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A random window of ``item``'s audio, ``min_frames`` to ``max_frames`` long: its features ``(1, F, size)``
        and frame labels ``(size,)`` (event slivers shorter than ``min_event_frames`` set to -100), or None when
        no event is in it (or the recording is too short)."""
        length = int(item["attention_mask"].sum())
        if min(length, max_frames) < self.min_frames:
            return None
        size = int(torch.randint(self.min_frames, min(length, max_frames) + 1, ()))
        start = int(torch.randint(0, length - size + 1, ()))
        frame_labels = item[self.frame_key][start : start + size].clone()
        classes, counts = frame_labels[frame_labels >= 0].unique(return_counts=True)
        present = classes[counts >= self.min_event_frames]
        if len(present) == 0 or self.poor_quality in classes.tolist():
            return None
        frame_labels[~torch.isin(frame_labels, present)] = -100  # slivers left out of the label are not targets either
        return item["input_features"][..., start : start + size], frame_labels

    def draw(self, item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``item`` whole, or a labelled window (or pair of windows) of it (see the class docstring)."""
        length = int(item["attention_mask"].sum())
        if length <= self.min_frames or float(torch.rand(())) >= self.probability:
            return item
        clip_frames = item["attention_mask"].numel()
        paired = self.pair_probability > 0 and float(torch.rand(())) < self.pair_probability
        first = self.window(item, clip_frames - self.min_frames if paired else length)
        if first is None:
            return item
        windows = [first]
        if paired:
            other = self.records[int(torch.randint(len(self.records), ()))]
            second = self.window(other, clip_frames - first[1].numel())
            windows += [second] if second is not None else []
        features = torch.cat([features for features, _ in windows], dim=-1)
        frame_labels = torch.cat([labels for _, labels in windows])
        size = frame_labels.numel()
        record_label = self.record_label(frame_labels[frame_labels >= 0].unique().tolist())
        crop = {
            "input_features": torch.zeros_like(item["input_features"]),
            "attention_mask": torch.zeros_like(item["attention_mask"]),
            self.frame_key: torch.full_like(item[self.frame_key], -100),
            self.record_key: torch.tensor(self.label_names.index(record_label), dtype=item[self.record_key].dtype),
        }
        crop["input_features"][..., :size] = features
        crop["attention_mask"][:size] = 1
        crop[self.frame_key][:size] = frame_labels
        return crop
