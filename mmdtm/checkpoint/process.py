"""The one explicit, process-wide set-up for loading checkpoints.

``import mmdtm`` changes nothing in torch's or MMEngine's checkpoint
loading. :func:`setup_checkpoint_loading` does, when called (mmdtm's
``tools/train.py`` and ``tools/test.py`` call it first thing; a host
project's script may call it too):

1. ``torch.serialization.add_safe_globals`` with what MMEngine checkpoints
   hold (:func:`~mmdtm.checkpoint.compat.register_safe_globals`), so that
   ``torch.load``'s ``weights_only=True`` (the default since torch 2.6)
   accepts them and still refuses everything else;
2. MMEngine's ``http(s)://`` checkpoint loader is replaced by
   :func:`~mmdtm.checkpoint.url.load_from_url`, whose offline error names the
   URL and the file to place
   (:func:`~mmdtm.checkpoint.url.register_url_loader`).
"""
from typing import List

from .compat import register_safe_globals
from .url import register_url_loader


def setup_checkpoint_loading() -> List[str]:
    """Make the two process-wide changes listed in the module docstring.

    Idempotent. Returns one line per change made (for logs and tests).
    """
    changes = []
    if register_safe_globals():
        changes.append('torch.load allow-list: MMEngine checkpoint classes')
    register_url_loader()
    changes.append('MMEngine http(s):// checkpoint loader: mmdtm.checkpoint.'
                   'url.load_from_url')
    return changes
