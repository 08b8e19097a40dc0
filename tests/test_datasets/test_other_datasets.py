"""Fine-tuning configs for iNaturalist and the fine-grained datasets: each
parses, inherits the ImageNet-1K recipe unchanged apart from the classes and
the data, and builds its model; the iNaturalist 2018 config trains two
iterations on a converted, generated dataset."""
import functools
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mmdtm.datasets.inaturalist import convert_inaturalist
from mmdtm.engine import build_runner

from tests.conftest import REPO
from tests.tiny_backbones import TINY_ARCH, tiny_downstream

BENCH = osp.join(REPO, 'configs', 'dtm', 'benchmarks')
PREFIX = 'vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_'
IN1K = osp.join(BENCH, PREFIX + 'in1k.py')
# config suffix: (dataset type, train split, test split, classes)
DATASETS = {
    'inat2018': ('CustomDataset', 'meta/train.txt', 'meta/val.txt', 8142),
    'inat2019': ('CustomDataset', 'meta/train.txt', 'meta/val.txt', 1010),
    'cub': ('CUB', 'train', 'test', 200),
    'stanfordcars': ('StanfordCars', 'train', 'test', 196),
    'fgvcaircraft': ('FGVCAircraft', 'trainval', 'test', 100),
    'flowers102': ('Flowers102', 'trainval', 'test', 102),
    'oxfordiiitpet': ('OxfordIIITPet', 'trainval', 'test', 37),
    'food101': ('Food101', 'train', 'test', 101),
}
# what the dataset dictates; everything else must be the ImageNet recipe
DATA_KEYS = ('train_dataloader', 'val_dataloader', 'test_dataloader',
             'num_classes', 'data_root', 'model')


@functools.lru_cache(maxsize=None)
def _load(path: str) -> Config:
    return Config.fromfile(path)


def _split(dataset) -> str:
    return dataset.get('ann_file') or dataset.get('split')


@pytest.mark.parametrize('name', sorted(DATASETS))
def test_config_is_the_imagenet_recipe_with_other_data(name):
    cfg, base = _load(osp.join(BENCH, PREFIX + name + '.py')), _load(IN1K)
    kind, train_split, test_split, classes = DATASETS[name]
    for loader, split in ((cfg.train_dataloader, train_split),
                          (cfg.val_dataloader, test_split),
                          (cfg.test_dataloader, test_split)):
        assert loader.dataset.type == kind
        assert _split(loader.dataset) == split
        assert 'data/' in loader.dataset.data_root
    assert cfg.train_dataloader.dataset.pipeline == base.train_pipeline
    assert cfg.val_dataloader.dataset.pipeline == base.test_pipeline
    assert cfg.test_dataloader.dataset.pipeline == base.test_pipeline
    for key in ('batch_size', 'sampler', 'num_workers', 'collate_fn'):
        assert cfg.train_dataloader[key] == base.train_dataloader[key]
    assert cfg.model.head.num_classes == classes
    assert cfg.model.data_preprocessor.num_classes == classes
    # the rest of the model and every other top-level field: unchanged
    for part in ('backbone', 'neck', 'train_cfg'):
        assert cfg.model[part] == base.model[part]
    head = {k: v for k, v in cfg.model.head.items() if k != 'num_classes'}
    assert head == {k: v for k, v in base.model.head.items()
                    if k != 'num_classes'}
    other = set(cfg.keys()) | set(base.keys())
    for key in sorted(other - set(DATA_KEYS)):
        assert cfg.get(key) == base.get(key), key


@pytest.mark.parametrize('name', sorted(DATASETS))
def test_config_builds_its_model(name):
    from mmpretrain.registry import MODELS
    cfg = _load(osp.join(BENCH, PREFIX + name + '.py'))
    with torch.device('meta'):  # shapes only
        model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == 'DTMViT'
    assert model.head.fc.out_features == DATASETS[name][3]
    assert model.head.fc.in_features == 768
    assert len(model.backbone.layers) == 12


