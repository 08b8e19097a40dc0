"""Relative position bias tables of BEiT-style ViTs on another window.

A table has (2 Wh - 1) (2 Ww - 1) + 3 rows (one per relative offset, plus
the class-token entries) and one column per head. Resizing is timm's
``resize_rel_pos_bias_table``: BEiT's own interpolation over a geometric
grid of offsets (finer near zero), the class-token entries kept.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from timm.layers import resize_rel_pos_bias_table
from torch import Tensor

from .compare import CheckpointMismatchError

REL_TABLE = 'relative_position_bias_table'
NUM_CLS_ENTRIES = 3  # cls->token, token->cls, cls->cls


def window_of_table(num_entries: int) -> Tuple[int, int]:
    """The square window W x W a table of ``num_entries`` rows was made for
    (``num_entries = (2W-1)^2 + 3``)."""
    side = round((num_entries - NUM_CLS_ENTRIES) ** 0.5)
    if side % 2 == 0 or side * side + NUM_CLS_ENTRIES != num_entries:
        raise CheckpointMismatchError(
            f'a relative position bias table with {num_entries} rows is not '
            f'(2W-1)^2 + 3 for any square window W; pass the source window')
    return (side + 1) // 2, (side + 1) // 2


def resize_rel_pos_table(table: Tensor, dst_window: Sequence[int],
                         src_window: Optional[Sequence[int]] = None
                         ) -> Tensor:
    """``table`` (L_src, heads) resized to ``dst_window`` (Wh, Ww): returns
    (L_dst, heads), ``table`` itself when the windows agree.

    ``src_window`` is inferred when square.
    """
    src = tuple(src_window) if src_window else window_of_table(table.shape[0])
    dst = tuple(dst_window)
    if src == dst:
        return table
    rows = (2 * src[0] - 1) * (2 * src[1] - 1) + NUM_CLS_ENTRIES
    if table.shape[0] != rows:
        raise CheckpointMismatchError(
            f'table of {table.shape[0]} rows does not match window {src}')
    dst_rows = (2 * dst[0] - 1) * (2 * dst[1] - 1) + NUM_CLS_ENTRIES
    out = resize_rel_pos_bias_table(table.float(), dst,
                                    (dst_rows, table.shape[1]), src)
    return out.to(table.dtype)


def resize_tables(state: Dict[str, Tensor],
                  target_shapes: Dict[str, torch.Size],
                  log: Callable[[str], None] = print) -> Dict[str, Tensor]:
    """Every ``*relative_position_bias_table`` of ``state`` whose row count
    differs from ``target_shapes[key]`` (a model's state-dict shapes),
    resized; returns a new dict."""
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
