"""One stochastic-depth draw per residual branch in MMPretrain's BEiT blocks.

MMPretrain's ``BEiTTransformerEncoderLayer`` builds its FFN with
``dropout_layer=DropPath(p)`` and then applies the layer's own
``drop_path`` to the FFN output once more, so the FFN branch is dropped with
probability ``1 - (1 - p)**2`` and, when kept, scaled by ``1 / (1 - p)**2``.
The DTM reference (a BEiT v2 fork) applies one ``DropPath`` to each branch:
``x + drop_path(gamma_1 * attn(norm1(x)))`` and
``x + drop_path(gamma_2 * mlp(norm2(x)))``, its ``Mlp`` having no drop path
of its own.
"""
from typing import Iterable

from torch import nn


def drop_path_once_per_branch(layers: Iterable[nn.Module]) -> None:
    """Remove the FFN's inner ``DropPath`` of every BEiT block in place.

    Each block keeps its ``drop_path`` (applied to the attention and the FFN
    branch); the FFN's ``dropout_layer`` becomes ``nn.Identity``. Neither
    has parameters or buffers, so the state dict is unchanged.
    """
    for layer in layers:
        ffn = getattr(layer, 'ffn', None)
        if ffn is None or not hasattr(ffn, 'dropout_layer') or not hasattr(
                layer, 'drop_path'):
            raise TypeError(f'{type(layer).__name__} is not a BEiT block with '
                            f'ffn.dropout_layer and drop_path')
        ffn.dropout_layer = nn.Identity()
