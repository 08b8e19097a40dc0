"""Data components: a resumable sampler and a checked image loader."""
from .loading import CorruptImageError, SafeLoadImageFromFile
from .samplers import ResumableSampler

__all__ = ['CorruptImageError', 'SafeLoadImageFromFile', 'ResumableSampler']
