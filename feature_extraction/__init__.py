"""The CWT feature extractor of RespSTF, registered with ``AutoFeatureExtractor``."""

from transformers import AutoFeatureExtractor

from respstf.modeling import RespSTFConfig

from .cwt import PooledMorletCWT, morlet_scales
from .feature_extraction_respstf import RespSTFFeatureExtractor

# Package glue only (not shipped to the Hub): AutoFeatureExtractor keys its registry by config class.
AutoFeatureExtractor.register(RespSTFConfig, RespSTFFeatureExtractor, exist_ok=True)
RespSTFFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = ["RespSTFFeatureExtractor", "PooledMorletCWT", "morlet_scales"]
