"""Data components: a resumable sampler, per-sample seeding, a checked
image loader, the data-root check and the iNaturalist annotation
converter."""
from .data_root import check_data_roots
from .inaturalist import INatFormatError, convert_inaturalist
from .loading import CorruptImageError, SafeLoadImageFromFile
from .samplers import ResumableSampler, SeededIndex
from .seeding import SeedPerSample

__all__ = ['CorruptImageError', 'SafeLoadImageFromFile', 'ResumableSampler',
           'SeededIndex', 'SeedPerSample', 'INatFormatError',
           'convert_inaturalist', 'check_data_roots']
