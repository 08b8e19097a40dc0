from .clip_generator import CLIPTargetGenerator

__all__ = ['CLIPTargetGenerator']
