"""Checkpoint conversion for transfer: pure functions on state dicts.

Two conversions, both exhaustive (a key that no rule maps is an error, never
silently dropped):

* :func:`dtm_to_backbone`: an mmdtm pre-training checkpoint (``backbone.*``,
  ``neck.*``, ``head.loss_module.schedule_state``) to the backbone state dict
  a downstream BEiT-style ViT (``DTMViT``) loads. The shared relative
  position bias is folded into every block's own table (per-block + shared,
  exactly the bias the student added to its attention logits), the mask
  token is dropped and, unless kept, the final norm (mean-pooling
  fine-tuning and UPerNet replace it by fresh layers).
* :func:`reference_to_mmdtm`: a checkpoint of the reference implementation
  (BEiT-style key names under ``model``) to mmdtm's pre-training layout.

Relative position bias tables are resized (bicubic on the 2-D offset grid,
the 3 class-token entries kept) when the window size differs.
"""
import argparse
import io
import os
import os.path as osp
import pickle
import re
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

StateDict = Dict[str, Tensor]

#: Buffers that are a pure function of the window size; models rebuild them.
DERIVED_KEY = re.compile(r'(^|\.)relative_position_index$')
REL_TABLE = 'relative_position_bias_table'
NUM_CLS_ENTRIES = 3  # cls->token, token->cls, cls->cls


class ConversionError(RuntimeError):
    """A checkpoint cannot be converted; the message lists the keys."""


def _fmt_keys(keys: Iterable[str], limit: int = 40) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:limit])
    more = f' ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return f'[{shown}{more}]'


# --------------------------------------------------------------------- I/O
def progress(iterable, total: Optional[int] = None, desc: str = '',
             unit: str = 'it', disable: Optional[bool] = None):
    """A tqdm progress line on stderr (plain iteration without tqdm)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with our stack
        return iterable
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

    ``weights_only`` stays on (plus ``argparse.Namespace``, which training
    scripts save as ``args``) unless ``trusted``: only for files whose
    origin you trust, since unpickling can run code.
    """
    if '://' in path:
        from mmengine.runner import CheckpointLoader
        return CheckpointLoader.load_checkpoint(path, map_location='cpu')
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    size = os.path.getsize(path)
    with torch.serialization.safe_globals([argparse.Namespace]):
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


def _torch_load(f, path: str, trusted: bool) -> dict:
    try:
        return torch.load(f, map_location='cpu', weights_only=not trusted)
    except pickle.UnpicklingError as err:
        raise ConversionError(
            f'{path}: torch.load(weights_only=True) refused an object in '
            f'the file ({str(err).splitlines()[0]}). If you trust the file, '
            f'convert with --trusted.') from err


def state_dict_of(checkpoint: dict, source: str = 'checkpoint') -> StateDict:
    """The tensor dict inside a checkpoint (``state_dict``, ``model`` or
    ``module`` entry, or the checkpoint itself when it maps to tensors)."""
    if not isinstance(checkpoint, dict):
        raise ConversionError(
            f'{source}: expected a dict, got {type(checkpoint).__name__}')
    for entry in ('state_dict', 'model', 'module'):
        if isinstance(checkpoint.get(entry), dict):
            return checkpoint[entry]
    if checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        return checkpoint
    raise ConversionError(
        f'{source}: no "state_dict", "model" or "module" entry and not a '
        f'plain tensor dict; top-level keys: {_fmt_keys(checkpoint)}')


# ------------------------------------------------------ relative positions
def window_of_table(num_entries: int) -> Tuple[int, int]:
    """The square window a (L, heads) table with class entries was made for
    (L = (2W - 1)^2 + 3)."""
    side = round((num_entries - NUM_CLS_ENTRIES) ** 0.5)
    if side % 2 == 0 or side * side + NUM_CLS_ENTRIES != num_entries:
        raise ConversionError(
            f'a relative position bias table with {num_entries} rows is not '
            f'(2W-1)^2 + 3 for any square window W; pass the source window')
    return (side + 1) // 2, (side + 1) // 2


def resize_rel_pos_table(table: Tensor, dst_window: Sequence[int],
                         src_window: Optional[Sequence[int]] = None
                         ) -> Tensor:
    """Resize a relative position bias table to another window.

    Args:
        table: (L_src, heads), L = (2*Wh - 1) * (2*Ww - 1) + 3.
        dst_window: (Wh, Ww) of the target model.
        src_window: (Wh, Ww) of ``table``; inferred when square.

    Returns:
        (L_dst, heads): bicubic interpolation over the (2Wh-1, 2Ww-1) offset
        grid; the 3 class-token entries are kept as they are.
    """
    src = tuple(src_window) if src_window else window_of_table(table.shape[0])
    dst = tuple(dst_window)
    if src == dst:
        return table
    heads = table.shape[1]
    src_hw = (2 * src[0] - 1, 2 * src[1] - 1)
    dst_hw = (2 * dst[0] - 1, 2 * dst[1] - 1)
    if table.shape[0] != src_hw[0] * src_hw[1] + NUM_CLS_ENTRIES:
        raise ConversionError(
            f'table of {table.shape[0]} rows does not match window {src}')
    grid, extra = table[:-NUM_CLS_ENTRIES], table[-NUM_CLS_ENTRIES:]
    grid = grid.float().T.reshape(1, heads, *src_hw)
    grid = F.interpolate(grid, size=dst_hw, mode='bicubic',
                         align_corners=False)
    grid = grid.reshape(heads, -1).T.to(table.dtype)
    return torch.cat([grid, extra], dim=0)


