"""Record crops: training recordings drawn whole or as labelled windows (see `RecordCrops`)."""

from __future__ import annotations

import datasets
import torch

from respstf.hub_dataset.labels import record_label_from_frame_labels, record_task_label

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
    """Training recordings of a record task, each drawn whole or, with probability ``probability``, as
    a random window (at least ``min_frames`` frames) moved to the start of the clip and labelled by the
    record rule applied to the events inside it (a record's class is fixed by its events' types). Each
    epoch then shows new, correctly labelled examples, and the model must find *where* the evidence is.
    With probability ``pair_probability`` the window is followed by a window of another random training
    recording, and the pair is labelled from the events of both (so CAS & DAS examples are also made
    from a wheeze of one child and a crackle of another). Poor Quality recordings (no events) and
    windows without an annotated event stay whole.

    Items are those of ``records`` in torch format: ``input_features`` ``(1, F, T)``, ``attention_mask``
    ``(T,)``, ``frame_labels`` ``(T,)`` (:data:`FRAME_LABELS`, -100 outside events) and ``labels``.
    """

    def __init__(self, records: datasets.Dataset, task: str, label_names: list[str], probability: float,
                 min_frames: int, min_event_frames: int, pair_probability: float = 0.0):
        self.records, self.task, self.label_names = records, task, label_names
        self.probability, self.min_frames, self.min_event_frames = probability, max(1, min_frames), max(1, min_event_frames)
        self.pair_probability = pair_probability

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
        frame_labels = item["frame_labels"][start : start + size].clone()
        classes, counts = frame_labels[frame_labels >= 0].unique(return_counts=True)
        present = classes[counts >= self.min_event_frames]
        if len(present) == 0:
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
        present = frame_labels[frame_labels >= 0].unique().tolist()
        record_label = record_task_label(record_label_from_frame_labels(present), self.task)
        crop = {
            "input_features": torch.zeros_like(item["input_features"]),
            "attention_mask": torch.zeros_like(item["attention_mask"]),
            "frame_labels": torch.full_like(item["frame_labels"], -100),
            "labels": torch.tensor(self.label_names.index(record_label), dtype=item["labels"].dtype),
        }
        crop["input_features"][..., :size] = features
        crop["attention_mask"][:size] = 1
        crop["frame_labels"][:size] = frame_labels
        return crop
