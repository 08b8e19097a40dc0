"""The downstream DTM ViT: MMPretrain's ``BEiTViT`` with checked loading and
one drop path per residual branch."""
from mmpretrain.models.backbones.beit import BEiTViT

from mmdtm.registry import MODELS
from mmdtm.utils.checked_loading import CheckedInitMixin
from .drop_path import drop_path_once_per_branch


@MODELS.register_module()
class DTMViT(CheckedInitMixin, BEiTViT):
    """BEiT-style ViT for fine-tuning, linear probing and segmentation.

    MMPretrain's ``BEiTViT`` (per-block relative position bias, layer scale,
    qv bias; ``forward(x)`` returns a tuple of features shaped by
    ``out_type``: (B, C) for ``'avg_featmap'``, (B, C, H, W) for
    ``'featmap'``) with two changes:

    - ``init_cfg=dict(type='CheckedPretrained', ...)``: the pre-trained
      weights are loaded after every other initialisation and the load
      fails, listing the keys, unless it covers the whole backbone (see
      :func:`mmdtm.utils.load_backbone_checked`);
    - one ``DropPath`` per residual branch, as the reference's fine-tuning
      model (the parent drops the FFN branch twice; see
      :mod:`mmdtm.models.backbones.drop_path`). The state dict is the
      parent's.

    MMSegmentation configs use it as ``type='mmpretrain.DTMViT'`` with
    ``out_type='featmap'``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        drop_path_once_per_branch(self.layers)
