"""Layer-wise learning-rate decay for any ViT-like backbone, in any scope.

MMSegmentation's ``LearningRateDecayOptimizerConstructor`` accepts only
backbones whose class name contains BEiT, MAE or ConvNeXt and needs
``num_layers`` spelled out in the config; MMPretrain's
``LearningRateDecayOptimWrapperConstructor`` needs ``get_layer_depth`` on the
*top-level* model, which MMSegmentation's ``EncoderDecoder`` lacks. This
constructor takes the depth function from the model, else from its backbone
(``get_layer_depth(name, 'backbone.')``), else from parameter names
(``backbone.layers.{i}.`` / ``backbone.blocks.{i}.``), and is registered in
MMEngine's root registry so MMPretrain and MMSegmentation configs both find
it.
"""
import re
from typing import Callable, List, Tuple

from mmpretrain.engine.optimizers import \
    LearningRateDecayOptimWrapperConstructor
from torch import nn

from mmdtm.registry import OPTIM_WRAPPER_CONSTRUCTORS

DepthFn = Callable[[str], Tuple[int, int]]
_BLOCK = re.compile(r'^backbone\.(?:layers|blocks)\.(\d+)\.')
_STEM = ('patch_embed', 'cls_token', 'pos_embed', 'mask_token')


def _name_depth_fn(model: nn.Module) -> DepthFn:
    ids = {int(m.group(1)) for name, _ in model.named_parameters()
           for m in [_BLOCK.match(name)] if m}
    if not ids:
        raise TypeError(
            f'layer decay: {type(model).__name__} has no get_layer_depth, '
            f'its backbone has none, and no parameter is named '
            f'backbone.layers.{{i}}.* or backbone.blocks.{{i}}.*')
    total = max(ids) + 3  # stem, blocks, everything after

    def depth(name: str) -> Tuple[int, int]:
        m = _BLOCK.match(name)
        if m:
            return int(m.group(1)) + 1, total
        if name.startswith(tuple(f'backbone.{s}' for s in _STEM)):
            return 0, total
        return total - 1, total

    return depth


def layer_depth_fn(model: nn.Module) -> DepthFn:
    """``name -> (depth, num_depths)`` for every parameter of ``model``."""
    if hasattr(model, 'get_layer_depth'):
        return model.get_layer_depth
    backbone = getattr(model, 'backbone', None)
    if backbone is not None and hasattr(backbone, 'get_layer_depth'):
        return lambda name: backbone.get_layer_depth(name, 'backbone.')
    return _name_depth_fn(model)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class BackboneLayerDecayOptimWrapperConstructor(
        LearningRateDecayOptimWrapperConstructor):
    """Layer-wise lr decay (``paramwise_cfg.layer_decay_rate``) whatever the
    backbone class; decay multipliers as in MMPretrain's constructor
    (``custom_keys``, ``norm_decay_mult``, ``bias_decay_mult``,
    ``flat_decay_mult``). The lr of a parameter at depth d of D is
    ``lr * rate ** (D - 1 - d)``: heads and necks get the full lr.

    Example:
        >>> optim_wrapper = dict(
        ...     optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        ...     constructor='BackboneLayerDecayOptimWrapperConstructor',
        ...     paramwise_cfg=dict(layer_decay_rate=0.65))
    """

    def add_params(self, params: List[dict], module: nn.Module,
                   prefix: str = '', get_layer_depth=None, **kwargs) -> None:
        if get_layer_depth is None and prefix == '':
            get_layer_depth = layer_depth_fn(module)
        super().add_params(params, module, prefix=prefix,
                           get_layer_depth=get_layer_depth, **kwargs)
