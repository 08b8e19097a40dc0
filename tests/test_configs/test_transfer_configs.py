"""The shipped transfer configs: checked loading everywhere, and a full-size
ViT-B pre-training student converts into exactly what the ViT-B fine-tuning
and ADE20K backbones need."""
import functools
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmdtm.checkpoint import compare_state_dict, dtm_to_backbone
from mmdtm.checkpoint.cli import _checked_init_cfg, build_module

from tests.conftest import REPO

CONFIGS = sorted(
    glob.glob(osp.join(REPO, 'configs', 'dtm', 'benchmarks', '*.py')) +
    glob.glob(osp.join(REPO, 'configs', 'ade20k', '*.py')))


@functools.lru_cache(maxsize=None)
def _load(path: str) -> Config:
    """Parse once (an mmseg:: base costs seconds); read-only below."""
    return Config.fromfile(path)


PRETRAIN = osp.join(REPO, 'configs', 'dtm',
                    'dtm_beit-base-p16_8xb256-amp-coslr-300e_in1k.py')


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_every_transfer_config_loads_with_checks(path):
    cfg = _load(path)
    backbone = cfg.model.backbone
    assert backbone.type.split('.')[-1] == 'DTMViT'
    init = _checked_init_cfg(backbone)
    assert init and init['checkpoint'].startswith('work_dirs/dtm/')
    assert backbone.use_rel_pos_bias and not backbone.use_shared_rel_pos_bias
    if 'linear' not in path:
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate < 1
    if 'ade20k' in path:
        assert 'mmdtm' in cfg.custom_imports.imports
        assert cfg.optim_wrapper.constructor == \
            'LeanLayerDecayOptimWrapperConstructor'
        assert cfg.model.test_cfg.mode == 'slide'
        assert cfg.train_dataloader.dataset.pipeline[1].reduce_zero_label
        assert cfg.val_evaluator.type == 'IoUMetric'
        assert cfg.train_cfg.max_iters == 160000
        assert cfg.model.decode_head.num_classes == 150


def test_full_size_vit_b_converts_for_finetuning_and_ade20k():
    with torch.device('meta'):  # shapes only: no memory, no initialisation
        _check_full_size_vit_b()


def _check_full_size_vit_b():
    student = build_module(_load(PRETRAIN).model.backbone)
    state = {f'backbone.{k}': v for k, v in student.state_dict().items()}
    del student
    names = ('vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py',
             'vit-base-p16_dtm-pre_8xb2048-linear-coslr-90e_in1k.py',
             'dtm-vit-base_upernet_8xb2-amp-160k_ade20k-512x512.py')
    for name in names:
        path = [p for p in CONFIGS if p.endswith(name)][0]
        bb_cfg = _load(path).model.backbone
        model = build_module(bb_cfg)
        out = dtm_to_backbone(state, keep_final_norm=model.final_norm,
                              window=model.patch_resolution)
        init = _checked_init_cfg(bb_cfg)
        report = compare_state_dict(model.state_dict(), out,
                                    init.get('new_keys', ()))
        assert report.ok, report.summary(name)
        # cls token, patch embedding (2), 12 blocks of 16 tensors, and the
        # final norm (2) where the config uses it (linear probing)
        expected = 3 + 12 * 16 + (2 if 'linear' in name else 0)
        assert len(report.loaded) == len(out) == expected


def test_full_size_ade20k_model_builds_with_layer_decay():
    """UPerNet + ViT-B/16 at 512 in MMSegmentation's scope (meta device):
    the backbone is DTMViT, and the lr decays over its 12 blocks."""
    pytest.importorskip('mmcv._ext', reason='mmseg.models needs mmcv ops')
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    path = [p for p in CONFIGS if 'vit-base_upernet' in p][0]
    cfg = _load(path)
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
        wrapper_cfg = dict(cfg.optim_wrapper, type='OptimWrapper')
        wrapper_cfg.pop('loss_scale')
        groups = build_optim_wrapper(model, wrapper_cfg).optimizer.param_groups
    assert type(model.backbone).__name__ == 'DTMViT'
    assert model.backbone.patch_resolution == (32, 32)
    scale = {name: g['lr_scale'] for g in groups for name in g['param_names']}
    rate = cfg.optim_wrapper.paramwise_cfg.layer_decay_rate  # 0.75, BEiT v2
    assert scale['backbone.cls_token'] == pytest.approx(rate ** 13)
    assert scale['backbone.layers.11.attn.qkv.weight'] == pytest.approx(rate)
    assert scale['decode_head.conv_seg.weight'] == 1.0
