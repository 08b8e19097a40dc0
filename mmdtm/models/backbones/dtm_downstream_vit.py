"""The downstream DTM ViT: MMPretrain's ``BEiTViT`` with checked loading."""
from mmpretrain.models.backbones.beit import BEiTViT

from mmdtm.registry import MODELS
from mmdtm.utils.checked_loading import CheckedInitMixin


@MODELS.register_module()
class DTMViT(CheckedInitMixin, BEiTViT):
    """BEiT-style ViT for fine-tuning, linear probing and segmentation.

    Exactly MMPretrain's ``BEiTViT`` (per-block relative position bias,
    layer scale, qv bias; ``forward(x)`` returns a tuple of features shaped
    by ``out_type``: (B, C) for ``'avg_featmap'``, (B, C, H, W) for
    ``'featmap'``), plus ``init_cfg=dict(type='CheckedPretrained', ...)``:
    the pre-trained weights are loaded after every other initialisation and
    the load fails, listing the keys, unless it covers the whole backbone
    (see :func:`mmdtm.utils.load_backbone_checked`). MMSegmentation configs
    use it as ``type='mmpretrain.DTMViT'`` with ``out_type='featmap'``.
    """
