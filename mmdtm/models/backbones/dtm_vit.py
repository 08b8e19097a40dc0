"""The DTM student: MMPretrain's BEiT pre-training ViT, with both kinds of
relative position bias the reference uses."""
from mmpretrain.models.backbones.beit import RelativePositionBias
from mmpretrain.models.selfsup.beit import BEiTPretrainViT

from mmdtm.registry import MODELS


@MODELS.register_module()
class DTMPretrainViT(BEiTPretrainViT):
    """BEiT-style pre-training ViT (mask token, layer scale) for DTM.

    MMPretrain's ``BEiTPretrainViT`` allows either a shared relative position
    bias or per-block ones; the DTM reference uses both (a shared bias added
    to every block's own). This subclass allows both at once and otherwise
    behaves exactly like its parent; ``forward(x, mask)`` returns a tuple of
    (B, 1 + N, C) features.

    Args:
        use_rel_pos_bias: per-block relative position bias tables.
        use_shared_rel_pos_bias: one shared table added in every block.
        **kwargs: the remaining ``BEiTPretrainViT`` arguments.
    """

    def __init__(self,
                 use_rel_pos_bias: bool = True,
                 use_shared_rel_pos_bias: bool = True,
                 **kwargs) -> None:
        super().__init__(
            use_rel_pos_bias=use_rel_pos_bias,
            use_shared_rel_pos_bias=(use_shared_rel_pos_bias
                                     and not use_rel_pos_bias),
            **kwargs)
        if use_shared_rel_pos_bias and use_rel_pos_bias:
            self.rel_pos_bias = RelativePositionBias(
                window_size=self.patch_resolution,
                num_heads=self.arch_settings['num_heads'])

    def _prepare_relative_position_bias_table(self, state_dict, prefix, *args,
                                              **kwargs):
        """Keep a checkpoint's shared table as it is when this model has one.

        The parent copies a shared table into every block when the model has
        per-block tables (a BEiT fine-tuning convention); with both kinds in
        the model that would overwrite the per-block tables on resume.
        """
        if self.rel_pos_bias is not None:
            return
        super()._prepare_relative_position_bias_table(state_dict, prefix,
                                                      *args, **kwargs)
