"""Registries mmdtm registers into (MMPretrain's, so configs just work).

``RUNNERS`` is MMEngine's root registry: a runner registered there is found
from every OpenMMLab scope (``default_scope='mmpretrain'`` and ``'mmseg'``).
"""
from mmengine.registry import RUNNERS
from mmpretrain.registry import MODELS, TRANSFORMS

__all__ = ['MODELS', 'RUNNERS', 'TRANSFORMS']
