"""The whole transfer chain on CPU at toy size, through the real configs:
DTM pre-training -> conversion -> ImageNet-style fine-tuning (top-1) and
ADE20K-style UPerNet training (mIoU)."""
import copy
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from PIL import Image

from mmdtm.checkpoint import CheckpointMismatchError, resize_rel_pos_table
from mmdtm.checkpoint.cli import dtm_to_downstream_main
from mmdtm.engine import build_runner

from tests.conftest import REPO, make_image_folder, toy_config
from tests.tiny_backbones import TINY_ARCH

FT_CFG = osp.join(REPO, 'configs', 'dtm', 'benchmarks',
                  'vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py')
SEG_CFG = osp.join(REPO, 'configs', 'ade20k',
                   'dtm-vit-base_upernet_8xb2-amp-160k_ade20k-512x512.py')
NUM_CLASSES = 4
# 4 blocks: UPerNet's Feature2Pyramid takes exactly 4 feature maps
ARCH = dict(TINY_ARCH, num_layers=4)


def _has_mmcv_ops() -> bool:
    try:
        import mmcv._ext  # noqa: F401
        return True
    except ImportError:
        return False


def make_imagenet_folder(root: str, num_per_class: int = 4) -> str:
    """``root/{train,val}/class_k/*.jpg``, one colour per class."""
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for k in range(NUM_CLASSES):
            folder = osp.join(root, split, f'class_{k}')
            os.makedirs(folder, exist_ok=True)
            for i in range(num_per_class):
                img = np.full((72, 72, 3), 60 * k, np.uint8)
                img += rng.integers(0, 40, img.shape, dtype=np.uint8)
                Image.fromarray(img).save(osp.join(folder, f'{i}.jpg'))
    return root


