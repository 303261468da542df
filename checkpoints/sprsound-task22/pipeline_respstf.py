"""The checkpoints' pipelines: ``audio-classification`` for the task models and ``respiratory-event-detection`` (a
whole recording in, its adventitious events and record verdict out) for an event detector.

Hub custom code, shipped in every checkpoint's folder beside the model's code (its ``config.json`` names its pipeline
under ``custom_pipelines``), so it imports only this folder's files and third-party libraries. Both read a file the
same way (`AudioInput`): with soundfile at the file's own rate, so that the feature extractor's checks (rate, length,
band) apply to files as to arrays, with a warning when the file is cut short.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from typing import Any

import numpy as np
import torch
from transformers import AudioClassificationPipeline, Pipeline

from .audio_file_respstf import read_audio_file, soundfile
from .detection_respstf import detect, real_output_frames

TASK = "respiratory-event-detection"


class AudioInput:
    """How both pipelines turn an input into the feature extractor's arguments (a mixin of a ``Pipeline`` with a
    ``feature_extractor``).

    Inputs:

    * ``str`` or ``os.PathLike``: an audio file, read by `read_audio_file` (soundfile at the file's own rate, FFmpeg
      for other formats; a warning when the file holds less audio than its header announces or FFmpeg found it
      damaged). Without soundfile installed, decoded by FFmpeg at the model's rate (``transformers``' ``ffmpeg_read``,
      as the stock audio pipelines do), which cannot tell a file cut short.
    * ``bytes``: the content of an audio file, read likewise.
    * ``np.ndarray`` or ``torch.Tensor``: a waveform at the feature extractor's rate (``feature_extractor.
      sampling_rate``), 1-D, or 2-D multichannel (downmixed); float in [-1, 1] or integer PCM.
    * ``dict`` ``{"raw": waveform, "sampling_rate": rate}`` (or ``"array"`` for ``"raw"``, as ``datasets`` gives it):
      a waveform at any rate, resampled by the feature extractor (no torchaudio needed).
    * a ``torchcodec`` ``AudioDecoder`` (what ``datasets``' ``Audio`` column decodes to).

    The feature extractor checks the audio (empty, NaN/Inf, a rate below 2 kHz: a one-line ``ValueError`` naming the
    file; too short, clipped or a narrow band: a warning).
    """

    def _read_file(self, path: str, name: str) -> tuple[np.ndarray, int]:
        """A file's mono waveform and rate, its reader's warnings raised as ``UserWarning``."""
        if soundfile is None:
            from transformers.pipelines.audio_utils import ffmpeg_read

            with open(path, "rb") as handle:
                content = handle.read()
            try:
                return ffmpeg_read(content, self.feature_extractor.sampling_rate), self.feature_extractor.sampling_rate
            except ValueError as err:  # "Malformed soundfile", or no FFmpeg
                raise ValueError(f"{name}: not a readable audio file ({err}).") from None
        waveform, rate, problems = read_audio_file(path, name)
        for problem in problems:
            warnings.warn(problem, UserWarning, stacklevel=2)
        return waveform, rate

    def _waveform(self, inputs: Any) -> tuple[Any, int, str]:
        """The input's waveform (as given: the extractor checks it), its rate and how errors name it."""
        if isinstance(inputs, os.PathLike):
            inputs = os.fspath(inputs)
        if isinstance(inputs, str):
            if not os.path.isfile(inputs):
                raise ValueError(f"{inputs}: audio file not found.")
            return *self._read_file(inputs, inputs), inputs
        if isinstance(inputs, bytes):
            with tempfile.TemporaryDirectory() as folder:  # the reader checks a file's header against its size
                path = os.path.join(folder, "audio")
                with open(path, "wb") as handle:
                    handle.write(inputs)
                return *self._read_file(path, "the audio bytes"), "the audio bytes"
        decoder = getattr(getattr(sys.modules.get("torchcodec"), "decoders", None), "AudioDecoder", None)
        if decoder is not None and isinstance(inputs, decoder):
            samples = inputs.get_all_samples()
            return samples.data.mean(0), int(samples.sample_rate), "the audio input"
        if isinstance(inputs, dict):
            waveform = inputs.get("raw") if inputs.get("raw") is not None else inputs.get("array")
            if waveform is None or "sampling_rate" not in inputs:
                raise ValueError(f'a dict input needs "raw" (or "array"): the waveform, and "sampling_rate": its rate in '
                                 f"Hz; got the keys {sorted(map(str, inputs))}.")
            return waveform, inputs["sampling_rate"], "the audio input"
        if isinstance(inputs, (np.ndarray, torch.Tensor)):
            return inputs, self.feature_extractor.sampling_rate, "the audio input"
        raise TypeError(f"{type(self).__name__} takes a file path, the bytes of an audio file, a waveform (np.ndarray "
                        f"or torch.Tensor at {self.feature_extractor.sampling_rate} Hz) or a dict "
                        f'{{"raw": waveform, "sampling_rate": rate}}; got {type(inputs).__name__}.')

    def _features(self, inputs: Any, **extractor_kwargs) -> tuple[dict, float]:
        """The feature extractor's output for one input, and the input's length in seconds."""
        waveform, rate, name = self._waveform(inputs)
        # The number of samples before the extractor's checks: a 2-D (multichannel) waveform's longer axis.
        samples = max(np.shape(waveform)) if np.ndim(waveform) else 0
        device = self.device if self.device.type == "cuda" else None  # the CWT on the model's GPU
        # A list of one clip: a 2-D waveform is then one multichannel clip, never a batch.
        features = self.feature_extractor([waveform], sampling_rate=rate, return_tensors="pt", device=device,
                                          input_names=[name], **extractor_kwargs)
        return dict(features), samples / int(rate)


class RespSTFAudioClassificationPipeline(AudioInput, AudioClassificationPipeline):
    """transformers' ``audio-classification`` pipeline (same parameters, ``top_k`` and ``function_to_apply``, and the
    same answer: ``[{"label", "score"}, ...]``), reading its input as `AudioInput` says, so that a file cut short, a
    file sampled below the model's band and a ``{"raw", "sampling_rate"}`` at another rate are handled as the demo
    handles them (the stock pipeline decodes a file with FFmpeg at 8 kHz, which says none of this, and resamples
    a dict with torchaudio). An input longer than the model's clip is centre-cropped to it, with a warning, as
    with the stock pipeline.

    Loading: a task checkpoint's ``config.json`` names this class under ``custom_pipelines``, so
    ``pipeline("audio-classification", model=folder, trust_remote_code=True)`` runs it, with or without ``respstf``
    installed. Without ``trust_remote_code``, transformers refuses a task the folder names there (``ValueError``:
    "Loading this pipeline requires you to execute the code in the pipeline file ..."), even with ``respstf``
    installed; there, ``pipeline_class=RespSTFAudioClassificationPipeline`` runs it from the package.
    """

    def preprocess(self, inputs: Any) -> dict:
        if isinstance(inputs, str) and inputs.startswith(("http://", "https://")):
            return super().preprocess(inputs)  # downloaded and decoded as by the stock pipeline
        features, _ = self._features(inputs)
        dtype = getattr(self, "dtype", None) or getattr(self, "torch_dtype", None)
        if dtype is not None:  # floating point tensors only, as the stock pipeline casts
            features = {key: value.to(dtype) if value.is_floating_point() else value for key, value in features.items()}
        return features


class RespiratoryEventDetectionPipeline(AudioInput, Pipeline):
    """Where a recording holds which adventitious sound, and what the whole recording is, from an event detector
    (``RespSTFForAudioFrameClassification`` with ``config.detection``, e.g. trained by ``train.py --task events``).

    Example (an illustrative answer)::

        >>> from transformers import pipeline
        >>> detector = pipeline("respiratory-event-detection", model="path/to/detector", trust_remote_code=True)
        >>> detector("recording.wav")
        {'events': [{'label': 'Fine Crackle', 'start': 5.888, 'end': 6.912, 'score': 0.71}],
         'record_label': 'DAS', 'record_scores': {'Normal': 0.21, 'CAS': 0.02, 'DAS': 0.74, 'CAS & DAS': 0.02,
         'Poor Quality': 0.01}}

    The whole recording is read, however long (the feature extractor with ``truncation=False``; the model reads a long
    one in bounded chunks), and the model's frame probabilities (softmax over the recording's own frames) go to
    ``detection_respstf.detect`` with the detector's ``config.detection``: runs of frames whose most probable class is
    one event type become events, and the record verdict, Poor Quality included, is a decision over the whole
    recording.

    Inputs: one, or a list of them, of the kinds `AudioInput` takes (a file path at any rate, bytes, an array, a
    ``{"raw", "sampling_rate"}`` dict, a torchcodec decoder); each recording is its own forward pass, so
    ``batch_size`` stays 1.

    Parameters (at construction or per call):
        return_frame_scores: also return ``"frame_scores"``: ``{"frame_seconds": seconds per frame, "labels": the
            classes (``config.id2label`` order), "scores": [[probability per class] per frame]}``, frame ``i``
            covering ``[i * frame_seconds, (i + 1) * frame_seconds)``.

    Returns:
        ``{"events": [{"label", "start", "end", "score"}, ...] (seconds, sorted by start, inside the recording),
        "record_label": one of config.detection["record_labels"] (Normal / CAS / DAS / CAS & DAS / Poor Quality),
        "record_scores": {record class: probability}}``.

    Loading: ``pipeline("respiratory-event-detection", model=folder, trust_remote_code=True)`` runs this file from the
    detector's folder with stock transformers, with or without ``respstf`` installed. With ``respstf`` installed and
    imported, the task is registered (``respstf.modeling``), yet ``pipeline("respiratory-event-detection",
    model=folder)`` *without* ``trust_remote_code`` still raises ``ValueError`` ("Loading this pipeline requires you
    to execute the code in the pipeline file ..."): transformers looks a task up in the folder's
    ``config.json`` ``custom_pipelines`` before its own registry, and a task found there needs trust_remote_code
    unless a pipeline class is given. The ways without remote code, with ``respstf`` installed, are
    ``pipeline("respiratory-event-detection", model=folder, pipeline_class=RespiratoryEventDetectionPipeline)`` or
    passing loaded objects (``model=RespSTFForAudioFrameClassification.from_pretrained(folder),
    feature_extractor=RespSTFFeatureExtractor.from_pretrained(folder)``), which the registered task serves.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.model.config, "detection", None) is None:
            raise ValueError(f"{type(self.model).__name__} has no config.detection: the {TASK} pipeline needs an event "
                             "detector (RespSTFForAudioFrameClassification trained on whole recordings).")
        if self.feature_extractor is None:
            raise ValueError(f"the {TASK} pipeline needs the detector's feature extractor: give feature_extractor=.")

    def _sanitize_parameters(self, return_frame_scores: bool | None = None):
        postprocess_params = {}
        if return_frame_scores is not None:
            postprocess_params["return_frame_scores"] = bool(return_frame_scores)
        return {}, {}, postprocess_params

    def get_iterator(self, inputs, num_workers, batch_size, *args, **kwargs):
        if batch_size != 1:
            raise ValueError(f"the {TASK} pipeline reads one recording per forward pass (recordings differ in length and "
                             f"the model reads each whole): use batch_size=1, got {batch_size}.")
        return super().get_iterator(inputs, num_workers, batch_size, *args, **kwargs)

    @property
    def frame_seconds(self) -> float:
        """Seconds per output frame: the feature extractor's frame times the model's frames per output frame."""
        return self.feature_extractor.frame_seconds * self.model.frame_stride

    def preprocess(self, inputs: Any) -> dict:
        features, seconds = self._features(inputs, truncation=False)
        return {**features, "duration_seconds": seconds}

    # -- model ----------------------------------------------------------------------------------------
    def _forward(self, model_inputs: dict) -> dict:
        duration = model_inputs.pop("duration_seconds")
        logits = self.model(**model_inputs).logits
        return {"logits": logits, "attention_mask": model_inputs.get("attention_mask"), "duration_seconds": duration}

    # -- output ---------------------------------------------------------------------------------------
    def postprocess(self, model_outputs: dict, return_frame_scores: bool = False) -> dict:
        logits = model_outputs["logits"][0].float()
        mask = model_outputs["attention_mask"]
        if mask is not None:  # the output frames that hold real audio
            logits = logits[:real_output_frames(mask[0].sum(), self.model.frame_stride)]
        probabilities = logits.softmax(-1).numpy()
        config = self.model.config
        result = detect(probabilities, config.id2label, config.detection, self.frame_seconds,
                        model_outputs["duration_seconds"])
        if return_frame_scores:
            result["frame_scores"] = {
                "frame_seconds": self.frame_seconds,
                "labels": [config.id2label[index] for index in range(len(config.id2label))],
                "scores": np.round(probabilities, 4).tolist(),
            }
        return result
