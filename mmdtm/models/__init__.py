"""Registered MMPretrain components of DTM."""
from .algorithms import DTM, BEiTV2DTM
from .backbones import DTMPretrainViT
from .heads import DTMHead
from .losses import DTMLoss
from .necks import DTMNeck
from .target_generators import (CLIPTargetGenerator,
                                CLIPTokensAttentionGenerator,
                                TimmTargetGenerator)
from .weight_init import ScaleInit

__all__ = ['DTM', 'BEiTV2DTM', 'DTMPretrainViT', 'DTMHead', 'DTMLoss', 'DTMNeck', 'CLIPTargetGenerator',
           'CLIPTokensAttentionGenerator', 'TimmTargetGenerator', 'ScaleInit']
