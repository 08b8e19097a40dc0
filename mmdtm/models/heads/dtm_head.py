"""The DTM head: wraps :class:`DTMLoss` behind MMPretrain's head API."""
from typing import Dict, Optional

from mmengine.model import BaseModule
from torch import Tensor

from mmdtm.registry import MODELS


@MODELS.register_module()
class DTMHead(BaseModule):
    """Computes the morphing loss from predictions and teacher targets.

    ``loss(pred, target, mask)`` has the signature MMPretrain's MIM heads use
    (EVA, MAE, MILAN), so the head drops into their configs.

    Args:
        loss: config of the loss, ``dict(type='DTMLoss', ...)``.
    """

    def __init__(self, loss: dict = dict(type='DTMLoss'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.loss_module = MODELS.build(loss)

    def check_num_tokens(self, num_tokens: int) -> None:
        """Raise ``ValueError`` if the loss cannot morph N tokens."""
        self.loss_module.check_num_tokens(num_tokens)

    def loss_and_stats(self, pred: Tensor, target: Tensor,
                       mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """``{'loss': ..., 'groups_l1': ...}`` for (B, N, D) inputs."""
        loss, stats = self.loss_module.compute(pred, target, mask)
        return dict(loss=loss, **stats)

    def loss(self, pred: Tensor, target: Tensor,
             mask: Optional[Tensor] = None) -> Tensor:
        """The scalar loss for (B, N, D) predictions and targets."""
        return self.loss_and_stats(pred, target, mask)['loss']
