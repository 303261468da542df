"""RespSTF configuration, models (single or fold ensembles), inference (checkpoints with their task, sliding windows),
ensemble packing and deployment class priors, registered with the transformers Auto classes; the checkpoints'
pipelines (``audio-classification`` reading files at their own rate, and the event detector's
``respiratory-event-detection``, registered with transformers' pipelines) and the file reader they share."""

from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification, AutoModelForAudioFrameClassification
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_respstf import RespSTFConfig
from .inference_respstf import (
    TaskModel, annotation_level, Windows, classify_recording, load_models, load_task_model, pack_ensemble, resolve_model_source, slide_windows,
    stitch_windows, unpack_member,
)
from .modeling_respstf import (
    RespSTFForAudioClassification, RespSTFForAudioFrameClassification, RespSTFMember, RespSTFModel, RespSTFPreTrainedModel,
)
from .pipeline_respstf import TASK as DETECTION_PIPELINE_TASK, RespiratoryEventDetectionPipeline, RespSTFAudioClassificationPipeline
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
# pipeline("respiratory-event-detection", model=<loaded detector>, feature_extractor=...) in this process; a saved
# folder ships its pipeline as Hub custom code (config.json's custom_pipelines, written by save_pretrained), which
# needs trust_remote_code=True. audio-classification is transformers' own task: not registered over it.
PIPELINE_REGISTRY.register_pipeline(DETECTION_PIPELINE_TASK, pipeline_class=RespiratoryEventDetectionPipeline,
                                    pt_model=AutoModelForAudioFrameClassification, type="audio")

__all__ = [
    "RespSTFConfig", "RespSTFModel", "RespSTFForAudioClassification", "RespSTFForAudioFrameClassification", "RespSTFMember", "RespSTFPreTrainedModel",
    "RespiratoryEventDetectionPipeline", "RespSTFAudioClassificationPipeline", "DETECTION_PIPELINE_TASK",
    "TaskModel", "Windows", "annotation_level", "classify_recording", "load_models", "load_task_model", "pack_ensemble", "resolve_model_source",
    "slide_windows", "stitch_windows", "unpack_member", "estimate_deployment_prior", "prior_shift",
]
