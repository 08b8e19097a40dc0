"""Reading checkpoint files: the tensors inside, with a progress line."""
import argparse
import io
import os
import os.path as osp
import pickle
import sys
from typing import Dict, Iterable, Optional

import torch
from torch import Tensor

from ..degrade import log_once
from .compare import CheckpointMismatchError, format_keys
from .compat import checkpoint_safe_globals, restricted_pickle_module

StateDict = Dict[str, Tensor]


def progress(iterable: Iterable, total: Optional[int] = None, desc: str = '',
             unit: str = 'it', disable: Optional[bool] = None) -> Iterable:
    """A tqdm progress line on stderr."""
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit,
                disable=disable, file=sys.stderr, dynamic_ncols=True)


class _ReadProgress(io.RawIOBase):
    """A read-only file that advances a tqdm bar (bytes) as it is read."""

    def __init__(self, path: str, bar) -> None:
        super().__init__()
        self._f = open(path, 'rb')
        self._bar = bar

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self._f.readinto(buf)
        self._bar.update(self._f.tell() - self._bar.n)
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = self._f.seek(offset, whence)
        self._bar.update(pos - self._bar.n)
        return pos

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()
        super().close()


def load_checkpoint_file(path: str, progress_min_bytes: int = 64 << 20,
                         trusted: bool = False) -> dict:
    """``torch.load`` on CPU, with a byte progress line for local files of
    at least ``progress_min_bytes``; URLs go through MMEngine's loader.

    ``weights_only`` stays on, with MMEngine's checkpoint classes and
    ``argparse.Namespace`` (which training scripts save as ``args``)
    allowed for this call only, unless ``trusted``: only for files whose
    origin you trust, since unpickling can run code. A torch without the
    allow-list API (< 2.5) reads through mmdtm's restricted unpickler
    instead (:func:`~mmdtm.checkpoint.compat.restricted_pickle_module`,
    the same globals allowed), after one logged line.

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: ``weights_only`` refused an object.
    """
    if '://' in path:
        from mmengine.runner import CheckpointLoader
        return CheckpointLoader.load_checkpoint(path, map_location='cpu')
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    size = os.path.getsize(path)
    with checkpoint_safe_globals([argparse.Namespace]) as allowed:
        if not allowed and not trusted:
            trusted = None  # the restricted unpickler
            log_once('io', f'torch {torch.__version__} has no '
                     f'torch.serialization.safe_globals (torch >= 2.5): '
                     f"checkpoints are read with mmdtm's restricted "
                     f'unpickler (tensors and MMEngine checkpoint classes '
                     f'only).')
        if size < progress_min_bytes:
            return _torch_load(path, path, trusted)
        from tqdm import tqdm
        with tqdm(total=size, desc=f'load {osp.basename(path)}', unit='B',
                  unit_scale=True, file=sys.stderr) as bar:
            f = io.BufferedReader(_ReadProgress(path, bar), 1 << 20)
            try:
                return _torch_load(f, path, trusted)
            finally:
                f.close()


def _torch_load(f, path: str, trusted: Optional[bool]) -> dict:
    """``trusted=None``: through the restricted unpickler."""
    try:
        if trusted is None:
            return torch.load(f, map_location='cpu', weights_only=False,
                              pickle_module=restricted_pickle_module(
                                  [argparse.Namespace]))
        return torch.load(f, map_location='cpu', weights_only=not trusted)
    except pickle.UnpicklingError as err:
        raise CheckpointMismatchError(
            f'{path}: torch.load(weights_only=True) refused an object in '
            f'the file ({str(err).splitlines()[0]}). Load it with '
            f'trusted=True (the converters: --trusted) only if you trust '
            f'where it comes from.') from err


def state_dict_of(checkpoint: dict, source: str = 'checkpoint') -> StateDict:
    """The tensor dict inside a checkpoint: its ``state_dict``, ``model`` or
    ``module`` entry, or the checkpoint itself when it maps to tensors.

    Raises:
        CheckpointMismatchError: none of these, naming the top-level keys.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(
            f'{source}: expected a dict, got {type(checkpoint).__name__}')
    for entry in ('state_dict', 'model', 'module'):
        if isinstance(checkpoint.get(entry), dict):
            return checkpoint[entry]
    if checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        return checkpoint
    raise CheckpointMismatchError(
        f'{source}: no "state_dict", "model" or "module" entry and not a '
        f'plain tensor dict; top-level keys: {format_keys(checkpoint)}')
