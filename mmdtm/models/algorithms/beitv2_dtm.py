"""BEiT v2 with a DTM term added to its own objective."""
import math
from typing import Dict, List

import torch
from mmpretrain.models import BEiT
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdtm.registry import MODELS
from .checks import check_dtm_parts


@MODELS.register_module()
class BEiTV2DTM(BEiT):
    """BEiT v2 plus a weighted DTM term: ``loss_1 + loss_2 + loss_dtm``.

    ``loss_1`` / ``loss_2`` are BEiT v2's own losses, computed exactly as
    MMPretrain's ``BEiT.loss`` does (VQKD codes of the second view, predicted
    from the final and the early-state features). ``loss_dtm`` is DTM on the
    student's final features (``BEiTV2Neck``'s normed patch tokens, the ones
    BEiT v2's head classifies), projected to CLIP space by ``dtm_neck`` and
    compared with a frozen CLIP teacher's targets of the student's view.

    Why a subclass: ``BEiT.loss`` has one target generator (the VQKD
    tokenizer) and one head, builds nothing else, and returns its losses
    without exposing the features, so no config can add a second teacher
    and a second loss term to it. Only ``__init__`` (three more parts) and
    ``loss`` (``BEiT.loss``, then the DTM term) change; everything else
    (backbone, neck, head, tokenizer, ``extract_feat``, data flow) is
    MMPretrain's.

    Args:
        dtm_neck: ``DTMNeck`` mapping (B, N, C) features to (B, N, D); use
            ``num_extra_tokens=0`` (``BEiTV2Neck`` already dropped the class
            token).
        dtm_head: ``DTMHead``; ``dtm_head.loss.loss_weight`` weighs the term.
        dtm_target_generator: ``CLIPTargetGenerator`` (``'patch_tokens'``).
        **kwargs: ``BEiT``'s arguments (``backbone``, ``neck``, ``head``,
            ``target_generator``, ``data_preprocessor``, ...).

    Returns of :meth:`loss`: ``loss_1``, ``loss_2``, ``loss_dtm`` (summed by
    MMEngine) and ``dtm_groups_l{l}`` (logged only).
    """

    def __init__(self, dtm_neck: dict, dtm_head: dict,
                 dtm_target_generator: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        if not self.with_neck:
            raise ValueError('BEiTV2DTM needs neck=dict(type=\'BEiTV2Neck\', '
                             '...) (BEiT v2); BEiT v1 has no neck')
        self.dtm_neck = MODELS.build(dtm_neck)
        self.dtm_head = MODELS.build(dtm_head)
        self.dtm_target_generator = MODELS.build(dtm_target_generator)
        num_tokens = math.prod(self.backbone.patch_resolution)
        check_dtm_parts(self.dtm_neck, self.dtm_head,
                        self.dtm_target_generator, num_tokens, prefix='dtm_',
                        student_grid=self.backbone.patch_resolution)

    def loss(self, inputs: List[Tensor], data_samples: List[DataSample],
             **kwargs) -> Dict[str, Tensor]:
        """BEiT v2's losses (MMPretrain's ``BEiT.loss``, unchanged) and the
        DTM term on the neck's features, caught with a forward hook.

        Args:
            inputs: [(B, 3, H, W) student view, (B, 3, H', W') tokenizer
                view] from ``TwoNormDataPreprocessor``.
            data_samples: each carries ``mask`` (h, w), 1 = masked.
        """
        caught = []
        hook = self.neck.register_forward_hook(
            lambda module, args, out: caught.append(out[0]))
        try:
            losses = super().loss(inputs, data_samples, **kwargs)
        finally:
            hook.remove()
        img = inputs[0]
        mask = torch.stack([ds.mask for ds in data_samples]).to(img.device)
        pred = self.dtm_neck(caught[0])  # (B, N, D)
        target = self.dtm_target_generator(img)  # (B, N, D), no grad
        dtm = self.dtm_head.loss_and_stats(pred, target, mask)
        losses['loss_dtm'] = dtm.pop('loss')
        losses.update({f'dtm_{k}': v for k, v in dtm.items()})
        return losses