def make_ade_folder(root: str, num: int = 4, size=(96, 128)) -> str:
    """ADEChallengeData2016-style folders: jpg images, png label maps with
    0 = "other" (ignored after reduce_zero_label) and 1..150 = classes."""
    rng = np.random.default_rng(1)
    h, w = size
    for split in ('training', 'validation'):
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        for i in range(num):
            label = np.zeros((h, w), np.uint8)
            label[:, w // 3:] = 1 + i % 150
            label[h // 2:, 2 * w // 3:] = 150
            img = np.stack([label * 1.5, 255 - label, label % 7 * 30], -1)
            img = (img + rng.integers(0, 20, img.shape)).clip(0, 255)
            Image.fromarray(img.astype(np.uint8)).save(
                osp.join(root, 'images', split, f'ade_{i}.jpg'))
            Image.fromarray(label).save(
                osp.join(root, 'annotations', split, f'ade_{i}.png'))
    return root


def _pretrain(tmp_path) -> str:
    data = make_image_folder(str(tmp_path / 'pre_data'), num=4)
    cfg = toy_config(str(tmp_path / 'pre'), data, max_iters=2,
                     **{'train_dataloader.batch_size': 2,
                        'model.backbone.arch.num_layers': 4,
                        'default_hooks.checkpoint.interval': 2})
    build_runner(cfg).train()
    return osp.join(cfg.work_dir, 'iter_2.pth')


def _shrink_classification(cfg: Config, data: str, ckpt: str, work: str):
    cfg.work_dir = work
    bb = cfg.model.backbone
    bb.arch, bb.img_size = dict(ARCH), 64
    bb.init_cfg.checkpoint = ckpt
    cfg.model.head.in_channels = 64
    cfg.model.head.num_classes = NUM_CLASSES
    cfg.model.data_preprocessor.num_classes = NUM_CLASSES
    cfg.train_dataloader.dataset.pipeline[1].scale = 64
    cfg.val_dataloader.dataset.pipeline[1].scale = 73
    cfg.val_dataloader.dataset.pipeline[2].crop_size = 64
    for name in ('train', 'val'):
        loader = cfg[f'{name}_dataloader']
        loader.update(batch_size=4, num_workers=0, persistent_workers=False,
                      pin_memory=False)
        loader.dataset.update(type='CustomDataset', data_root=data,
                              data_prefix=name)
        loader.dataset.pop('split')
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = cfg.test_evaluator = dict(type='Accuracy', topk=(1,))
    cfg.optim_wrapper.type = 'OptimWrapper'  # AMP needs an accelerator
    cfg.optim_wrapper.pop('loss_scale')
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100)
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    return cfg


def _shrink_segmentation(cfg: Config, data: str, ckpt: str, work: str):
    crop = (96, 96)  # a 6x6 window: the 4x4 pre-training tables are resized
    cfg.work_dir = work
    cfg.crop_size = crop
    model = cfg.model
    model.data_preprocessor.size = crop
    bb = model.backbone
    bb.update(arch=dict(ARCH), img_size=crop[0], out_indices=[0, 1, 2, 3])
    bb.init_cfg.checkpoint = ckpt
    model.neck.embed_dim = 64
    model.decode_head.update(in_channels=[64] * 4, channels=16,
                             pool_scales=(1, 2))
    model.auxiliary_head.update(in_channels=64, channels=8)
    model.test_cfg = dict(mode='slide', crop_size=crop, stride=(64, 64))
    pipe = cfg.train_dataloader.dataset.pipeline
    pipe[2].scale = (256, 96)
    pipe[3].crop_size = crop
    cfg.val_dataloader.dataset.pipeline[1].scale = (256, 96)
    for name in ('train', 'val'):
        loader = cfg[f'{name}_dataloader']
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset.data_root = data
    cfg.test_dataloader = cfg.val_dataloader
    cfg.optim_wrapper.type = 'OptimWrapper'
    cfg.optim_wrapper.pop('loss_scale')
    cfg.param_scheduler = []
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2,
                         val_interval=2)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.visualization = dict(type='SegVisualizationHook')
    cfg.env_cfg.update(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
    return cfg


def _convert(src: str, cfg: Config, tmp_path, name: str) -> str:
    cfg_path = str(tmp_path / f'{name}_cfg.py')
    cfg.dump(cfg_path)
    dst = str(tmp_path / f'{name}_backbone.pth')
    assert dtm_to_downstream_main([src, dst, '--config', cfg_path]) == 0
    return dst


def _assert_equals_pretrained(backbone, pre_state: dict) -> int:
    """Every downstream backbone weight equals its pre-trained source
    (tables: per-block + shared, resized to the downstream window)."""
    shared = pre_state['backbone.rel_pos_bias.relative_position_bias_table']
    checked = 0
    for key, value in backbone.state_dict().items():
        if key.startswith('ln2.') or 'relative_position_index' in key:
            continue
        expected = pre_state[f'backbone.{key}']
        if key.endswith('relative_position_bias_table'):
            expected = resize_rel_pos_table(
                expected + shared, backbone.patch_resolution)
        torch.testing.assert_close(value, expected, rtol=0, atol=0,
                                   msg=key)
        checked += 1
    return checked


def _build_and_init(runner):
    runner.model.init_weights()  # what runner.train() does first
    return runner.model.backbone


def test_pretrain_convert_finetune_segment(tmp_path, checkpoint_loading):
    pre_ckpt = _pretrain(tmp_path)
    pre_state = torch.load(pre_ckpt, map_location='cpu')['state_dict']

    # ImageNet-style fine-tuning through the ViT-B config, shrunk
    cls_data = make_imagenet_folder(str(tmp_path / 'imagenet'))
    cls_cfg = _shrink_classification(Config.fromfile(FT_CFG), cls_data, '',
                                     str(tmp_path / 'cls'))
    cls_ckpt = _convert(pre_ckpt, cls_cfg, tmp_path, 'cls')
    cls_cfg.model.backbone.init_cfg.checkpoint = cls_ckpt

    # the loader refuses a checkpoint with a wrong prefix or missing keys
    bad = copy.deepcopy(cls_cfg)
    bad.work_dir = str(tmp_path / 'bad')
    bad.model.backbone.init_cfg.prefix = 'model.backbone.'
    with pytest.raises(CheckpointMismatchError, match='no key starts with'):
        _build_and_init(build_runner(bad))
    DefaultScope._instance_dict.clear()
    state = torch.load(cls_ckpt)
    del state['state_dict']['backbone.layers.0.attn.proj.weight']
    torch.save(state, str(tmp_path / 'missing.pth'))
    bad.model.backbone.init_cfg.update(
        prefix='backbone.', checkpoint=str(tmp_path / 'missing.pth'))
    with pytest.raises(CheckpointMismatchError) as err:
        _build_and_init(build_runner(bad))
    assert err.value.missing == ['layers.0.attn.proj.weight']
    DefaultScope._instance_dict.clear()

    runner = build_runner(cls_cfg)
    assert _assert_equals_pretrained(_build_and_init(runner), pre_state) > 60
    runner.train()
    metrics = runner.val_loop.run()
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0
    DefaultScope._instance_dict.clear()

    # ADE20K-style UPerNet through the ViT-B config, shrunk
    if not _has_mmcv_ops():
        pytest.skip('import mmseg.models needs mmcv built with ops')
    ade = make_ade_folder(str(tmp_path / 'ade'))
    seg_cfg = _shrink_segmentation(Config.fromfile(SEG_CFG), ade, '',
                                   str(tmp_path / 'seg'))
    seg_ckpt = _convert(pre_ckpt, seg_cfg, tmp_path, 'seg')
    seg_cfg.model.backbone.init_cfg.checkpoint = seg_ckpt
    runner = build_runner(seg_cfg)
    assert _assert_equals_pretrained(_build_and_init(runner), pre_state) > 60
    runner.train()
    metrics = runner.val_loop.run()
    assert 0.0 <= metrics['mIoU'] <= 100.0
    # reduce_zero_label: raw 0 ("other") -> 255 (ignored), 1..150 -> 0..149
    gt = runner.val_loop.dataloader.dataset[0]['data_samples'].gt_sem_seg
    values = set(gt.data.unique().tolist())
    assert {149, 255} <= values <= set(range(150)) | {255}
