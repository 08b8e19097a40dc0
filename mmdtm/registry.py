"""Registries mmdtm registers into (MMPretrain's, so configs just work)."""
from mmpretrain.registry import MODELS, TRANSFORMS

__all__ = ['MODELS', 'TRANSFORMS']
