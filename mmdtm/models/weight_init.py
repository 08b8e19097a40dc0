"""``init_cfg=dict(type='Scale', layer=..., scale=...)``: multiply the
weights and biases another initializer has drawn, as the reference's
``init_scale`` does for the classification head."""
from mmengine.model.weight_init import BaseInit
from torch import nn

from mmdtm.registry import WEIGHT_INITIALIZERS
from mmdtm.upstream import record_init_info


@WEIGHT_INITIALIZERS.register_module(name='Scale')
class ScaleInit(BaseInit):
    """Multiply the ``weight`` and ``bias`` of the matching layers by
    ``scale``; meant to follow another initializer in an ``init_cfg`` list.

    The reference fine-tuning model draws its head from N(0, 0.02) and then
    multiplies weight and bias by ``init_scale`` (0.001):

    Example:
        >>> init_cfg = [dict(type='TruncNormal', layer='Linear', std=0.02),
        ...             dict(type='Scale', layer='Linear', scale=0.001)]

    Args:
        scale: the factor.
        layer: layer type name(s) to scale (or none: the whole module).
    """

    def __init__(self, scale: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)

    def _scale(self, m: nn.Module) -> None:
        for name in ('weight', 'bias'):
            param = getattr(m, name, None)
            if isinstance(param, nn.Parameter):
                param.data.mul_(self.scale)

    def __call__(self, module: nn.Module) -> None:

        def init(m: nn.Module) -> None:
            if self.wholemodule:
                self._scale(m)
            elif set(self.layer) & {c.__name__ for c in type(m).__mro__}:
                self._scale(m)

        module.apply(init)
        record_init_info(module, self.init_info())

    def init_info(self) -> str:
        """What this initialiser did, for MMEngine's init log."""
        return f'{type(self).__name__}: scale={self.scale}'
