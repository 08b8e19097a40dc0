"""The DTM neck: the student's projection into the teacher's space."""
from typing import Optional, Sequence, Union

from mmengine.model import BaseModule
from torch import Tensor, nn

from mmdtm.registry import MODELS


@MODELS.register_module()
class DTMNeck(BaseModule):
    """Projects every patch token to the target dimension.

    Takes the backbone output (a tensor or a tuple whose last element is
    used) of shape (B, num_extra + N, C), drops the ``num_extra_tokens``
    leading tokens (the class token), applies an optional LayerNorm and one
    ``Linear(C, D)`` (768 -> 512 in the reference).

    Args:
        in_channels: C. Defaults to 768.
        out_channels: D, must equal the teacher's output dimension.
        with_norm: LayerNorm before the projection. Defaults to False.
        num_extra_tokens: leading tokens to drop. Defaults to 1.
        init_cfg: defaults to the reference's: the projection from N(0, 0.02)
            truncated at +-0.02, zero bias.
    """

    def __init__(self,
                 in_channels: int = 768,
                 out_channels: int = 512,
                 with_norm: bool = False,
                 num_extra_tokens: int = 1,
                 init_cfg: Optional[Union[dict, list]] = [
                     # the reference's lm_head: N(0, 0.02) cut at +-0.02
                     dict(type='TruncNormal', layer='Linear', std=0.02,
                          a=-0.02, b=0.02, bias=0),
                     dict(type='Constant', layer='LayerNorm', val=1.0,
                          bias=0)
                 ]) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_extra_tokens = num_extra_tokens
        self.norm = nn.LayerNorm(in_channels, eps=1e-6) if with_norm else None
        self.proj = nn.Linear(in_channels, out_channels)

    def forward(self, feats: Union[Tensor, Sequence[Tensor]]) -> Tensor:
        """(B, num_extra + N, C) -> (B, N, D)."""
        x = feats[-1] if isinstance(feats, (tuple, list)) else feats
        x = x[:, self.num_extra_tokens:]
        if self.norm is not None:
            x = self.norm(x)
        return self.proj(x)
