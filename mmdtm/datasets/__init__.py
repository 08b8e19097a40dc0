"""Data components: a resumable sampler, per-sample seeding, a checked
image loader and the iNaturalist annotation converter."""
from .inaturalist import INatFormatError, convert_inaturalist
from .loading import CorruptImageError, SafeLoadImageFromFile
from .samplers import ResumableSampler, SeededIndex
from .seeding import SeedPerSample

__all__ = ['CorruptImageError', 'SafeLoadImageFromFile', 'ResumableSampler',
           'SeededIndex', 'SeedPerSample', 'INatFormatError',
           'convert_inaturalist']
