"""Let MMEngine checkpoints load under torch >= 2.6 (``weights_only=True``).

MMEngine 0.10.7 checkpoints carry ``HistoryBuffer`` objects and numpy arrays
and scalars in their ``message_hub`` entry. Rather than turning the safety
check off for the whole process (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``), we
allow-list exactly those classes; everything else stays refused.
"""
import pickle
from typing import List

import numpy as np
import torch

_NUMPY_FUNCS = ('_reconstruct', 'scalar')


def _numpy_globals() -> List:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray
    entries: List = [np.ndarray, np.dtype]
    for func in _NUMPY_FUNCS:
        obj = getattr(multiarray, func)
        # A pickle names the module it was written with: numpy 1 wrote
        # numpy.core, numpy 2 writes numpy._core. Allow both spellings.
        for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
            entries.append((obj, f'{module}.{func}'))
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        entries += [getattr(dtypes, name) for name in dir(dtypes)
                    if name.endswith('DType')]
    return entries


def _history_buffer_getattr(obj, name: str):
    """``getattr`` restricted to ``HistoryBuffer``'s statistic methods.

    A ``HistoryBuffer`` pickles its ``statistics_methods`` as
    ``getattr(HistoryBuffer, 'mean')`` and so on. Allowing the builtin
    ``getattr`` would let a checkpoint reach any attribute of any allowed
    object; this stand-in answers only what MMEngine writes.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if (obj is HistoryBuffer and isinstance(name, str)
            and not name.startswith('_')
            and callable(getattr(HistoryBuffer, name, None))):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({obj!r}, {name!r}) while loading a checkpoint: '
        f'mmdtm only allows HistoryBuffer statistic methods')


def register_safe_globals() -> None:
    """Allow-list what MMEngine checkpoints need for ``torch.load``.

    Idempotent; a no-op on torch versions without ``add_safe_globals``.
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:
        return
    from mmengine.logging.history_buffer import HistoryBuffer
    add([HistoryBuffer] + _numpy_globals() + [
        (_history_buffer_getattr, '__builtin__.getattr'),
        (_history_buffer_getattr, 'builtins.getattr'),
    ])
