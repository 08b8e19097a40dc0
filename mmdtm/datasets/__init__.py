"""Data components: a resumable sampler, per-sample seeding, a checked
image loader, the data-root check, the reference's block mask generator and
the iNaturalist annotation converter."""
from .data_root import check_data_roots
from .inaturalist import INatFormatError, convert_inaturalist
from .loading import CorruptImageError, SafeLoadImageFromFile
from .masking import BlockMaskGenerator
from .samplers import ResumableSampler, SeededIndex
from .seeding import SeedPerSample

__all__ = ['CorruptImageError', 'SafeLoadImageFromFile', 'ResumableSampler',
           'SeededIndex', 'SeedPerSample', 'BlockMaskGenerator',
           'INatFormatError', 'convert_inaturalist', 'check_data_roots']
