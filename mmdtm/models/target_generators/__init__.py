from .clip_generator import CLIPTargetGenerator
from .clip_tokens_attention import CLIPTokensAttentionGenerator
from .frozen_teacher import FrozenTeacher
from .timm_generator import TimmTargetGenerator

__all__ = ['CLIPTargetGenerator', 'CLIPTokensAttentionGenerator',
           'FrozenTeacher', 'TimmTargetGenerator']
