"""mmdtm: Dynamic Token Morphing masked image modeling for MMPretrain.

``import mmdtm`` (or ``custom_imports=dict(imports=['mmdtm'])``) registers
every component (see :mod:`mmdtm.registry`) and has two side effects on the
host process, listed in the README: a narrow ``torch.load`` allow-list for
MMEngine checkpoints and an http(s) checkpoint loader with an offline
message.
"""
from .version import __version__
from .checkpoint import register_safe_globals, register_url_loader

register_safe_globals()
register_url_loader()  # clear error naming the file when a URL is offline
from . import morphing  # noqa: F401,E402  (pure torch, no registry)
from . import models  # noqa: F401,E402  (registers the components)
from . import engine  # noqa: F401,E402  (runner, hooks, loops, optimizers)
from . import datasets  # noqa: F401,E402  (resumable sampler, safe loading)

__all__ = ['__version__', 'register_safe_globals', 'morphing', 'models']
