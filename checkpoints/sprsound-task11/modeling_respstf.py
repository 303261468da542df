"""RespSTF: Inception-residual CNN with spatio-temporal focusing and multi-head attention over CWT scalograms.

After Ngo, Pham, Phan, Tran, Jarchi, "A Deep Learning Architecture with Spatio-Temporal Focusing for
Detecting Respiratory Anomalies", IEEE BioCAS 2023 (arXiv 2306.14929).

Data flow (shapes for a batch ``B`` of scalograms with ``F`` scales and ``T`` frames)::

    input_features (B, 1, F, T)
      -> ConvStem                               (B, C0, F, T)
      -> InceptionResidualBlock + pool, x stages (B, C, F', T')
      -> SpatioTemporalFocusing                 (B, C, T')   frequency-weighted sum, time-gated
      -> project + learned positions            (B, T', H)
      -> self-attention layers (multi-head)     (B, T', H)
      -> attentive pooling over valid frames    (B, H)
      -> classifier                             (B, num_labels)
      (optional) frame head                     (B, T', num_frame_labels)

An ensemble (``config.ensemble_size`` > 1) runs this once per member and returns the log of the members' mean
probabilities ``(B, num_labels)``; ``config.logit_adjustment`` (per-class offsets) is added at inference.

Following the paper's text: the CWT scalogram front end, Inception-style blocks with parallel branches
of different receptive fields and a residual connection, a spatio-temporal focusing stage that weights
the feature map along frequency and along time, and multi-head self-attention before the classifier.
Our choices (the paper does not fix them): the exact branch set (1×1, 1×1→3×3, 1×1→1×k→k×1,
pool→1×1), batch norm + GELU, average pooling between stages, the focusing as a softmax over
frequency plus a sigmoid gate over time, pre-norm Transformer encoder layers with learned positions,
attentive pooling, the optional frame-level head used for event-timestamp supervision, and focal loss.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput, TokenClassifierOutput

from .configuration_respstf import RespSTFConfig
# Imported so that the pipelines' code ships with the model's: save_pretrained and remote code copy the files the
# model's file imports.
from .pipeline_respstf import (
    TASK as DETECTION_PIPELINE_TASK, RespiratoryEventDetectionPipeline, RespSTFAudioClassificationPipeline,
)


class ConvNormAct(nn.Sequential):
    """Conv2d (same padding) -> BatchNorm2d -> GELU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] | int = 1, stride: tuple[int, int] | int = 1):
        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=(kernel[0] // 2, kernel[1] // 2), bias=False),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )


class InceptionResidualBlock(nn.Module):
    """Four parallel branches (1×1; 1×1→3×3; 1×1→1×k→k×1; 3×3 avg-pool→1×1), concatenated,
    projected by a 1×1 convolution and added to a (projected) shortcut.

    ``(B, C_in, F, T) -> (B, C_out, F, T)``
    """

    def __init__(self, in_channels: int, out_channels: int, factorized_kernel_size: int, branch_ratio: float):
        super().__init__()
        width = max(4, int(out_channels * branch_ratio))
        k = factorized_kernel_size
        self.point = ConvNormAct(in_channels, width, 1)
        self.local = nn.Sequential(ConvNormAct(in_channels, width, 1), ConvNormAct(width, width, 3))
        self.factorized = nn.Sequential(
            ConvNormAct(in_channels, width, 1), ConvNormAct(width, width, (1, k)), ConvNormAct(width, width, (k, 1))
        )
        self.pooled = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), ConvNormAct(in_channels, width, 1))
        self.project = nn.Sequential(nn.Conv2d(4 * width, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        )
        self.activation = nn.GELU()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        branches = torch.cat([self.point(hidden), self.local(hidden), self.factorized(hidden), self.pooled(hidden)], dim=1)
        return self.activation(self.project(branches) + self.shortcut(hidden))


class InceptionStage(nn.Module):
    """An Inception-residual block followed by ``(frequency, time)`` average pooling."""

    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int], config: RespSTFConfig):
        super().__init__()
        self.block = InceptionResidualBlock(in_channels, out_channels, config.factorized_kernel_size, config.branch_ratio)
        self.pool = nn.AvgPool2d(tuple(pool), ceil_mode=True)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.pool(self.block(hidden))


