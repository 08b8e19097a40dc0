"""mmdtm: Dynamic Token Morphing masked image modeling for MMPretrain.

``import mmdtm`` (or ``custom_imports=dict(imports=['mmdtm'])``) registers
every component (see :mod:`mmdtm.registry`) and adds ``'mmdtm'`` to
MMEngine's ``MODULE2PACKAGE`` table so that ``mmdtm::`` config paths resolve
(:mod:`mmdtm.mim`); it changes nothing else in other libraries. The
process-wide checkpoint set-up (``torch.load`` allow-list, http(s) loader
with an offline message) is one explicit call,
:func:`setup_checkpoint_loading`, which mmdtm's tools make; see the README.
"""
from .version import __version__
from .mim import register_config_package

register_config_package()
from .checkpoint import setup_checkpoint_loading  # noqa: E402
from . import morphing  # noqa: F401,E402  (pure torch, no registry)
from . import models  # noqa: F401,E402  (registers the components)
from . import engine  # noqa: F401,E402  (runner, hooks, loops, optimizers)
from . import datasets  # noqa: F401,E402  (resumable sampler, safe loading)

__all__ = ['__version__', 'setup_checkpoint_loading', 'morphing', 'models']
