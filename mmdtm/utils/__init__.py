from .checkpoint_compat import register_safe_globals
from .checked_loading import (CheckedInitMixin, CheckpointKeyError,
                              LoadReport, load_backbone_checked)
from .checkpoint_url import (CheckpointDownloadError, register_url_loader,
                             url_cache_path)
from .weight_init import ScaleInit

__all__ = ['CheckedInitMixin', 'CheckpointKeyError', 'LoadReport',
           'load_backbone_checked', 'register_safe_globals', 'CheckpointDownloadError',
           'register_url_loader', 'url_cache_path', 'ScaleInit']
