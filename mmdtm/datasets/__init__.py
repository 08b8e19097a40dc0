"""Data components: a resumable sampler, per-sample seeding, a checked
image loader, the reference's block mask generator and the iNaturalist
annotation converter."""
from .inaturalist import INatFormatError, convert_inaturalist
from .loading import CorruptImageError, SafeLoadImageFromFile
from .masking import BlockMaskGenerator
from .samplers import ResumableSampler, SeededIndex
from .seeding import SeedPerSample

__all__ = ['CorruptImageError', 'SafeLoadImageFromFile', 'ResumableSampler',
           'SeededIndex', 'SeedPerSample', 'BlockMaskGenerator',
           'INatFormatError', 'convert_inaturalist']
