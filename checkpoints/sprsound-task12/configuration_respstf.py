"""Configuration of the RespSTF model (every hyper-parameter of the network lives here)."""

from __future__ import annotations

import math
import warnings

from transformers import PretrainedConfig

_LOSSES = ("cross_entropy", "focal")
_ANNOTATION_LEVELS = ("event", "record", None)
_DETECTION_KEYS = ("continuous", "discontinuous", "normal", "poor_quality", "record_labels")
_EVIDENCE_KINDS = ("continuous", "discontinuous", "poor_quality")  # detection_respstf.EVIDENCE_KINDS


class RespSTFConfig(PretrainedConfig):
    r"""Configuration for :class:`RespSTFModel` and :class:`RespSTFForAudioClassification`.

    The defaults are the small CPU-trainable preset; :meth:`paper` returns the preset sized like the
    paper's model. Label names reach the model as ``id2label``/``label2id`` (the training script takes
    them from ``respstf.hub_dataset``; this package knows no dataset).

    Args:
        n_scales: scalogram rows the feature extractor produces (the input's frequency axis).
        stem_channels: channels of the first convolution.
        stem_stride: ``(frequency, time)`` stride of the first convolution (the main lever on compute).
        stage_channels: output channels of each Inception-residual stage.
        stage_pool: ``(frequency, time)`` average-pooling factor after each stage.
        factorized_kernel_size: ``k`` of the factorised ``1×k`` / ``k×1`` Inception branch.
        branch_ratio: each Inception branch has ``branch_ratio * stage width`` channels.
        focus_reduction: channel reduction of the spatio-temporal focusing gates.
        temporal_focus_kernel: kernel (frames) of the temporal focusing convolution.
        frequency_focus_frames: how many backbone frames (odd), centred on each frame, the frequency focusing reads
            to pick that frame's bands; None (the paper's): one choice of bands from the whole input. On whole
            recordings, a choice per stretch of about an event's length keeps a short wheeze's band from being
            outweighed by the normal breathing around it.
        hidden_size: width of the attention layers.
        num_attention_heads: heads of each multi-head self-attention layer (must divide ``hidden_size``).
        num_attention_layers: self-attention (Transformer encoder) layers over time frames.
        intermediate_size: feed-forward width of each attention layer.
        max_frames: length of the learned position table (frames after the backbone's pooling).
        hidden_dropout, attention_dropout, classifier_dropout: dropout rates.
        loss: ``"cross_entropy"`` or ``"focal"``.
        focal_gamma: focusing exponent of the focal loss.
        label_smoothing: cross-entropy label smoothing.
        time_masks, time_mask_width: SpecAugment during training: how many frame bands are zeroed
            and their maximum width (frames).
        frequency_masks, frequency_mask_width: the same along the scale axis.
        annotation_level: what one input is: ``"event"`` (an annotated event, fitted to a short clip) or
            ``"record"`` (a whole recording); None when unknown. With ``finetuning_task`` (the SPRSound task,
            ``"11"``, ``"12"``, ``"21"`` or ``"22"``, or None for another dataset) it says what the model was trained for.
        num_frame_labels: classes of the optional frame-level head (0 disables it). With frame labels
            (e.g. from event timestamps) the model learns *where* an anomaly is, which also sharpens
            the clip-level decision.
        frame_loss_weight: weight of the frame-level loss added to the clip loss.
        ensemble_size: members of the model (each a backbone with its heads). 1, a single model, is every checkpoint
            ``train.py`` writes; more is an ensemble built from trained models of one recipe
            (``RespSTFForAudioClassification.from_members``) whose logits are the log of the members' mean
            probabilities, so softmax (as ``pipeline`` applies it) gives the averaged probabilities.
        logit_adjustment: ``num_labels`` offsets added to the logits at inference (eval mode, hence in ``pipeline``),
            or None for none. Offsets ``log p_deploy(c) - log p_train(c)`` (``respstf.modeling.prior_shift``) move
            the decision from the class prior the model learned to the prevalence where it is deployed (prior shift,
            Saerens et al. 2002); ``estimate_deployment_prior`` estimates that prevalence from unlabelled
            recordings. Training never applies them. To change them on a loaded model set
            ``model.config.logit_adjustment = [...]`` (or None to read the model's own probabilities), and
            ``save_pretrained`` to keep the choice.
        detection: an event detector's record rule (``RespSTFForAudioFrameClassification`` trained on whole
            recordings), else None: which of its classes are ``continuous`` and ``discontinuous`` adventitious sounds,
            the ``normal`` and ``poor_quality`` class, the ``record_labels`` (none, continuous, discontinuous, both,
            poor quality), and the decision's ``evidence_seconds`` and ``record_logit_adjustment`` (see
            ``detection_respstf``; the ``respiratory-event-detection`` pipeline applies them). Change them on a loaded
            model through ``model.config.detection`` and ``save_pretrained``.
    """

    model_type = "respstf"

    def __init__(
        self,
        n_scales: int = 64,
        stem_channels: int = 16,
        stem_stride: list[int] | tuple[int, int] = (2, 2),
        stage_channels: list[int] | tuple[int, ...] = (24, 48, 96),
        stage_pool: list[list[int]] | tuple = ((2, 2), (2, 2), (2, 2)),
        factorized_kernel_size: int = 7,
        branch_ratio: float = 0.5,
        focus_reduction: int = 4,
        temporal_focus_kernel: int = 5,
        frequency_focus_frames: int | None = None,
        hidden_size: int = 96,
        num_attention_heads: int = 4,
        num_attention_layers: int = 1,
        intermediate_size: int = 192,
        max_frames: int = 512,
        hidden_dropout: float = 0.1,
        attention_dropout: float = 0.1,
        classifier_dropout: float = 0.2,
        loss: str = "cross_entropy",
        focal_gamma: float = 2.0,
        label_smoothing: float = 0.0,
        time_masks: int = 2,
        time_mask_width: int = 12,
        frequency_masks: int = 2,
        frequency_mask_width: int = 6,
        finetuning_task: str | None = None,
        annotation_level: str | None = None,
        num_frame_labels: int = 0,
        frame_loss_weight: float = 0.5,
        initializer_range: float = 0.02,
        ensemble_size: int = 1,
        logit_adjustment: list[float] | None = None,
        detection: dict | None = None,
        **kwargs,
    ):
        self.n_scales = n_scales
        self.stem_channels = stem_channels
        self.stem_stride = [int(s) for s in stem_stride]
        self.stage_channels = [int(c) for c in stage_channels]
        self.stage_pool = [[int(f), int(t)] for f, t in stage_pool]
        self.factorized_kernel_size = factorized_kernel_size
        self.branch_ratio = branch_ratio
        self.focus_reduction = focus_reduction
        self.temporal_focus_kernel = temporal_focus_kernel
        self.frequency_focus_frames = frequency_focus_frames
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.num_attention_layers = num_attention_layers
        self.intermediate_size = intermediate_size
        self.max_frames = max_frames
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.classifier_dropout = classifier_dropout
        self.loss = loss
        self.focal_gamma = focal_gamma
        self.label_smoothing = label_smoothing
        self.time_masks = time_masks
        self.time_mask_width = time_mask_width
        self.frequency_masks = frequency_masks
        self.frequency_mask_width = frequency_mask_width
        self.num_frame_labels = num_frame_labels
        self.frame_loss_weight = frame_loss_weight
        self.initializer_range = initializer_range
        self.ensemble_size = ensemble_size
        self.logit_adjustment = None if logit_adjustment is None else [float(offset) for offset in logit_adjustment]
        # Configs written before class weights moved to training (respstf.training) hold them: they weighted one
        # training run's loss, not a property of the model.
        kwargs.pop("class_weights", None)
        super().__init__(**kwargs)
        # After the base class, which in transformers 4.x sets its own finetuning_task attribute.
        self.finetuning_task = finetuning_task
        self.annotation_level = annotation_level
        self.detection = detection
        self._validate()

    def __setattr__(self, key, value):
        # Classes changed from those the decision fits (id2label, also set by num_labels), e.g. from_pretrained(...,
        # num_labels=3, ignore_mismatched_sizes=True) on a checkpoint with a decision: the decision was for the old
        # classes, and the model stays usable without it. (Offsets given with classes they never fitted are refused.)
        offsets, old = self.__dict__.get("logit_adjustment"), self.__dict__.get("id2label")
        if (key == "id2label" and offsets is not None and old is not None and value is not None
                and len(old) == len(offsets) != len(value)):
            warnings.warn(f"RespSTFConfig: logit_adjustment has {len(offsets)} offsets (a decision for other classes) but "
                          f"the config now has {len(value)} classes: left out. Set one offset per class to decide for "
                          "these.", UserWarning, stacklevel=2)
            super().__setattr__("logit_adjustment", None)
        super().__setattr__(key, value)

    def _validate(self) -> None:
        positive = {
            "n_scales": self.n_scales,
            "stem_channels": self.stem_channels,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "max_frames": self.max_frames,
            "factorized_kernel_size": self.factorized_kernel_size,
            "focus_reduction": self.focus_reduction,
            "temporal_focus_kernel": self.temporal_focus_kernel,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"RespSTFConfig.{name} must be a positive integer, got {value!r}.")
        window = self.frequency_focus_frames
        if window is not None and (not isinstance(window, int) or window < 1 or window % 2 == 0):
            raise ValueError(f"RespSTFConfig.frequency_focus_frames must be None or an odd positive integer (frames centred "
                             f"on each frame), got {window!r}.")
        if len(self.stem_stride) != 2 or min(self.stem_stride) < 1:
            raise ValueError(f"RespSTFConfig.stem_stride must be a positive (frequency, time) pair, got {self.stem_stride}.")
        if not self.stage_channels or any(c < 1 for c in self.stage_channels):
            raise ValueError(f"RespSTFConfig.stage_channels must be a non-empty list of positive ints, got {self.stage_channels}.")
        if len(self.stage_pool) != len(self.stage_channels) or any(f < 1 or t < 1 for f, t in self.stage_pool):
            raise ValueError(
                f"RespSTFConfig.stage_pool needs one positive (frequency, time) pair per stage "
                f"({len(self.stage_channels)} stages), got {self.stage_pool}."
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"RespSTFConfig.num_attention_heads={self.num_attention_heads} must divide hidden_size={self.hidden_size}."
            )
        if self.num_attention_layers < 0:
            raise ValueError(f"RespSTFConfig.num_attention_layers must be >= 0, got {self.num_attention_layers}.")
        if not 0 < self.branch_ratio <= 1:
            raise ValueError(f"RespSTFConfig.branch_ratio must be in (0, 1], got {self.branch_ratio}.")
        for name in ("hidden_dropout", "attention_dropout", "classifier_dropout", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"RespSTFConfig.{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.loss not in _LOSSES:
            raise ValueError(f"RespSTFConfig.loss must be one of {_LOSSES}, got {self.loss!r}.")
        if self.annotation_level not in _ANNOTATION_LEVELS:
            raise ValueError(f"RespSTFConfig.annotation_level must be one of {_ANNOTATION_LEVELS}, got {self.annotation_level!r}.")
        for name in ("time_masks", "time_mask_width", "frequency_masks", "frequency_mask_width"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"RespSTFConfig.{name} must be a non-negative integer, got {getattr(self, name)!r}.")
        if self.num_frame_labels < 0:
            raise ValueError(f"RespSTFConfig.num_frame_labels must be >= 0, got {self.num_frame_labels}.")
        if not isinstance(self.ensemble_size, int) or self.ensemble_size < 1:
            raise ValueError(f"RespSTFConfig.ensemble_size must be a positive integer, got {self.ensemble_size!r}.")
        self.check_logit_adjustment(self.num_labels)
        if self.detection is not None:
            missing = [key for key in _DETECTION_KEYS if key not in self.detection]
            if missing or len(self.detection["record_labels"]) != 5:
                raise ValueError(f"RespSTFConfig.detection needs {', '.join(_DETECTION_KEYS)} (record_labels: 5 names), "
                                 f"got {self.detection!r}.")
            evidence_seconds = self.detection.get("evidence_seconds", 1.0)
            if not (isinstance(evidence_seconds, (int, float)) and evidence_seconds > 0):
                raise ValueError(f"RespSTFConfig.detection['evidence_seconds'] must be a positive number of seconds, "
                                 f"got {evidence_seconds!r}.")
            offsets = self.detection.get("record_logit_adjustment") or {}
            if not (set(offsets) <= set(_EVIDENCE_KINDS) and all(math.isfinite(float(v)) for v in offsets.values())):
                raise ValueError(f"RespSTFConfig.detection['record_logit_adjustment'] maps {', '.join(_EVIDENCE_KINDS)} to "
                                 f"finite log-odds offsets, got {offsets!r}.")

    def check_logit_adjustment(self, num_labels: int) -> None:
        """Raise ValueError unless ``logit_adjustment`` is None or ``num_labels`` finite offsets. The model checks
        again at inference, as the documented way to change the offsets is to set the attribute."""
        offsets = self.logit_adjustment
        if offsets is None:
            return
        try:
            valid = len(offsets) == num_labels and all(math.isfinite(float(offset)) for offset in offsets)
        except (TypeError, ValueError):  # not a sequence of numbers
            valid = False
        if not valid:
            raise ValueError(
                f"RespSTFConfig.logit_adjustment must be None or {num_labels} finite offsets (one per class), got {offsets!r}."
            )

    @classmethod
    def paper(cls, **kwargs) -> "RespSTFConfig":
        """The preset sized like the paper's model (128-scale scalograms, wider stages, 2 attention layers)."""
        preset = dict(
            n_scales=128,
            stem_channels=32,
            stem_stride=(1, 1),
            stage_channels=(64, 128, 192, 256),
            stage_pool=((2, 2), (2, 2), (2, 2), (2, 1)),
            hidden_size=256,
            num_attention_heads=8,
            num_attention_layers=2,
            intermediate_size=512,
        )
        preset.update(kwargs)
        return cls(**preset)
