"""Feature extractor for RespSTF: waveform(s) -> log-magnitude complex-Morlet CWT scalogram.

Output ``input_features`` has shape ``(batch, 1, n_scales, n_frames)``: one channel, rows are wavelet
scales from ``fmax`` (row 0) down to ``fmin`` Hz, columns are frames of ``hop_length`` samples.
Every setting lives in ``preprocessor_config.json`` so a checkpoint reproduces its own front end.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from scipy.signal import resample_poly
from transformers import BatchFeature, SequenceFeatureExtractor
from transformers.utils import PaddingStrategy

from .audio_checks import SHORTEST_RECORDING_SECONDS, SHORTEST_SOUND_SECONDS, band_warnings, check_audio, check_samples
from .cwt import PooledMorletCWT, morlet_scales

_PADDING_MODES = ("repeat", "zero")
_NORMALIZATIONS = ("per_recording", "none")
# A multichannel clip has at most this many channels (stethoscopes record 1 or 2).
_MAX_CHANNELS = 8
# Label of padded frames in `frame_labels` (ignored by the model's frame loss).
_IGNORED_FRAME_LABEL = -100


class RespSTFFeatureExtractor(SequenceFeatureExtractor):
    r"""Turns respiratory recordings into CWT scalograms for :class:`RespSTFForAudioClassification`.

    Args:
        sampling_rate: the model's rate in Hz; inputs at other rates are resampled to it.
        n_scales: number of wavelet scales (scalogram rows), log-spaced in frequency.
        fmin, fmax: lowest and highest centre frequencies in Hz (``fmax`` below Nyquist).
        hop_length: samples per output frame.
        n_frames: frames per example unless ``truncation=False``; the clip length is
            ``n_frames * hop_length / sampling_rate`` seconds.
        wavelet_bandwidth, wavelet_center_frequency: the complex Morlet ``B`` and ``C`` (pywt ``cmorB-C``).
        padding_mode: ``"repeat"`` tiles a short clip to the full length (the attention mask is then all
            ones: the tiles are real signal); ``"zero"`` pads with silence and masks the padded frames.
        normalization: ``"per_recording"`` standardises each log-scalogram over its unpadded frames, which
            removes a change of gain except where magnitudes come near ``log_floor``; ``"none"`` keeps the
            raw log magnitudes.
        log_floor: added to magnitudes before the log, so silence stays finite. It is absolute: at SPRSound's
            levels (RMS 0.003-0.018 of full scale, 5-95 %) the quietest bins of the top band are near it, so a
            recording far quieter (or louder) than that gives somewhat different features; scale such input
            towards SPRSound's level.
        oversampling, max_points_per_frame, chunk_frames: accuracy/speed/memory knobs of the CWT.
    """

    model_input_names = ["input_features", "attention_mask"]
    # Inputs shorter than this are mostly repeats of themselves (or padding) and get a warning (audio_checks).
    SHORTEST_SOUND_SECONDS = SHORTEST_SOUND_SECONDS

    def __init__(
        self,
        sampling_rate: int = 8000,
        n_scales: int = 64,
        fmin: float = 50.0,
        fmax: float = 3900.0,
        hop_length: int = 128,
        n_frames: int = 192,
        wavelet_bandwidth: float = 1.5,
        wavelet_center_frequency: float = 1.0,
        padding_mode: str = "repeat",
        normalization: str = "per_recording",
        log_floor: float = 1e-6,
        oversampling: int = 4,
        max_points_per_frame: int = 32,
        chunk_frames: int = 1024,
        padding_value: float = 0.0,
        return_attention_mask: bool = True,
        **kwargs,
    ):
        kwargs.pop("feature_size", None)  # derived from n_scales (present in saved configs)
        super().__init__(
            feature_size=n_scales,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        if not 0 < fmin < fmax:
            raise ValueError(f"fmin must be positive and below fmax, got fmin={fmin}, fmax={fmax}.")
        if fmax >= sampling_rate / 2:
            raise ValueError(f"fmax={fmax} Hz must be below the Nyquist frequency {sampling_rate / 2} Hz.")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}.")
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}.")
        for name, value in (("n_scales", n_scales), ("hop_length", hop_length), ("n_frames", n_frames)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.n_scales = int(n_scales)
        self.fmin = float(fmin)
        self.fmax = float(fmax)
        self.hop_length = int(hop_length)
        self.n_frames = int(n_frames)
        self.wavelet_bandwidth = float(wavelet_bandwidth)
        self.wavelet_center_frequency = float(wavelet_center_frequency)
        self.padding_mode = padding_mode
        self.normalization = normalization
        self.log_floor = float(log_floor)
        self.oversampling = int(oversampling)
        self.max_points_per_frame = int(max_points_per_frame)
        self.chunk_frames = int(chunk_frames)
        self._cwt = PooledMorletCWT(
            sampling_rate,
            morlet_scales(sampling_rate, self.n_scales, self.fmin, self.fmax, self.wavelet_center_frequency),
            self.hop_length,
            bandwidth=self.wavelet_bandwidth,
            center_frequency=self.wavelet_center_frequency,
            chunk_frames=self.chunk_frames,
            oversampling=self.oversampling,
            max_points_per_frame=self.max_points_per_frame,
        )

    # -- what the rows and columns mean (used by plots and the demo) --------------------------
    @property
    def frequencies(self) -> np.ndarray:
        """Centre frequency in Hz of each scalogram row, ``(n_scales,)``, highest first."""
        return self.wavelet_center_frequency * self.sampling_rate / self._cwt.scales.numpy()

    @property
    def frame_seconds(self) -> float:
        return self.hop_length / self.sampling_rate

    @property
    def clip_seconds(self) -> float:
        """Length of the clip every example is fitted to unless ``truncation=False``."""
        return self.n_frames * self.frame_seconds

    @property
    def min_samples(self) -> int:
        """Shortest accepted input (model rate): the support of the smallest (highest-frequency) wavelet."""
        smallest_scale = float(self._cwt.scales.min())
        return math.ceil(2 * smallest_scale * math.sqrt(self.wavelet_bandwidth * math.log(1e4)))

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("_cwt", None)
        return output

    # -- input checking -------------------------------------------------------------------------
    def _check_input(self, array: np.ndarray, sampling_rate: int, name: str) -> None:
        """Refuse an input with nothing to read (`check_audio`); warn about one that holds too little for a model to
        hear, or is clipped (a model still answers for it)."""
        # Zero padding is masked, so the model reads only the input's own frames: too few below a crackle's context.
        # Repeats are real signal, so a repeated input is only too short below the shortest sound of the data.
        shortest = self.SHORTEST_SOUND_SECONDS if self.padding_mode == "repeat" else SHORTEST_RECORDING_SECONDS
        filler = "repeats of it" if self.padding_mode == "repeat" else "padding"
        for message in check_audio(array, sampling_rate, name, refuse_silence=False,
                                   shortest_seconds=shortest, padding=filler):
            warnings.warn(message, UserWarning, stacklevel=3)

    def _to_mono_float(self, waveform: Any, where: str) -> np.ndarray:
        if isinstance(waveform, torch.Tensor):
            # numpy has no bfloat16, and every float becomes float32 below anyway.
            waveform = waveform.detach().cpu()
            waveform = (waveform.float() if waveform.is_floating_point() else waveform).numpy()
        array = np.asarray(waveform)
        if array.dtype == object or array.dtype.kind not in "iuf":
            raise ValueError(f"{where}: expected a numeric waveform (float or int8/int16/int32 PCM), got dtype {array.dtype}.")
        if array.ndim not in (1, 2):
            raise ValueError(f"{where}: expected a 1-D waveform (or a 2-D stereo clip), got shape {array.shape}.")
        check_samples(array, where, self.min_samples)  # before the downmix, which would turn (0, 2) into two NaNs
        if array.dtype.kind == "u":
            raise ValueError(f"{where}: unsigned integer audio ({array.dtype}) is not supported; convert to float or int16.")
        if array.dtype == np.int64:
            raise ValueError(f"{where}: int64 samples (e.g. np.array of Python ints) have no audio bit depth to scale "
                             "by; cast to int16 (16-bit PCM) or int32, or give float samples in [-1, 1].")
        if array.dtype.kind == "i":
            # Integer PCM: scale to [-1, 1] by its bit depth (int16 -> 32768).
            array = array.astype(np.float32) / float(-np.iinfo(array.dtype).min)
        if array.ndim == 2:
            # One clip with channels: downmix along the short axis (frames x channels or channels x frames).
            channel_axis = int(np.argmin(array.shape))
            if array.shape[channel_axis] > _MAX_CHANNELS:
                raise ValueError(
                    f"{where}: a 2-D clip must be (samples, channels) or (channels, samples) with at most {_MAX_CHANNELS} channels, "
                    f"got shape {array.shape}. Pass a batch as a list of 1-D arrays."
                )
            array = array.mean(axis=channel_axis)
        return array.astype(np.float32, copy=False)

    def _is_multichannel_clip(self, shape: tuple[int, ...]) -> bool:
        """Whether a bare 2-D array is one clip ``(n_samples, channels)``, the layout ``soundfile.read`` gives
        (at most ``_MAX_CHANNELS`` channels, at least ``min_samples`` samples), not a batch ``(batch, n_samples)``."""
        return shape[1] <= _MAX_CHANNELS and shape[0] >= self.min_samples

    @property
    def _layout_rule(self) -> str:
        return (
            f"a 2-D array is one multichannel clip (n_samples, channels) when it has at most {_MAX_CHANNELS} columns "
            f"and at least {self.min_samples} rows (soundfile's layout), and otherwise a batch (batch, n_samples); "
            "pass a list of clips to say which"
        )

    def _resample(self, array: np.ndarray, sampling_rate: int) -> np.ndarray:
        if sampling_rate == self.sampling_rate:
            return array
        ratio = Fraction(self.sampling_rate, int(sampling_rate))
        return resample_poly(array, ratio.numerator, ratio.denominator).astype(np.float32)

    def crop_start(self, n_input_samples: int) -> int:
        """First sample (at the model rate) kept when an input of ``n_input_samples`` is fitted to the clip.

        Longer inputs are centre-cropped; shorter ones start at 0. Frame-level targets (training) use
        this to line up with what the model sees.
        """
        return max(0, n_input_samples - self.n_frames * self.hop_length) // 2

    def _fit_length(self, array: np.ndarray, n_samples: int) -> tuple[np.ndarray, int]:
        """Crop (centred) or pad to ``n_samples``; returns the clip and its count of real samples."""
        if len(array) >= n_samples:
            start = self.crop_start(len(array))
            return array[start : start + n_samples], n_samples
        if self.padding_mode == "repeat":
            return np.resize(array, n_samples), n_samples
        return np.pad(array, (0, n_samples - len(array)), constant_values=self.padding_value), len(array)

    # -- main entry -----------------------------------------------------------------------------
    def __call__(
        self,
        raw_speech: np.ndarray | list | torch.Tensor,
        sampling_rate: int | None = None,
        truncation: bool | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        device: str | torch.device | None = None,
        input_names: Sequence[str] | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Compute scalograms.

        Args:
            raw_speech: one waveform or a batch: a list of waveforms, or a 2-D array/tensor of shape
                ``(batch, n_samples)``. A waveform is 1-D, or 2-D multichannel (downmixed): inside a list
                either ``(n_samples, channels)`` or ``(channels, n_samples)``; as a bare array only
                ``(n_samples, channels)`` (what ``soundfile.read`` returns) with at most 8 channels and
                at least ``min_samples`` samples. Float in [-1, 1] or integer PCM.
            sampling_rate: rate of ``raw_speech`` in Hz; resampled to ``self.sampling_rate``.
            truncation: ``True`` fits every clip to ``n_frames`` frames (centre crop or pad);
                ``False`` keeps each clip's length and zero-pads the batch to the longest (use it
                for long recordings: memory stays bounded by ``chunk_frames``; a clip shorter than
                ``n_frames`` is then neither repeated nor padded to it as in training, so give short
                inputs with the default). ``None`` (the
                default, what ``pipeline`` uses) is ``True`` plus a warning when an input is longer
                than the clip, so a cropped recording never goes unnoticed.
            device: where the CWT runs (``"cuda"`` for GPU); outputs stay there with ``return_tensors="pt"``.
            input_names: how errors and warnings name each input (a file name; default ``"audio input <i>"``).

        Returns:
            ``BatchFeature`` with ``input_features`` ``(batch, 1, n_scales, frames)`` and, unless
            disabled, ``attention_mask`` ``(batch, frames)`` (1 = frame of real audio).
        """
        if sampling_rate is None:
            warnings.warn(
                f"It is strongly recommended to pass the `sampling_rate` argument to {type(self).__name__}; "
                f"assuming {self.sampling_rate} Hz. Failing to do so can result in silent errors.",
                UserWarning,
            )
            sampling_rate = self.sampling_rate
        if int(sampling_rate) != sampling_rate or sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be a positive integer (Hz), got {sampling_rate!r}.")

        is_batched = isinstance(raw_speech, (list, tuple)) and len(raw_speech) > 0 and not np.isscalar(raw_speech[0])
        from_batch_array = False
        if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
            if raw_speech.ndim > 2:
                raise ValueError(
                    f"audio input must be 1-D (one clip) or 2-D (batch, n_samples) or (n_samples, channels), got shape "
                    f"{tuple(raw_speech.shape)}: {self._layout_rule}."
                )
            from_batch_array = is_batched = raw_speech.ndim == 2 and not self._is_multichannel_clip(raw_speech.shape)
        clips = list(raw_speech) if is_batched else [raw_speech]
        if not clips:
            raise ValueError("audio input is an empty batch: expected at least one waveform.")

        if isinstance(input_names, str):
            raise ValueError(f"input_names must be a list of names, one per input, got the string {input_names!r}.")
        names = [f"audio input {index}" for index in range(len(clips))] if input_names is None else list(input_names)
        if len(names) != len(clips):
            raise ValueError(f"input_names names {len(names)} inputs, the call gives {len(clips)}: one name per input.")
        arrays = []
        for name, clip in zip(names, clips):
            mono = self._to_mono_float(clip, name)
            # Before resampling: its ripple hides a constant, and a rate refused here is not worth resampling.
            self._check_input(mono, int(sampling_rate), name)
            array = self._resample(mono, int(sampling_rate))
            if len(array) < self.min_samples:
                raise ValueError(
                    f"{name} has {len(array)} samples at {self.sampling_rate} Hz: expected at least "
                    f"{self.min_samples} (the support of the smallest wavelet)."
                    + (f" It came from a 2-D array of shape {tuple(raw_speech.shape)}: {self._layout_rule}."
                       if from_batch_array else "")
                )
            arrays.append(array)
        # Once per call, not per input: every input of a call has this rate.
        band_name = names[0] if input_names is not None and len(names) == 1 else "audio input"
        for message in band_warnings(int(sampling_rate), band_name, (self.fmin, self.fmax), self.sampling_rate):
            warnings.warn(message, UserWarning, stacklevel=2)

        fit_to_clip = truncation is None or truncation
        longest = max(len(a) for a in arrays)
        target = self.n_frames * self.hop_length if fit_to_clip else longest
        target = math.ceil(target / self.hop_length) * self.hop_length
        if truncation is None and longest > target:
            warnings.warn(
                f"An audio input longer than this feature extractor's {self.clip_seconds:.2f} s clip was centre-cropped "
                f"to it: the model sees only its middle {self.clip_seconds:.2f} s. Pass truncation=False to keep whole "
                "inputs, give shorter segments (an event model classifies one event), or pass truncation=True to crop "
                "without this warning.",
                UserWarning,
                stacklevel=2,
            )
        fitted, lengths = [], []
        for array in arrays:
            if fit_to_clip:
                clip, real = self._fit_length(array, target)
            else:
                clip, real = np.pad(array, (0, target - len(array)), constant_values=self.padding_value), len(array)
            fitted.append(clip)
            lengths.append(real)

        waveforms = torch.from_numpy(np.stack(fitted)).to(device or "cpu")
        with torch.no_grad():
            magnitudes = self._cwt(waveforms)  # (batch, n_scales, frames)
        features = torch.log(magnitudes + self.log_floor)
        frames = features.shape[-1]
        valid = torch.tensor([math.ceil(n / self.hop_length) for n in lengths], device=features.device)
        mask = (torch.arange(frames, device=features.device)[None, :] < valid[:, None]).to(torch.int32)
        if self.normalization == "per_recording":
            weights = mask[:, None, :].to(features.dtype)
            count = weights.sum(dim=(1, 2), keepdim=True) * self.n_scales
            mean = (features * weights).sum(dim=(1, 2), keepdim=True) / count
            var = (((features - mean) * weights) ** 2).sum(dim=(1, 2), keepdim=True) / count
            features = (features - mean) / torch.sqrt(var + 1e-5) * weights
        data = {"input_features": features[:, None]}
        if return_attention_mask if return_attention_mask is not None else self.return_attention_mask:
            data["attention_mask"] = mask
        if return_tensors != "pt":
            data = {key: value.cpu().numpy() for key, value in data.items()}
        return BatchFeature(data, tensor_type=return_tensors if return_tensors != "pt" else None)

    # -- collation ------------------------------------------------------------------------------
    def pad(
        self,
        processed_features: list[dict[str, Any]] | dict[str, Any],
        padding: bool | str | PaddingStrategy = True,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """Collate examples of different lengths (e.g. ``truncation=False`` features stored by ``datasets.map``)
        into one batch; ``DataCollatorWithPadding(extractor)`` calls this.

        Args:
            processed_features: a list of examples (dicts) or a dict of per-example lists. Each example's
                ``input_features`` is ``(1, n_scales, frames)`` (array, tensor or nested list) and its optional
                ``attention_mask`` and ``frame_labels`` are ``(frames,)``; other fields (e.g. ``labels``) are
                stacked as they are.
            padding: ``True``/``"longest"`` pads to the longest example, ``"max_length"`` to ``max_length``
                frames, ``False``/``"do_not_pad"`` requires equal lengths.
            max_length: frames to pad to with ``padding="max_length"`` and to cut to with ``truncation=True``.
            pad_to_multiple_of: round the padded length up to a multiple of this many frames.

        Returns:
            ``BatchFeature`` with ``input_features`` ``(batch, 1, n_scales, frames)``, past each example's end
            the value the extractor gives padding (0, or ``log(log_floor)`` without normalisation),
            ``attention_mask`` ``(batch, frames)`` with 0
            there, ``frame_labels`` padded with -100 (ignored by the loss) and the other fields stacked.
        """
        if isinstance(processed_features, (list, tuple)):
            if not processed_features:
                raise ValueError("pad got no examples: expected a list of dicts with input_features.")
            processed_features = {key: [example[key] for example in processed_features] for key in processed_features[0].keys()}
        if "input_features" not in processed_features:
            raise ValueError(f"pad needs input_features in every example, got the fields {list(processed_features)}.")
        if isinstance(padding, bool):
            strategy = PaddingStrategy.LONGEST if padding else PaddingStrategy.DO_NOT_PAD
        else:
            strategy = PaddingStrategy(padding)
        if (strategy == PaddingStrategy.MAX_LENGTH or truncation) and max_length is None:
            raise ValueError("pad with padding='max_length' or truncation=True needs max_length (in frames).")

        features = []
        for index, example in enumerate(processed_features["input_features"]):
            example = example.detach().cpu().float().numpy() if isinstance(example, torch.Tensor) else np.asarray(example, np.float32)
            if example.ndim != 3 or example.shape[:2] != (1, self.n_scales):
                raise ValueError(
                    f"input_features of example {index} must have shape (1, {self.n_scales}, frames), got {example.shape}."
                )
            features.append(example[..., :max_length] if truncation else example)
        lengths = [example.shape[-1] for example in features]
        # The per-frame fields, (frames,) per example, and the value that pads each.
        pad_values = {"attention_mask": 0, "frame_labels": _IGNORED_FRAME_LABEL}
        frame_fields = {name: processed_features[name] for name in pad_values if name in processed_features}
        frame_fields.setdefault("attention_mask", [np.ones(n, np.int32) for n in lengths])
        for name, examples in frame_fields.items():
            frame_fields[name] = [np.asarray(example)[: n if truncation else None] for example, n in zip(examples, lengths)]
            for index, (example, n) in enumerate(zip(frame_fields[name], lengths)):
                if example.shape != (n,):
                    raise ValueError(f"{name} of example {index} must have shape ({n},) like its input_features, got {example.shape}.")

        if strategy == PaddingStrategy.DO_NOT_PAD:
            if len(set(lengths)) > 1:
                raise ValueError(f"pad with padding=False needs examples of equal length, got {sorted(set(lengths))} frames.")
            target = lengths[0]
        else:
            target = max_length if strategy == PaddingStrategy.MAX_LENGTH else max(lengths)
            if max(lengths) > target:
                raise ValueError(
                    f"an example has {max(lengths)} frames, more than max_length={target}: pass truncation=True to cut it."
                )
            if pad_to_multiple_of:
                target = math.ceil(target / pad_to_multiple_of) * pad_to_multiple_of

        # The value the extractor itself leaves past a clip's end: 0 after per-recording normalisation, else the log of silence.
        fill = 0.0 if self.normalization == "per_recording" else math.log(self.log_floor)
        data = {"input_features": np.stack([np.pad(f, ((0, 0), (0, 0), (0, target - f.shape[-1])), constant_values=fill)
                                            for f in features])}
        for name, examples in frame_fields.items():
            data[name] = np.stack([np.pad(e, (0, target - len(e)), constant_values=pad_values[name]) for e in examples])
        if not (return_attention_mask if return_attention_mask is not None else self.return_attention_mask):
            del data["attention_mask"]
        for name, examples in processed_features.items():
            if name not in frame_fields and name != "input_features":
                data[name] = np.stack([np.asarray(example) for example in examples])
        return BatchFeature(data, tensor_type=return_tensors)
