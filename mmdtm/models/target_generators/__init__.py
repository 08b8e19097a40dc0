from .clip_generator import CLIPTargetGenerator
from .frozen_teacher import FrozenTeacher
from .timm_generator import TimmTargetGenerator

__all__ = ['CLIPTargetGenerator', 'FrozenTeacher', 'TimmTargetGenerator']