def resize_tables(state: StateDict, target_shapes: Dict[str, torch.Size],
                  log=print) -> StateDict:
    """Resize every ``*relative_position_bias_table`` in ``state`` whose row
    count differs from ``target_shapes[key]`` (a model's state-dict shapes);
    returns a new dict."""
    out = dict(state)
    for key, value in state.items():
        if not key.endswith(REL_TABLE) or key not in target_shapes:
            continue
        rows = target_shapes[key][0]
        if value.shape[0] != rows:
            dst = window_of_table(rows)
            out[key] = resize_rel_pos_table(value, dst)
            log(f'resized {key}: {tuple(value.shape)} -> '
                f'{tuple(out[key].shape)} (window {dst})')
    return out


# -------------------------------------------------- mmdtm -> downstream ViT
def split_prefix(state: StateDict, prefix: str) -> Tuple[StateDict, List[str]]:
    """Keys under ``prefix`` (prefix removed) and the keys outside it."""
    inside = {k[len(prefix):]: v for k, v in state.items()
              if k.startswith(prefix)}
    outside = [k for k in state if not k.startswith(prefix)]
    return inside, outside


def _layer_ids(state: StateDict,
               pattern: str = r'^layers\.(\d+)\.') -> List[int]:
    ids = {int(m.group(1)) for k in state
           for m in [re.match(pattern, k)] if m}
    return sorted(ids)


def fold_shared_rel_pos_bias(backbone: StateDict) -> StateDict:
    """Per-block tables := per-block + shared (or a copy of the shared one
    where a block has none); the shared ``rel_pos_bias.*`` keys go away.

    Exact: both tables are indexed by the same relative-position index, so
    ``(T_i + S)[idx] == T_i[idx] + S[idx]``, the sum the student used.
    """
    shared_key = f'rel_pos_bias.{REL_TABLE}'
    if shared_key not in backbone:
        return dict(backbone)
    out = {k: v for k, v in backbone.items()
           if not k.startswith('rel_pos_bias.')}
    shared = backbone[shared_key]
    layers = _layer_ids(backbone)
    if not layers:
        raise ConversionError('no layers.{i}.* keys next to the shared '
                              'relative position bias')
    for i in layers:
        key = f'layers.{i}.attn.{REL_TABLE}'
        own = backbone.get(key)
        if own is not None and own.shape != shared.shape:
            raise ConversionError(
                f'{key} has shape {tuple(own.shape)} but the shared table '
                f'has {tuple(shared.shape)}')
        out[key] = shared.clone() if own is None else own + shared
        idx = f'layers.{i}.attn.relative_position_index'
        shared_idx = backbone.get('rel_pos_bias.relative_position_index')
        if idx not in out and shared_idx is not None:
            out[idx] = shared_idx.clone()
    return out


#: Pre-training-only backbone keys, dropped for every downstream task.
PRETRAIN_ONLY = ('mask_token',)
#: Keys outside the backbone that a pre-training checkpoint may hold.
NON_BACKBONE_PREFIXES = ('neck.', 'head.', 'target_generator.',
                         'data_preprocessor.')


def dtm_to_backbone(state: StateDict, keep_final_norm: bool = False,
                    window: Optional[Sequence[int]] = None,
                    prefix: str = 'backbone.') -> StateDict:
    """mmdtm pre-training state dict -> downstream ``DTMViT`` backbone keys.

    Args:
        state: the pre-training ``state_dict`` (``backbone.*``, ``neck.*``,
            ``head.*``; a teacher, if a foreign checkpoint holds one).
        keep_final_norm: keep ``ln1`` (the final LayerNorm); linear probing
            keeps it, fine-tuning with mean pooling and UPerNet drop it.
        window: (Wh, Ww) patch grid of the downstream model; tables are
            resized when it differs from the pre-training one.
        prefix: the backbone prefix in ``state``.

    Returns:
        backbone state dict without prefix (derived index buffers dropped).

    Raises:
        ConversionError: no key under ``prefix``, or a key outside the
            backbone that is not a known pre-training component.
    """
    backbone, outside = split_prefix(state, prefix)
    if not backbone:
        raise ConversionError(
            f'no key starts with {prefix!r}; is this an mmdtm pre-training '
            f'checkpoint? first keys: {_fmt_keys(list(state)[:10])}')
    unknown = [k for k in outside if not k.startswith(NON_BACKBONE_PREFIXES)]
    if unknown:
        raise ConversionError(
            f'keys outside {prefix!r} that are not neck/head/teacher: '
            f'{_fmt_keys(unknown)}')
    out = fold_shared_rel_pos_bias(backbone)
    for key in PRETRAIN_ONLY:
        out.pop(key, None)
    if not keep_final_norm:
        for key in [k for k in out if k.startswith('ln1.')]:
            out.pop(key)
    out = {k: v for k, v in out.items() if not DERIVED_KEY.search(k)}
    if window is not None:
        for key in [k for k in out if k.endswith(REL_TABLE)]:
            out[key] = resize_rel_pos_table(out[key], window)
    return out


