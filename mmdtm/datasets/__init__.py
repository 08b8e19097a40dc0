"""Data components: a resumable sampler, per-sample seeding and a checked
image loader."""
from .loading import CorruptImageError, SafeLoadImageFromFile
from .samplers import ResumableSampler, SeededIndex
from .seeding import SeedPerSample

__all__ = ['CorruptImageError', 'SafeLoadImageFromFile', 'ResumableSampler',
           'SeededIndex', 'SeedPerSample']
