"""The DTM self-supervised algorithm (a BEiT-style student, CLIP teacher)."""
import math
from typing import Dict, List, Optional, Union

import torch
from mmpretrain.models import BaseSelfSupervisor
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdtm.registry import MODELS
from .checks import check_dtm_parts


@MODELS.register_module()
class DTM(BaseSelfSupervisor):
    """Dynamic Token Morphing pre-training.

    Data flow: image -> (block-wise mask from the pipeline) -> student
    backbone with mask tokens -> neck (B, N, D) ; image -> frozen teacher
    (B, N, D) ; head: partition from the teacher, group means on both sides,
    loss.

    Args:
        backbone: the student, e.g. ``BEiTPretrainViT`` (``forward(x, mask)``
            returns a tuple of (B, 1 + N, C) features).
        neck: ``DTMNeck`` (or any module mapping the backbone output to
            (B, N, D)); must expose ``out_channels``.
        head: ``DTMHead``.
        target_generator: ``CLIPTargetGenerator``; must expose ``out_dim``.

    Raises at build time, naming the field, when the teacher dimension
    differs from ``neck.out_channels``, when the teacher's patch grid differs
    from the student's, or when a level merges more tokens than exist.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 target_generator: dict,
                 pretrained: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(
            backbone=backbone,
            neck=neck,
            head=head,
            target_generator=target_generator,
            pretrained=pretrained,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        self._check_config()

    @property
    def num_tokens(self) -> int:
        """N: patch tokens of the student."""
        return math.prod(self.backbone.patch_resolution)

    def _check_config(self) -> None:
        check_dtm_parts(self.neck, self.head, self.target_generator,
                        self.num_tokens,
                        student_grid=self.backbone.patch_resolution)

    def extract_feat(self, inputs: Tensor):
        """Backbone features of unmasked images (tuple of (B, 1+N, C))."""
        return self.backbone(inputs, mask=None)

    def loss(self, inputs: Union[Tensor, List[Tensor]],
             data_samples: List[DataSample],
             **kwargs) -> Dict[str, Tensor]:
        """The morphing loss and the groups per level.

        Args:
            inputs: (B, 3, H, W) normalised images (or a one-element list).
            data_samples: each carries ``mask`` (h, w), 1 = masked.

        Returns:
            ``{'loss': scalar, 'groups_l1': ..., ...}``.
        """
        img = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        mask = torch.stack([ds.mask for ds in data_samples]).to(img.device)
        pred = self.neck(self.backbone(img, mask))  # (B, N, D)
        target = self.target_generator(img)  # (B, N, D), no grad
        return self.head.loss_and_stats(pred, target, mask)
