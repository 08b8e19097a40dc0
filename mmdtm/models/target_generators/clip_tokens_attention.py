"""The open_clip teacher in the tuple format of MMPretrain's own
``CLIPGenerator``, for MMPretrain's ``EVA`` and ``MILAN`` algorithms."""
from typing import Tuple

from torch import Tensor, nn

from mmdtm.registry import MODELS
from .clip_generator import CLIPTargetGenerator


@MODELS.register_module()
class CLIPTokensAttentionGenerator(CLIPTargetGenerator):
    """:class:`CLIPTargetGenerator` returning what MMPretrain's own
    ``CLIPGenerator`` returns, and its ``EVA`` and ``MILAN`` algorithms
    unpack, so that this teacher drops into their configs without a new
    algorithm class: ``(tokens, attention)``,

    * tokens: (B, 1 + N, D) float32, the class token first, then the patch
      targets of :class:`CLIPTargetGenerator` (EVA drops the class token
      itself);
    * attention: (B, 1 + N, 1 + N) float32, the last block's attention
      weights averaged over heads (MILAN masks by the class token's row).

    The attention is the last block's own, re-run once with its weights
    kept, on the input the block saw (forward hooks keep that input and
    the tokens after ``ln_post`` during the patch-target pass). Needs a
    plain open_clip ViT: a last block with ``nn.MultiheadAttention``,
    ``ln_post`` on every token, no attention pooling; and the teacher's
    own grid (no ``grid_match``).

    Args:
        *args, **kwargs: as for :class:`CLIPTargetGenerator`.
    """

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get('grid_match') is not None:
            raise ValueError(
                f'{type(self).__name__} works on the teacher grid as is; '
                f"unset grid_match (got {kwargs['grid_match']!r})")
        super().__init__(*args, **kwargs)
        blocks = getattr(getattr(self.teacher, 'transformer', None),
                         'resblocks', None)
        attn = getattr(blocks[-1], 'attn', None) if blocks else None
        if (not isinstance(attn, nn.MultiheadAttention)
                or getattr(self.teacher, 'attn_pool', None) is not None
                or getattr(self.teacher, 'final_ln_after_pool', False)):
            raise ValueError(
                f'{type(self).__name__} needs a plain open_clip ViT (last '
                f'block with nn.MultiheadAttention, ln_post on every token, '
                f'no attention pooling); {self.model_name!r} is not')

    def _output(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(B, 1 + N, D) tokens with the class token, (B, 1 + N, 1 + N)
        last-block attention (mean over heads), float32."""
        last = self.teacher.transformer.resblocks[-1]
        seen = {}

        def keep(name):
            return lambda module, args, out: seen.__setitem__(name, out)

        hooks = [last.ln_1.register_forward_hook(keep('attn_in')),
                 self.teacher.ln_post.register_forward_hook(keep('post'))]
        try:
            self._targets(x)  # the patch-target pass; hooks keep the rest
        finally:
            for hook in hooks:
                hook.remove()
        tokens, attn_in = seen['post'], seen['attn_in']
        if tokens.dim() != 3 or tokens.shape[1] != self.num_patches + 1:
            raise ValueError(
                f'ln_post of {self.model_name!r} saw shape '
                f'{tuple(tokens.shape)}, not (B, 1 + {self.num_patches}, C); '
                f'{type(self).__name__} cannot be used with it')
        with self._autocast(x.device.type):
            if self.projected and self.teacher.proj is not None:
                tokens = tokens @ self.teacher.proj
            # The attention the last block computed, now with its weights.
            _, weights = last.attn(attn_in, attn_in, attn_in,
                                   need_weights=True,
                                   average_attn_weights=True)
        return tokens.float(), weights.float()
