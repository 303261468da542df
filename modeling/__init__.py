"""RespSTF configuration, models (single or fold ensembles), inference (checkpoints with their task, sliding windows),
ensemble packing and deployment class priors, registered with the transformers Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification, AutoModelForAudioFrameClassification

from .configuration_respstf import RespSTFConfig
from .inference_respstf import (
    TaskModel, annotation_level, Windows, classify_recording, load_models, load_task_model, pack_ensemble, resolve_model_source, slide_windows,
    stitch_windows,
)
from .modeling_respstf import (
    RespSTFForAudioClassification, RespSTFForAudioFrameClassification, RespSTFMember, RespSTFModel, RespSTFPreTrainedModel,
)
from .prior_respstf import estimate_deployment_prior, prior_shift

AutoConfig.register(RespSTFConfig.model_type, RespSTFConfig, exist_ok=True)
AutoModel.register(RespSTFConfig, RespSTFModel, exist_ok=True)
AutoModelForAudioClassification.register(RespSTFConfig, RespSTFForAudioClassification, exist_ok=True)
AutoModelForAudioFrameClassification.register(RespSTFConfig, RespSTFForAudioFrameClassification, exist_ok=True)
# save_pretrained then writes `auto_map` and copies the code files, so the folder loads with
# trust_remote_code=True where this package is not installed.
RespSTFConfig.register_for_auto_class()
RespSTFModel.register_for_auto_class("AutoModel")
RespSTFForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
RespSTFForAudioFrameClassification.register_for_auto_class("AutoModelForAudioFrameClassification")

__all__ = [
    "RespSTFConfig", "RespSTFModel", "RespSTFForAudioClassification", "RespSTFForAudioFrameClassification", "RespSTFMember", "RespSTFPreTrainedModel",
    "TaskModel", "Windows", "annotation_level", "classify_recording", "load_models", "load_task_model", "pack_ensemble", "resolve_model_source",
    "slide_windows", "stitch_windows", "estimate_deployment_prior", "prior_shift",
]
