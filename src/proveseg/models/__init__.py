"""Segmentation models: the registry (``registry.py``) and the adapters that train and run them (``adapter.py``)."""

from proveseg.models.adapter import PixelLogitModel, SegmentationModel
from proveseg.models.registry import MODELS, ModelEntry, build_model, build_network

__all__ = ["MODELS", "ModelEntry", "PixelLogitModel", "SegmentationModel", "build_model", "build_network"]
