"""The DTM student: MMPretrain's BEiT pre-training ViT, with both kinds of
relative position bias, one drop path per branch and the reference's
initialisation."""
import warnings
from typing import List, Optional, Union

import torch
from mmengine.model.weight_init import initialize, trunc_normal_
from mmpretrain.models.backbones.beit import RelativePositionBias
from mmpretrain.models.selfsup.beit import BEiTPretrainViT

from mmdtm.registry import MODELS
from mmdtm.upstream import RelPosTableSeam
from .drop_path import drop_path_once_per_branch


def reference_init_cfg(std: float = 0.02) -> List[dict]:
    """The reference's weight init as MMEngine ``init_cfg``.

    Linear and Conv2d weights from N(0, std) truncated at +-std (the
    reference's ``trunc_normal_`` passes ``a=-std, b=std``: an effective
    standard deviation of about 0.54 * std), zero biases, LayerNorm 1 / 0.
    """
    return [
        dict(type='TruncNormal', layer=['Linear', 'Conv2d'], std=std, a=-std,
             b=std, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ]


def _has_pretrained(init_cfg) -> bool:
    cfgs = init_cfg if isinstance(init_cfg, list) else [init_cfg]
    return any(isinstance(c, dict) and c.get('type') == 'Pretrained'
               for c in cfgs)


@MODELS.register_module()
class DTMPretrainViT(RelPosTableSeam, BEiTPretrainViT):
    """BEiT-style pre-training ViT (mask token, layer scale) for DTM.

    ``forward(x, mask)`` returns a tuple of (B, 1 + N, C) features, as
    MMPretrain's ``BEiTPretrainViT``. Three differences, each the reference's
    behaviour:

    - both kinds of relative position bias at once (a shared table added to
      every block's own), where the parent allows one or the other;
    - one ``DropPath`` per residual branch (the parent drops the FFN branch
      twice, see :mod:`mmdtm.models.backbones.drop_path`);
    - the reference's initialisation (``init_weights``): ``init_cfg``
      (default :func:`reference_init_cfg`: Linear / Conv2d weights from
      N(0, init_std) truncated at +-init_std, zero biases, LayerNorm 1 / 0)
      over the whole student, without MMPretrain's per-block re-initialisation
      (xavier-uniform FFN, N(0, 0.02) relative position tables); every
      relative position table and the q / v biases at zero; class and mask
      tokens (and an absolute position embedding, if any) from N(0, init_std)
      truncated at +-init_std; then ``attn.proj`` and the second FFN layer of
      block i (1-based) divided by sqrt(2 i).

    Args:
        use_rel_pos_bias: per-block relative position bias tables.
        use_shared_rel_pos_bias: one shared table added in every block.
        init_std: the reference's ``init_std`` (0.02).
        init_cfg: MMEngine init config; ``None`` means
            ``reference_init_cfg(init_std)``. A ``Pretrained`` config loads
            weights as in the parent.
        **kwargs: the remaining ``BEiTPretrainViT`` arguments.
    """

    def __init__(self,
                 use_rel_pos_bias: bool = True,
                 use_shared_rel_pos_bias: bool = True,
                 init_std: float = 0.02,
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 **kwargs) -> None:
        if init_cfg is None:
            init_cfg = reference_init_cfg(init_std)
        super().__init__(
            use_rel_pos_bias=use_rel_pos_bias,
            use_shared_rel_pos_bias=(use_shared_rel_pos_bias
                                     and not use_rel_pos_bias),
            init_cfg=init_cfg,
            **kwargs)
        self.init_std = init_std
        if use_shared_rel_pos_bias and use_rel_pos_bias:
            self.rel_pos_bias = RelativePositionBias(
                window_size=self.patch_resolution,
                num_heads=self.arch_settings['num_heads'])
        drop_path_once_per_branch(self.layers)

    def init_weights(self) -> None:
        """The reference's initialisation (see the class docstring)."""
        if _has_pretrained(self.init_cfg):
            super().init_weights()
            return
        if self.is_init:  # MMEngine semantics: a second call does nothing
            warnings.warn(f'init_weights of {type(self).__name__} has been '
                          f'called more than once.')
            return
        if self.init_cfg:
            initialize(self, self.init_cfg)
        std = self.init_std
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.endswith(('relative_position_bias_table', 'q_bias',
                                  'v_bias')):
                    param.zero_()
            for token in (self.cls_token, self.mask_token, self.pos_embed):
                if token is not None:
                    trunc_normal_(token, std=std, a=-std, b=std)
            self.rescale_init_weight()
        self.is_init = True

    def prepare_relative_position_bias_table(self, state_dict, prefix, *args,
                                             **kwargs):
        """Keep a checkpoint's shared table as it is when this model has one.

        The parent copies a shared table into every block when the model has
        per-block tables (a BEiT fine-tuning convention); with both kinds in
        the model that would overwrite the per-block tables on resume.
        """
        if self.rel_pos_bias is not None:
            return
        super().prepare_relative_position_bias_table(state_dict, prefix,
                                                     *args, **kwargs)
