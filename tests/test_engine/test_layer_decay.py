"""Layer decay for any backbone (MMSegmentation's only takes BEiT/MAE)."""
import pytest
from mmengine.optim import build_optim_wrapper
from torch import nn

from tests.tiny_backbones import tiny_downstream


class _Seg(nn.Module):
    """An EncoderDecoder-like model: backbone + decode_head, no
    get_layer_depth of its own."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.decode_head = nn.Linear(64, 3)


class _Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Linear(2, 2)
        self.blocks = nn.ModuleList(nn.Linear(2, 2) for _ in range(3))
        self.norm = nn.LayerNorm(2)


def _lrs(model, scope):
    from mmengine.registry import DefaultScope
    DefaultScope.get_instance(f'ld_{scope}', scope_name=scope)
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05),
        constructor='BackboneLayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.5,
                           custom_keys={'.bias': dict(decay_mult=0.0)})))
    return {g['param_name']: (g['lr'], g['weight_decay'])
            for g in wrapper.optimizer.param_groups}


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmseg'])
def test_depth_from_the_backbone(scope):
    lrs = _lrs(_Seg(tiny_downstream(out_type='featmap')), scope)
    # 2 blocks -> depths 0 (stem) .. 3 (after); lr = 0.5 ** (3 - depth)
    assert lrs['backbone.patch_embed.projection.weight'][0] == 0.125
    assert lrs['backbone.layers.0.attn.qkv.weight'][0] == 0.25
    assert lrs['backbone.layers.1.attn.qkv.weight'][0] == 0.5
    assert lrs['decode_head.weight'] == (1.0, 0.05)
    assert lrs['decode_head.bias'] == (1.0, 0.0)


def test_depth_from_parameter_names():
    lrs = _lrs(_Seg(_Blocks()), 'mmpretrain')
    assert lrs['backbone.patch_embed.weight'][0] == 0.5 ** 4
    assert lrs['backbone.blocks.2.weight'][0] == 0.5
    assert lrs['backbone.norm.weight'][0] == 1.0


def test_backbone_without_blocks_is_refused():
    model = _Seg(nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match='backbone.layers'):
        _lrs(model, 'mmpretrain')
