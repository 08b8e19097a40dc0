"""Let MMEngine checkpoints load under torch >= 2.6 (``weights_only=True``).

MMEngine 0.10.7 checkpoints carry ``HistoryBuffer`` objects and numpy arrays
and scalars in their ``message_hub`` entry. Rather than turning the safety
check off for the whole process (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``), we
allow-list exactly those classes; everything else stays refused.

Two ways to use the list: :func:`checkpoint_safe_globals` scopes it to one
``with`` block (mmdtm's own ``torch.load`` calls);
:func:`register_safe_globals` adds it for the whole process and is called
only by :func:`mmdtm.checkpoint.process.setup_checkpoint_loading`, never at
import. Without the allow-list API (torch < 2.4/2.5) the latter logs one
line and the former yields ``False``; its caller then reads through
:func:`restricted_pickle_module`.
"""
import contextlib
import pickle
import types
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch

from ..degrade import log_once

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


def mmengine_safe_globals() -> List:
    """What MMEngine checkpoints hold besides tensors, for torch's
    ``weights_only`` allow-list."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer] + _numpy_globals() + [
        (_history_buffer_getattr, '__builtin__.getattr'),
        (_history_buffer_getattr, 'builtins.getattr'),
    ]


def _by_name(entries: Sequence) -> Dict[Tuple[str, str], Any]:
    """``(module, name) -> object`` for allow-list entries (objects, or
    ``(object, 'module.name')`` pairs)."""
    table = {}
    for entry in entries:
        obj, full = entry if isinstance(entry, tuple) else (
            entry, f'{entry.__module__}.{entry.__qualname__}')
        module, _, name = full.rpartition('.')
        table[(module, name)] = obj
    return table


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensor rebuilding, ``OrderedDict``, torch sizes and
    dtypes, ``_codecs.encode`` (bytes in protocol-2 pickles, as torch's own
    weights-only unpickler allows) and ``allowed`` (set per use); refuses
    every other global."""

    allowed: Dict[Tuple[str, str], Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        if ((module == 'torch._utils' and name.startswith('_rebuild_'))
                or (module == 'collections' and name == 'OrderedDict')
                or (module == '_codecs' and name == 'encode')
                or (module == 'torch' and (name in ('Size', 'device')
                                           or isinstance(getattr(
                                               torch, name, None),
                                               torch.dtype)))):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'Weights only load failed: unsupported global {module}.{name} '
            f"(mmdtm's restricted unpickler, for torch without the "
            f'allow-list API)')


def restricted_pickle_module(extra: Sequence = ()) -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load(..., weights_only=False)`` that
    reads tensors and MMEngine's checkpoint classes (and ``extra``) and
    refuses everything else: torch's ``weights_only`` check with the
    allow-list, for a torch without the allow-list API (< 2.5)."""
    module = types.ModuleType('mmdtm_restricted_pickle')
    module.Unpickler = type('Unpickler', (_RestrictedUnpickler, ), {
        'allowed': _by_name(mmengine_safe_globals() + list(extra))})
    module.load = lambda f, **kw: module.Unpickler(f, **kw).load()
    return module


def has_allow_list_api() -> bool:
    """torch >= 2.5 (``torch.serialization.safe_globals`` and
    ``add_safe_globals``)."""
    return hasattr(torch.serialization, 'safe_globals')


@contextlib.contextmanager
def checkpoint_safe_globals(extra: Sequence = ()) -> Iterator[bool]:
    """Within the block, ``torch.load(weights_only=True)`` also accepts
    MMEngine's checkpoint classes (and ``extra``). Yields whether the
    allow-list is in force: ``False`` on a torch without the API (the
    caller decides what to do and says so)."""
    if not has_allow_list_api():
        yield False
        return
    ser = torch.serialization
    # torch's context removes its entries on exit, even ones that were
    # allowed before (setup_checkpoint_loading): add only the missing ones
    present = ser.get_safe_globals() if hasattr(ser, 'get_safe_globals') \
        else []
    missing = [e for e in mmengine_safe_globals() + list(extra)
               if e not in present]
    with ser.safe_globals(missing):
        yield True


def register_safe_globals() -> bool:
    """Allow-list what MMEngine checkpoints need for every ``torch.load`` of
    the process. Idempotent.

    Returns:
        ``True`` when registered; ``False`` on a torch without
        ``add_safe_globals`` (< 2.4, whose ``torch.load`` defaults to
        ``weights_only=False`` anyway), after one logged line.
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:
        log_once('process', f'torch {torch.__version__} has no '
                  f'torch.serialization.add_safe_globals (torch >= 2.4): '
                  f'nothing to allow-list; its torch.load defaults to '
                  f'weights_only=False and reads MMEngine checkpoints as '
                  f'they are.')
        return False
    add(mmengine_safe_globals())
    return True
