"""tools/test.py evaluates a checkpoint with a config's test loop."""
import pickle

import pytest
import torch
from mmengine.config import Config

from mmdtm.registry import MODELS

from ..conftest import TOY_CFG, make_image_folder
from ._load import load_tool

tool = load_tool('test')


def _classifier_cfg(data_root: str) -> Config:
    return Config(dict(
        default_scope='mmpretrain',
        custom_imports=dict(imports=['mmdtm'], allow_failed_imports=False),
        model=dict(
            type='ImageClassifier',
            data_preprocessor=dict(num_classes=2, mean=[127.5] * 3,
                                   std=[127.5] * 3, to_rgb=True),
            backbone=dict(
                type='VisionTransformer', img_size=32, patch_size=16,
                arch=dict(embed_dims=32, num_layers=1, num_heads=2,
                          feedforward_channels=64)),
            head=dict(type='LinearClsHead', num_classes=2, in_channels=32,
                      loss=dict(type='CrossEntropyLoss'))),
        test_dataloader=dict(
            batch_size=4, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(type='CustomDataset', data_root=data_root,
                         pipeline=[dict(type='LoadImageFromFile'),
                                   dict(type='Resize', scale=32),
                                   dict(type='PackInputs')])),
        test_evaluator=dict(type='Accuracy', topk=(1, )),
        test_cfg=dict()))


def test_test_py_loads_the_checkpoint_and_dumps(tmp_path):
    data = tmp_path / 'data'
    make_image_folder(str(data / 'a'), num=6, size=40, seed=1)
    make_image_folder(str(data / 'b'), num=2, size=40, seed=2)
    cfg = _classifier_cfg(str(data))
    cfg_file = str(tmp_path / 'cls.py')
    cfg.dump(cfg_file)
    model = MODELS.build(cfg.model)
    with torch.no_grad():  # the checkpoint always predicts class 0 ('a')
        model.head.fc.weight.zero_()
        model.head.fc.bias.copy_(torch.tensor([5.0, -5.0]))
    ckpt = str(tmp_path / 'cls.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    out = str(tmp_path / 'preds.pkl')
    metrics = tool.main([cfg_file, ckpt, '--work-dir', str(tmp_path / 'w'),
                         '--out', out])
    assert metrics['accuracy/top1'] == pytest.approx(75.0)  # 6 of 8
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 8
    assert all(int(p['pred_label'][0]) == 0 for p in preds)


def test_pretraining_config_has_nothing_to_test(tmp_path):
    with pytest.raises(KeyError, match='test_dataloader'):
        tool.main([TOY_CFG, str(tmp_path / 'x.pth')])
    with pytest.raises(ValueError, match='.pkl'):
        tool.merge_args(Config(dict(test_dataloader=1, test_evaluator=1,
                                    test_cfg=1)),
                        tool.parse_args([TOY_CFG, 'x.pth', '--out', 'a.json']))