class SpatioTemporalFocusing(nn.Module):
    """Focus the feature map on informative frequency bands and time frames.

    Frequency focusing: per-channel softmax weights over the frequency axis (from the time-averaged
    map: over the whole input, or with ``profile_frames`` over that many frames centred on each frame,
    so each stretch picks its own bands) collapse frequency by a weighted sum. Temporal focusing: a
    sigmoid gate ``g`` per frame (from a 1-D convolution over time) rescales frames by ``1 + g``, so
    informative stretches count up to twice as much. The gate can emphasise but never silence a frame: a
    plain ``g`` gate collapsed to 0 on every real frame in our record-level runs, leaving the classifier
    blind.

    ``(B, C, F', T') -> (B, C, T')``; also returns the time gate ``(B, T')``.
    """

    def __init__(self, channels: int, reduction: int, temporal_kernel: int, profile_frames: int | None = None):
        super().__init__()
        self.profile_frames = profile_frames
        reduced = max(4, channels // reduction)
        self.frequency_scores = nn.Sequential(
            nn.Conv1d(channels, reduced, 1), nn.GELU(), nn.Conv1d(reduced, channels, 1)
        )
        self.time_gate = nn.Sequential(
            nn.Conv1d(channels, reduced, temporal_kernel, padding=temporal_kernel // 2),
            nn.GELU(),
            nn.Conv1d(reduced, 1, 1),
        )

    def forward(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        focus = self.focus_whole_input if self.profile_frames is None else self.focus_each_stretch
        focused = focus(hidden, frame_mask)
        gate = torch.sigmoid(self.time_gate(focused)).squeeze(1)  # (B, T')
        return focused * (1 + gate[:, None, :]), gate

    def focus_whole_input(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        """Frequency focusing with one choice of bands from the input's real frames: ``(B, C, F', T') -> (B, C, T')``."""
        if frame_mask is not None:
            weights = frame_mask[:, None, None, :].to(hidden.dtype)
            profile = (hidden * weights).sum(-1) / weights.sum(-1).clamp(min=1)  # (B, C, F')
        else:
            profile = hidden.mean(-1)
        frequency_weights = self.frequency_scores(profile).softmax(dim=-1)  # (B, C, F')
        return torch.einsum("bcft,bcf->bct", hidden, frequency_weights)

    def focus_each_stretch(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        """Frequency focusing with each frame's bands chosen from the real frames among the ``profile_frames`` centred
        on it: ``(B, C, F', T') -> (B, C, T')``."""
        batch, channels, bands, frames = hidden.shape
        size = self.profile_frames
        weights = (hidden.new_ones(batch, 1, 1, frames) if frame_mask is None
                   else frame_mask[:, None, None, :].to(hidden.dtype))

        def window_mean(values: torch.Tensor) -> torch.Tensor:  # over the window, padding counted as zeros
            flat = values.reshape(values.shape[0], -1, frames)
            return F.avg_pool1d(flat, size, stride=1, padding=size // 2, count_include_pad=True)

        # Mean of the real frames: the windows' means of masked values and of the mask (a share, at least one frame).
        profile = window_mean(hidden * weights).view(batch, channels, bands, frames)
        profile = profile / window_mean(weights).view(batch, 1, 1, frames).clamp(min=1 / size)  # (B, C, F', T')
        scores = self.frequency_scores(profile.permute(0, 3, 1, 2).reshape(batch * frames, channels, bands))
        frequency_weights = scores.softmax(dim=-1).to(hidden.dtype).view(batch, frames, channels, bands)
        return torch.einsum("bcft,btcf->bct", hidden, frequency_weights)


class AttentionLayer(nn.Module):
    """Pre-norm Transformer encoder layer: multi-head self-attention over frames + feed-forward."""

    def __init__(self, config: RespSTFConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size)
        self.attention = nn.MultiheadAttention(
            config.hidden_size, config.num_attention_heads, dropout=config.attention_dropout, batch_first=True
        )
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size)
        self.feed_forward = nn.Sequential(
            nn.Linear(config.hidden_size, config.intermediate_size),
            nn.GELU(),
            nn.Dropout(config.hidden_dropout),
            nn.Linear(config.intermediate_size, config.hidden_size),
        )
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self, hidden: torch.Tensor, padding_mask: torch.Tensor | None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        normed = self.attention_norm(hidden)
        # Weights only when asked: computing them rules out PyTorch's fused attention kernels.
        attended, weights = self.attention(
            normed, normed, normed, key_padding_mask=padding_mask, need_weights=need_weights, average_attn_weights=False
        )
        hidden = hidden + self.dropout(attended)
        hidden = hidden + self.dropout(self.feed_forward(self.feed_forward_norm(hidden)))
        return hidden, weights


class AttentivePooling(nn.Module):
    """Softmax-weighted mean over valid frames: ``(B, T', H) -> (B, H)``."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        scores = self.score(hidden).squeeze(-1)
        if frame_mask is not None:
            scores = scores.masked_fill(~frame_mask.bool(), torch.finfo(scores.dtype).min)
        return torch.einsum("bt,bth->bh", scores.softmax(dim=-1), hidden)


def spec_augment(features: torch.Tensor, n_masks: int, max_width: int, dim: int) -> torch.Tensor:
    """Zero ``n_masks`` random bands of width ``< max_width`` along ``dim`` (2 = scales, 3 = frames), per example."""
    if n_masks == 0 or max_width == 0:
        return features
    size = features.shape[dim]
    batch = features.shape[0]
    widths = torch.randint(0, max_width, (batch, n_masks, 1), device=features.device)
    starts = (torch.rand(batch, n_masks, 1, device=features.device) * (size - widths).clamp(min=1)).long()
    positions = torch.arange(size, device=features.device)[None, None, :]
    masked = ((positions >= starts) & (positions < starts + widths)).any(dim=1)  # (B, size)
    shape = [batch, 1, 1, 1]
    shape[dim] = size
    return features.masked_fill(masked.view(shape), 0.0)


class RespSTFPreTrainedModel(PreTrainedModel):
    config_class = RespSTFConfig
    base_model_prefix = "respstf"
    main_input_name = "input_features"

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, RespSTFModel):
            nn.init.trunc_normal_(module.positions, std=self.config.initializer_range)

    def shipped_pipeline(self) -> tuple[str, type, str] | None:
        """``(task, pipeline class, Auto class it loads)`` of the pipeline a saved folder of this model names in
        ``custom_pipelines``, or None."""
        return None

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``, writing ``auto_map`` and the folder's pipeline (`shipped_pipeline`)
        under ``custom_pipelines`` so that ``pipeline(task, model=folder, trust_remote_code=True)`` runs where this
        package is not installed (the pipelines' code is copied with the model's, which imports it)."""
        if self._auto_class is not None:
            # Saving writes `auto_map` for the saved class only; a saved classifier also loads as its backbone
            # (AutoModel strips base_model_prefix), so map AutoModel too. An ensemble has no one backbone to load
            # (RespSTFModel refuses its config), and its config, copied from a member's, may map one: drop it. A head
            # class inherited from the parent's config (a detector trained from a classifier) would load a random head.
            auto_map = {name: value for name, value in (getattr(self.config, "auto_map", None) or {}).items()
                        if name in ("AutoConfig", "AutoModel")}
            if self.config.ensemble_size == 1:
                auto_map["AutoModel"] = f"{RespSTFModel.__module__.split('.')[-1]}.RespSTFModel"
            else:
                auto_map.pop("AutoModel", None)
            self.config.auto_map = auto_map
            # A pipeline inherited from the parent's config (a classifier trained from a detector) is not this one's.
            pipelines = {task: spec for task, spec in (getattr(self.config, "custom_pipelines", None) or {}).items()
                         if task not in ("audio-classification", DETECTION_PIPELINE_TASK)}
            if (shipped := self.shipped_pipeline()) is not None:
                task, pipeline_class, auto_class = shipped
                pipelines[task] = {"impl": f"{pipeline_class.__module__.rsplit('.', 1)[-1]}.{pipeline_class.__name__}",
                                   "pt": [auto_class], "tf": [], "type": "audio"}
            if pipelines:
                self.config.custom_pipelines = pipelines
            elif hasattr(self.config, "custom_pipelines"):
                del self.config.custom_pipelines
        return super().save_pretrained(save_directory, *args, **kwargs)


class RespSTFModel(RespSTFPreTrainedModel):
    """The backbone: scalogram -> frame embeddings ``(B, T', hidden_size)`` and a pooled embedding ``(B, hidden_size)``."""

    def __init__(self, config: RespSTFConfig):
        if config.ensemble_size != 1:
            raise ValueError(
                f"this config describes an ensemble of {config.ensemble_size} backbones, not one RespSTFModel: load it "
                "with AutoModelForAudioClassification (RespSTFForAudioClassification)."
            )
        super().__init__(config)
        self.stem = ConvNormAct(1, config.stem_channels, 3, stride=tuple(config.stem_stride))
        widths = [config.stem_channels, *config.stage_channels]
        self.stages = nn.ModuleList(
            InceptionStage(widths[i], widths[i + 1], config.stage_pool[i], config) for i in range(len(config.stage_channels))
        )
        self.focusing = SpatioTemporalFocusing(widths[-1], config.focus_reduction, config.temporal_focus_kernel,
                                               config.frequency_focus_frames)
        self.projection = nn.Linear(widths[-1], config.hidden_size)
        self.positions = nn.Parameter(torch.zeros(1, config.max_frames, config.hidden_size))
        self.layers = nn.ModuleList(AttentionLayer(config) for _ in range(config.num_attention_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size)
        self.pooling = AttentivePooling(config.hidden_size)
        self.time_stride = config.stem_stride[1]
        for _, time_pool in config.stage_pool:
            self.time_stride *= time_pool
        self.post_init()

    def frame_mask(self, attention_mask: torch.Tensor | None, n_frames: int) -> torch.Tensor | None:
        """Downsample an input-frame mask ``(B, T)`` to the backbone's frames ``(B, T')`` (any real frame counts)."""
        if attention_mask is None:
            return None
        pooled = F.max_pool1d(attention_mask[:, None].float(), self.time_stride, ceil_mode=True)[:, 0]
        return pooled[:, :n_frames] > 0

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """
        Args:
            input_features: ``(B, 1, n_scales, T)`` scalograms from ``RespSTFFeatureExtractor`` (cast to the
                model's dtype, so float32 features feed a bfloat16 model).
            attention_mask: ``(B, T)``, 1 for frames of real audio, 0 for padding; every row needs a 1.
                Padding still reaches the convolutions at a clip's edge, so a padded clip's outputs are
                close to, not identical with, its unpadded ones.

        Returns:
            ``BaseModelOutputWithPooling`` with ``last_hidden_state`` ``(B, T', hidden_size)``, ``pooler_output``
            ``(B, hidden_size)`` and, when asked, per-layer attentions ``(B, heads, T', T')`` and hidden states.
        """
        if input_features.ndim != 4 or input_features.shape[1] != 1 or input_features.shape[2] != self.config.n_scales:
            raise ValueError(
                f"input_features must have shape (batch, 1, {self.config.n_scales}, frames), got {tuple(input_features.shape)}."
            )
        if attention_mask is not None:
            expected = (input_features.shape[0], input_features.shape[-1])
            if tuple(attention_mask.shape) != expected:
                raise ValueError(
                    f"attention_mask must have shape (batch, frames) = {expected} to match input_features "
                    f"{tuple(input_features.shape)}, got {tuple(attention_mask.shape)}."
                )
            # A data-dependent check: skipped while torch.compile / torch.export trace the model, as they cannot branch on values.
            if not torch.compiler.is_compiling() and not attention_mask.bool().any(dim=1).all():
                raise ValueError("attention_mask has an all-zero row: every example needs at least one frame of real audio (1).")
        # From the input's length, before the CNN runs (a 1-hour input ran it whole, 2.6 GB and 17 s, to be refused
        # after): the stem's stride and every stage's pooling round up, so T frames become ceil(T / time_stride)
        # (integer division: exact, and it traces under torch.compile/export with a symbolic length).
        frames = -(-input_features.shape[-1] // self.time_stride)
        if frames > self.config.max_frames:
            raise ValueError(
                f"input has {frames} frames after pooling but max_frames={self.config.max_frames}: use shorter clips "
                "(e.g. feature extractor truncation=True) or a config with a larger max_frames."
            )
        input_features = input_features.to(self.dtype)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        if self.training:
            input_features = spec_augment(input_features, self.config.frequency_masks, self.config.frequency_mask_width, dim=2)
            input_features = spec_augment(input_features, self.config.time_masks, self.config.time_mask_width, dim=3)
        hidden = self.stem(input_features)
        for stage in self.stages:
            hidden = stage(hidden)
        mask = self.frame_mask(attention_mask, hidden.shape[-1])
        focused, _ = self.focusing(hidden, mask)
        hidden = self.projection(focused.transpose(1, 2)) + self.positions[:, :frames]
        padding_mask = None if mask is None else ~mask
        all_hidden, all_attentions = [hidden], []
        for layer in self.layers:
            hidden, weights = layer(hidden, padding_mask, need_weights=bool(output_attentions))
            all_hidden.append(hidden)
            all_attentions.append(weights)
        hidden = self.final_norm(hidden)
        pooled = self.pooling(hidden, mask)
        output = BaseModelOutputWithPooling(
            last_hidden_state=hidden,
            pooler_output=pooled,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float, weight: torch.Tensor | None) -> torch.Tensor:
    """Multiclass focal loss ``-(1 - p_y)^gamma log p_y`` (optionally class-weighted), mean over samples."""
    log_probs = logits.log_softmax(dim=-1)
    picked = log_probs.gather(1, labels[:, None]).squeeze(1)
    loss = -((1 - picked.exp()) ** gamma) * picked
    if weight is not None:
        loss = loss * weight[labels]
        return loss.sum() / weight[labels].sum()
    return loss.mean()


def add_member_parts(module: nn.Module, config: RespSTFConfig) -> None:
    """Give ``module`` one model's parts: ``respstf`` (the backbone), ``dropout``, ``classifier`` and
    ``frame_classifier`` (None without frame labels). A single model holds them itself, so its parameters keep the
    names of every existing checkpoint (``respstf.*``, ``classifier.*``, ``frame_classifier.*``)."""
    module.respstf = RespSTFModel(config)
    module.dropout = nn.Dropout(config.classifier_dropout)
    module.classifier = nn.Linear(config.hidden_size, config.num_labels)
    module.frame_classifier = nn.Linear(config.hidden_size, config.num_frame_labels) if config.num_frame_labels else None


def member_logits(member: nn.Module, input_features: torch.Tensor, attention_mask: torch.Tensor | None,
                  **backbone_kwargs) -> tuple[torch.Tensor, BaseModelOutputWithPooling]:
    """One model's clip logits ``(B, num_labels)`` and backbone outputs; ``member`` holds `add_member_parts`'s parts."""
    outputs = member.respstf(input_features, attention_mask, return_dict=True, **backbone_kwargs)
    return member.classifier(member.dropout(outputs.pooler_output)), outputs


class RespSTFMember(nn.Module):
    """One member of an ensemble; its parameter names are a single model's, so that model's state dict loads as is."""

    def __init__(self, config: RespSTFConfig):
        super().__init__()
        add_member_parts(self, config)


def settings_differences(reference: dict, other: dict, ignored: Sequence[str] = ()) -> str:
    """``"key=other's (reference: reference's), ..."`` for every setting that differs; empty when none does."""
    keys = sorted(key for key in reference.keys() | other.keys() if key not in ignored and reference.get(key) != other.get(key))
    return ", ".join(f"{key}={other.get(key)!r} (reference: {reference.get(key)!r})" for key in keys)


# Config entries that say where or how a model was saved, not what it computes (custom_pipelines: which pipeline
# save_pretrained shipped with it; runs saved before it did have none).
_PROVENANCE_KEYS = ("_name_or_path", "transformers_version", "architectures", "auto_map", "custom_pipelines", "dtype",
                    "torch_dtype")


def frame_classification_loss(frame_logits: torch.Tensor, frame_labels: torch.Tensor, time_stride: int,
                              class_weights: Sequence[float] | None = None) -> torch.Tensor:
    """Cross-entropy of backbone-frame logits ``(B, T', C)`` against input-frame labels ``(B, T)`` (-100: no label):
    each backbone frame answers for the input frame at its centre (NaN when no frame has a label); optionally
    weighted per class by ``class_weights`` ``(C,)`` (a training choice, given by the trainer)."""
    weight = None if class_weights is None else frame_logits.new_tensor(class_weights)
    if weight is not None and len(weight) != frame_logits.shape[-1]:
        raise ValueError(f"class_weights has {len(weight)} entries but the frame head gives {frame_logits.shape[-1]} "
                         "logits: give one weight per class (or None).")
    targets = output_frame_labels(frame_labels, frame_logits.shape[1], time_stride)
    return F.cross_entropy(frame_logits.reshape(-1, frame_logits.shape[-1]), targets.reshape(-1).long(), weight=weight,
                           ignore_index=-100)


def output_frame_labels(frame_labels: torch.Tensor, frames: int, time_stride: int) -> torch.Tensor:
    """The labels ``(B, frames)`` that ``frames`` backbone frames answer for: of input-frame labels ``frame_labels``
    ``(B, T)``, the one at each backbone frame's centre."""
    centres = ((torch.arange(frames, device=frame_labels.device) + 0.5) * time_stride).long()
    return frame_labels[:, centres.clamp(max=frame_labels.shape[1] - 1)]


class RespSTFForAudioClassification(RespSTFPreTrainedModel):
    """RespSTF with a classification head (and an optional frame-level head for event supervision), or an ensemble
    of ``config.ensemble_size`` such models (`from_members`) averaging their probabilities."""

    # The loss is a per-batch mean. Trainer would otherwise see ``**kwargs`` in `forward`, take the loss for a sum
    # over ``num_items_in_batch`` and scale it by the number of processes (every loss and gradient doubled under
    # 2 processes) and leave it undivided across gradient accumulation steps.
    accepts_loss_kwargs = False

    def __init__(self, config: RespSTFConfig):
        super().__init__(config)
        if config.ensemble_size == 1:
            add_member_parts(self, config)
        else:
            # Each member's backbone is one model: its config says so (RespSTFModel refuses an ensemble's).
            member_config = copy.deepcopy(config)
            member_config.ensemble_size = 1
            self.members = nn.ModuleList(RespSTFMember(member_config) for _ in range(config.ensemble_size))
        self.post_init()

    def shipped_pipeline(self) -> tuple[str, type, str]:
        """``audio-classification``, through `RespSTFAudioClassificationPipeline` (files read at their own rate)."""
        return "audio-classification", RespSTFAudioClassificationPipeline, "AutoModelForAudioClassification"

    @classmethod
    def from_members(cls, models: Sequence["RespSTFForAudioClassification"]) -> "RespSTFForAudioClassification":
        """An ensemble (``ensemble_size = len(models)``, in eval mode) of trained single models, their weights copied:
        its ``save_pretrained`` folder holds every member and loads with one ``from_pretrained``.

        The config is the first model's; every model must have the same one (architecture, labels, task, recipe and
        ``logit_adjustment``, applied once to the averaged probabilities) up to where and how it was saved.

        Raises:
            ValueError: fewer than two models, or one that is an ensemble or another config, naming it.
        """
        if len(models) < 2:
            raise ValueError(f"an ensemble needs at least 2 trained models, got {len(models)}.")
        for index, model in enumerate(models):
            if not isinstance(model, RespSTFForAudioClassification):
                raise ValueError(f"member {index} is a {type(model).__name__}, not a RespSTFForAudioClassification.")
            if model.config.ensemble_size != 1:
                raise ValueError(f"member {index} is an ensemble of {model.config.ensemble_size}: ensembles do not nest, "
                                 "give its members' models.")
        reference = models[0].config.to_dict()
        for index, model in enumerate(models):
            name = f"member {index} ({model.config._name_or_path or 'not loaded from a folder'})"
            differences = settings_differences(reference, model.config.to_dict(), _PROVENANCE_KEYS)
            if differences:
                raise ValueError(f"{name} has another config than member 0: {differences}.")
        config = copy.deepcopy(models[0].config)
        config.ensemble_size = len(models)
        ensemble = cls(config)
        for member, model in zip(ensemble.members, models):
            member.load_state_dict(model.state_dict())
        return ensemble.eval()

    def member(self, index: int) -> "RespSTFForAudioClassification":
        """Member ``index`` of an ensemble as the single model it was trained as (the inverse of `from_members`): its
        weights copied, the ensemble's config with ``ensemble_size`` 1 and without ``logit_adjustment`` (a decision
        chosen for the averaged probabilities, not for one member's), on the ensemble's device and dtype.

        Raises:
            ValueError: this model is not an ensemble, or has no member ``index`` (naming the folder it was loaded from).
        """
        size, name = self.config.ensemble_size, self.config._name_or_path or "this model"
        if size == 1:
            raise ValueError(f"{name} holds one model, not an ensemble: use it as it is.")
        if not 0 <= index < size:
            raise ValueError(f"{name} is an ensemble of {size} models: its members are 0 to {size - 1}, not {index}.")
        config = copy.deepcopy(self.config)
        config.ensemble_size, config.logit_adjustment = 1, None
        single = type(self)(config)
        single.load_state_dict(self.members[index].state_dict())
        return single.to(device=self.device, dtype=self.dtype).train(self.training)

    def weighted_loss(self, logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """The clip-level loss (``config.loss``) of ``logits`` ``(B, num_labels)`` against ``labels`` ``(B,)``,
        optionally weighted per class by ``class_weights`` ``(num_labels,)`` (a training choice, given by the trainer)."""
        labels = labels.long()
        weight = None if class_weights is None else logits.new_tensor(class_weights)
        if weight is not None and len(weight) != logits.shape[-1]:
            raise ValueError(
                f"class_weights has {len(weight)} entries but the classifier gives {logits.shape[-1]} logits: "
                "give one weight per class (or None)."
            )
        if self.config.loss == "focal":
            return focal_loss(logits, labels, self.config.focal_gamma, weight)
        return F.cross_entropy(logits, labels, weight=weight, label_smoothing=self.config.label_smoothing)

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        frame_labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        """
        Args:
            input_features: ``(B, 1, n_scales, T)`` scalograms.
            attention_mask: ``(B, T)`` frame mask (1 = real audio).
            labels: ``(B,)`` class ids; adds the clip loss.
            frame_labels: ``(B, T)`` per-input-frame class ids for the frame head (-100 = ignore);
                needs ``config.num_frame_labels > 0``.

        Returns:
            ``SequenceClassifierOutput`` with ``logits`` ``(B, num_labels)`` and ``loss`` (of these logits) when labels
            are given. An ensemble's logits are the log of its members' mean probabilities. Not in training, the
            logits carry ``config.logit_adjustment`` when set.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if self.config.ensemble_size == 1:
            logits, outputs = member_logits(
                self, input_features, attention_mask, output_attentions=output_attentions, output_hidden_states=output_hidden_states
            )
        else:
            asked = [name for name, value in (("frame_labels", frame_labels is not None), ("output_attentions", output_attentions),
                                              ("output_hidden_states", output_hidden_states)) if value]
            if asked:
                raise ValueError(f"an ensemble takes no {', '.join(asked)}: they belong to one backbone (model.members[i].respstf).")
            stacked = torch.stack([member_logits(member, input_features, attention_mask)[0] for member in self.members])
            # (M, B, C) -> (B, C): softmax of the log mean probability is the mean probability.
            logits = stacked.log_softmax(dim=-1).logsumexp(dim=0) - math.log(len(self.members))
            outputs = BaseModelOutputWithPooling()  # no hidden states or attentions to return
        if not self.training and self.config.logit_adjustment is not None:
            self.config.check_logit_adjustment(logits.shape[-1])
            logits = logits + logits.new_tensor(self.config.logit_adjustment)
        loss = None
        if labels is not None:
            loss = self.weighted_loss(logits, labels)
        if frame_labels is not None:
            if self.frame_classifier is None:
                raise ValueError("frame_labels were given but config.num_frame_labels is 0 (the model has no frame head).")
            frame_logits = self.frame_classifier(outputs.last_hidden_state)  # (B, T', num_frame_labels)
            frame_loss = frame_classification_loss(frame_logits, frame_labels, self.respstf.time_stride)
            if torch.isfinite(frame_loss):
                loss = frame_loss * self.config.frame_loss_weight + (loss if loss is not None else 0)
        output = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)
        return output if return_dict else output.to_tuple()


class RespSTFForAudioFrameClassification(RespSTFPreTrainedModel):
    """RespSTF with a per-frame head: which class of sound (``config.id2label``) each moment of an input holds.

    Each output frame covers ``frame_stride`` input frames of the feature extractor (``time_stride`` of the backbone:
    256 ms for 16 ms extractor frames with the default config). An input of any length goes through: one longer than
    the backbone's ``max_frames`` is read in overlapping chunks of ``max_frames`` output frames, each output frame taken
    from the chunk it is most central in, so memory is bounded by one chunk however long the recording.
    """

    accepts_loss_kwargs = False  # a per-batch mean, as RespSTFForAudioClassification's

    def __init__(self, config: RespSTFConfig):
        if config.ensemble_size != 1:
            raise ValueError("RespSTFForAudioFrameClassification is one model: an ensemble config "
                             f"(ensemble_size={config.ensemble_size}) loads with RespSTFForAudioClassification.")
        super().__init__(config)
        self.respstf = RespSTFModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def shipped_pipeline(self) -> tuple[str, type, str] | None:
        """A detector (``config.detection`` set) ships the ``respiratory-event-detection`` pipeline."""
        if self.config.detection is None:
            return None
        return DETECTION_PIPELINE_TASK, RespiratoryEventDetectionPipeline, "AutoModelForAudioFrameClassification"

    @property
    def frame_stride(self) -> int:
        """Input (feature extractor) frames per output frame."""
        return self.respstf.time_stride

    def frame_states(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The backbone's frame embeddings ``(B, ceil(T / frame_stride), hidden_size)``, in chunks of ``max_frames`` output
        frames, half overlapping, when ``T`` is longer than the backbone reads at once."""
        size, stride = self.config.max_frames, self.frame_stride
        frames = -(-input_features.shape[-1] // stride)
        if frames <= size:
            return self.respstf(input_features, attention_mask, return_dict=True).last_hidden_state
        firsts = list(range(0, frames - size, size // 2)) + [frames - size]  # each chunk's first output frame
        # Chunk k answers from the middle of its overlap with chunk k-1 to the middle of its overlap with chunk k+1.
        bounds = [0] + [(later + earlier + size) // 2 for earlier, later in zip(firsts, firsts[1:])] + [frames]
        states = input_features.new_zeros(input_features.shape[0], frames, self.config.hidden_size)
        for first, keep_from, keep_to in zip(firsts, bounds, bounds[1:]):
            window = slice(first * stride, (first + size) * stride)
            mask = None if attention_mask is None else attention_mask[:, window]
            hidden = self.respstf(input_features[..., window], mask, return_dict=True).last_hidden_state
            states[:, keep_from:keep_to] = hidden[:, keep_from - first:keep_to - first]
        return states

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput | tuple:
        """
        Args:
            input_features: ``(B, 1, n_scales, T)`` scalograms, any ``T``.
            attention_mask: ``(B, T)`` frame mask (1 = real audio).
            labels: ``(B, T)`` class ids per input frame (-100: no label); adds the frame loss.

        Returns:
            ``TokenClassifierOutput`` with ``logits`` ``(B, ceil(T / frame_stride), num_labels)`` and ``loss`` when labels
            are given.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        logits = self.classifier(self.frame_states(input_features.to(self.dtype), attention_mask))
        loss = None if labels is None else self.weighted_loss(logits, labels)
        output = TokenClassifierOutput(loss=loss, logits=logits)
        return output if return_dict else output.to_tuple()

    def weighted_loss(self, logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """The frame loss of ``logits`` ``(B, T', num_labels)`` against input-frame ``labels`` ``(B, T)``, optionally
        weighted per class by ``class_weights`` ``(num_labels,)`` (a training choice, given by the trainer)."""
        return frame_classification_loss(logits, labels, self.frame_stride, class_weights)