def _make_inat(root: str, num_classes: int = 3, per_class: int = 2) -> None:
    """Images under root/train_val2018/<cat>/ and official-style JSONs."""
    rng = np.random.default_rng(0)
    splits = {'train': [], 'val': []}
    for cat in range(num_classes):
        for split in splits:
            for i in range(per_class):
                name = f'train_val2018/Aves/{cat}/{split}_{i}.jpg'
                path = osp.join(root, name)
                os.makedirs(osp.dirname(path), exist_ok=True)
                img = np.full((72, 80, 3), 70 * cat, np.uint8)
                img += rng.integers(0, 40, img.shape, dtype=np.uint8)
                Image.fromarray(img).save(path)
                splits[split].append((len(splits[split]) + 1, name, cat))
    for split, items in splits.items():
        data = dict(images=[dict(id=i, file_name=f) for i, f, _ in items],
                    annotations=[dict(id=i, image_id=i, category_id=c)
                                 for i, _, c in items],
                    categories=[dict(id=c, name=f'species {c}')
                                for c in range(num_classes)])
        with open(osp.join(root, f'{split}2018.json'), 'w') as f:
            json.dump(data, f)


def test_inat2018_config_trains_two_iterations(tmp_path):
    root = str(tmp_path / 'inat2018') + '/'
    _make_inat(root)
    convert_inaturalist(root + 'train2018.json', root + 'val2018.json',
                        root + 'meta')
    # a converted tiny backbone: every weight but ln2 (the config's new key)
    backbone = tiny_downstream(img_size=64, out_type='avg_featmap',
                               final_norm=False, use_abs_pos_emb=False,
                               layer_scale_init_value=0.1)
    ckpt = str(tmp_path / 'backbone.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               backbone.state_dict().items()
                               if not k.startswith('ln2.')}}, ckpt)

    cfg = Config.fromfile(osp.join(BENCH, PREFIX + 'inat2018.py'))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.model.backbone.update(arch=dict(TINY_ARCH), img_size=64)
    cfg.model.backbone.init_cfg.checkpoint = ckpt
    cfg.model.head.update(in_channels=64, num_classes=3)
    cfg.model.data_preprocessor.num_classes = 3
    for name in ('train', 'val', 'test'):
        loader = cfg[f'{name}_dataloader']
        loader.update(batch_size=3, num_workers=0, persistent_workers=False,
                      pin_memory=False)
        loader.dataset.update(data_root=root, classes=root +
                              'meta/classes.txt')
        pipe = loader.dataset.pipeline
        if name == 'train':
            pipe[1].scale = 64
        else:
            pipe[1].scale, pipe[2].crop_size = 73, 64
    cfg.optim_wrapper.type = 'OptimWrapper'  # AMP needs an accelerator
    cfg.optim_wrapper.pop('loss_scale')
    cfg.param_scheduler = []
    cfg.train_cfg = dict(by_epoch=False, max_iters=2, val_interval=2)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100)
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    cfg.val_evaluator = cfg.test_evaluator = dict(type='Accuracy',
                                                  topk=(1, ))
    runner = build_runner(cfg)
    runner.model.init_weights()  # what train() does first
    # the converted backbone loads (CheckedPretrained: every weight)
    for key, value in backbone.state_dict().items():
        if not key.startswith('ln2.'):
            torch.testing.assert_close(
                runner.model.backbone.state_dict()[key], value, rtol=0,
                atol=0, msg=key)
    before = runner.model.head.fc.weight.detach().clone()
    runner.train()
    assert runner.iter == 2
    ds = runner.train_dataloader.dataset
    assert len(ds) == 6 and ds.CLASSES == ('species 0', 'species 1',
                                           'species 2')
    assert sorted(ds.get_gt_labels()) == [0, 0, 1, 1, 2, 2]
    assert not torch.equal(runner.model.head.fc.weight.detach(), before)
    val = runner.message_hub.get_scalar('val/accuracy/top1')
    assert 0 <= val.current() <= 100