# ------------------------------------------------- reference -> mmdtm
_BLOCK_RULES = (  # reference suffix -> mmdtm suffix, inside blocks.{i}.
    ('norm1.weight', 'ln1.weight'), ('norm1.bias', 'ln1.bias'),
    ('attn.qkv.weight', 'attn.qkv.weight'),
    ('attn.q_bias', 'attn.q_bias'), ('attn.v_bias', 'attn.v_bias'),
    (f'attn.{REL_TABLE}', f'attn.{REL_TABLE}'),
    ('attn.proj.weight', 'attn.proj.weight'),
    ('attn.proj.bias', 'attn.proj.bias'),
    ('norm2.weight', 'ln2.weight'), ('norm2.bias', 'ln2.bias'),
    ('mlp.fc1.weight', 'ffn.layers.0.0.weight'),
    ('mlp.fc1.bias', 'ffn.layers.0.0.bias'),
    ('mlp.fc2.weight', 'ffn.layers.1.weight'),
    ('mlp.fc2.bias', 'ffn.layers.1.bias'),
    ('gamma_1', 'gamma_1'), ('gamma_2', 'gamma_2'),
)
_BLOCK_OPTIONAL = {'attn.relative_position_index'}
_TOP_RULES = (  # reference key -> mmdtm key
    ('patch_embed.proj.weight', 'backbone.patch_embed.projection.weight'),
    ('patch_embed.proj.bias', 'backbone.patch_embed.projection.bias'),
    ('cls_token', 'backbone.cls_token'),
    ('mask_token', 'backbone.mask_token'),
    (f'rel_pos_bias.{REL_TABLE}', f'backbone.rel_pos_bias.{REL_TABLE}'),
    ('norm.weight', 'backbone.ln1.weight'),
    ('norm.bias', 'backbone.ln1.bias'),
    ('lm_head.weight', 'neck.proj.weight'),
    ('lm_head.bias', 'neck.proj.bias'),
)
_TOP_OPTIONAL = {'rel_pos_bias.relative_position_index':
                 'backbone.rel_pos_bias.relative_position_index'}


def reference_to_mmdtm(ref: StateDict,
                       skip_prefixes: Sequence[str] = ()) -> StateDict:
    """Reference (BEiT-style) pre-training keys -> mmdtm's layout.

    Every key must be mapped or under ``skip_prefixes`` (e.g. ``teacher.``);
    every block must carry the full set of block keys.

    Returns:
        ``backbone.*`` and ``neck.proj.*`` tensors for ``DTM``.

    Raises:
        ConversionError: listing unmapped keys and missing keys.
    """
    top = dict(_TOP_RULES)
    block = dict(_BLOCK_RULES)
    out: StateDict = {}
    unmapped, seen_blocks = [], {}
    for key, value in progress(ref.items(), total=len(ref), desc='convert',
                               unit='tensor', disable=len(ref) < 500):
        if key.startswith(tuple(skip_prefixes)):
            continue
        if key in top:
            out[top[key]] = value
            continue
        if key in _TOP_OPTIONAL:
            out[_TOP_OPTIONAL[key]] = value
            continue
        m = re.match(r'^blocks\.(\d+)\.(.+)$', key)
        if m and (m.group(2) in block or m.group(2) in _BLOCK_OPTIONAL):
            i, suffix = int(m.group(1)), m.group(2)
            seen_blocks.setdefault(i, set()).add(suffix)
            out[f'backbone.layers.{i}.{block.get(suffix, suffix)}'] = value
            continue
        unmapped.append(key)
    missing = [k for k in top if k not in ref]
    if not seen_blocks:
        missing.append('blocks.{i}.*')
    else:
        depth = max(seen_blocks) + 1
        for i in range(depth):
            for suffix in block:
                if suffix not in seen_blocks.get(i, ()):
                    missing.append(f'blocks.{i}.{suffix}')
    if unmapped or missing:
        raise ConversionError(
            f'cannot convert the reference checkpoint: '
            f'{len(unmapped)} unmapped keys {_fmt_keys(unmapped)}; '
            f'{len(missing)} missing keys {_fmt_keys(missing)}')
    return out
