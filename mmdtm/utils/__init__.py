from .checkpoint_compat import register_safe_globals
from .checkpoint_url import (CheckpointDownloadError, register_url_loader,
                             url_cache_path)

__all__ = ['register_safe_globals', 'CheckpointDownloadError',
           'register_url_loader', 'url_cache_path']
