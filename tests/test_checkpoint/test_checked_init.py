"""CheckedPretrained: loads everything or fails listing the keys."""
import os.path as osp

import pytest
import torch
from torch import nn

from mmdtm.checkpoint import (CheckpointMismatchError, dtm_to_backbone,
                              load_backbone_checked)
from mmdtm.checkpoint.cli import (dtm_to_downstream_main,
                                     reference_to_mmdtm_main)

from tests.tiny_backbones import TINY_ARCH, pretrain_state, tiny_downstream


def _converted(student, tmp_path, **kwargs) -> str:
    path = str(tmp_path / 'backbone.pth')
    out = dtm_to_backbone(pretrain_state(student), **kwargs)
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in out.items()}},
               path)
    return path


def _checked(path, **kwargs):
    return dict(type='CheckedPretrained', checkpoint=path, **kwargs)


def test_init_cfg_loads_every_weight_after_submodule_init(student, tmp_path):
    path = _converted(student, tmp_path)
    model = tiny_downstream(init_cfg=_checked(path, new_keys=['ln2.']))
    model.init_weights()  # BEiTAttention re-initialises its tables first
    ckpt = torch.load(path)['state_dict']
    for key, value in model.state_dict().items():
        if key.startswith('ln2.') or 'relative_position_index' in key:
            continue
        assert torch.equal(value, ckpt[f'backbone.{key}']), key
    report = model.last_load_report
    assert report.ok and report.allowed_missing == ['ln2.weight', 'ln2.bias']
    assert len(report.loaded) == len(ckpt)


def test_wrong_prefix_fails_with_the_key_list(student, tmp_path):
    path = _converted(student, tmp_path)
    model = tiny_downstream(
        init_cfg=_checked(path, prefix='model.', new_keys=['ln2.']))
    with pytest.raises(CheckpointMismatchError) as err:
        model.init_weights()
    assert "no key starts with prefix 'model.'" in str(err.value)
    assert 'backbone.layers.0.attn.qkv.weight' in str(err.value)


def test_missing_and_unexpected_keys_fail_with_the_key_list(student,
                                                            tmp_path):
    path = _converted(student, tmp_path)
    ckpt = torch.load(path)
    del ckpt['state_dict']['backbone.layers.1.ffn.layers.1.weight']
    ckpt['state_dict']['backbone.rel_pos_bias.extra'] = torch.zeros(3)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointMismatchError) as err:
        tiny_downstream(init_cfg=_checked(path, new_keys=['ln2.'])
                        ).init_weights()
    assert err.value.missing == ['layers.1.ffn.layers.1.weight']
    assert err.value.unexpected == ['rel_pos_bias.extra']
    assert 'layers.1.ffn.layers.1.weight' in str(err.value)
    # an undeclared new layer is missing too
    with pytest.raises(CheckpointMismatchError, match=r'ln2\.weight'):
        load_backbone_checked(tiny_downstream(), _converted(student, tmp_path))


def test_raw_pretraining_checkpoint_is_refused_naming_the_converter(
        student, tmp_path):
    path = str(tmp_path / 'raw.pth')
    torch.save({'state_dict': pretrain_state(student)}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_backbone_checked(tiny_downstream(), path, new_keys=['ln2.'])
    assert 'mask_token' in err.value.unexpected
    assert 'rel_pos_bias.relative_position_bias_table' in err.value.unexpected
    assert 'dtm_to_downstream.py' in str(err.value)


def test_tables_are_resized_for_another_window(student, tmp_path):
    path = _converted(student, tmp_path)
    model = tiny_downstream(img_size=96, out_type='featmap')  # 6x6 window
    report = load_backbone_checked(model, path)
    assert report.ok
    table = model.layers[0].attn.relative_position_bias_table
    assert table.shape == (11 * 11 + 3, 2)


def test_checked_init_refuses_modules_without_the_mixin(tmp_path):
    from mmengine.model import BaseModule

    class Plain(BaseModule):
        def __init__(self):
            super().__init__(init_cfg=_checked('x.pth'))
            self.fc = nn.Linear(2, 2)

    with pytest.raises(TypeError, match='CheckedInitMixin'):
        Plain().init_weights()


def _downstream_config(tmp_path, **backbone) -> str:
    from mmengine.config import Config
    cfg = dict(model=dict(backbone=dict(
        type='DTMViT', arch=TINY_ARCH, img_size=64,
        init_cfg=dict(type='CheckedPretrained', checkpoint='',
                      prefix='backbone.', new_keys=['ln2.']), **backbone)))
    path = str(tmp_path / 'down_cfg.py')
    Config(cfg).dump(path)
    return path


def test_converter_cli_writes_only_complete_checkpoints(student, tmp_path,
                                                        capsys):
    src = str(tmp_path / 'pre.pth')
    state = pretrain_state(student)
    torch.save({'state_dict': state, 'meta': {}}, src)
    dst = str(tmp_path / 'out.pth')
    cfg = _downstream_config(tmp_path)
    assert dtm_to_downstream_main([src, dst, '--config', cfg]) == 0
    assert 'loaded' in capsys.readouterr().out
    saved = torch.load(dst)['state_dict']
    assert 'backbone.ln1.weight' not in saved  # final_norm=False
    # a block weight missing from the pre-training checkpoint: exit 1,
    # the key named, nothing written
    del state['backbone.layers.1.attn.qkv.weight']
    torch.save({'state_dict': state}, src)
    bad = str(tmp_path / 'bad.pth')
    assert dtm_to_downstream_main([src, bad, '--config', cfg]) == 1
    assert 'layers.1.attn.qkv.weight' in capsys.readouterr().out
    assert not osp.exists(bad)
    assert reference_to_mmdtm_main([src, bad]) == 1  # not a reference ckpt
    assert 'unmapped keys' in capsys.readouterr().err


def test_large_files_load_with_a_progress_line(student, tmp_path, capsys):
    from mmdtm.checkpoint import load_checkpoint_file
    path = _converted(student, tmp_path)
    plain = load_checkpoint_file(path)
    shown = load_checkpoint_file(path, progress_min_bytes=0)
    assert 'load backbone.pth' in capsys.readouterr().err
    assert plain['state_dict'].keys() == shown['state_dict'].keys()
    for key, value in plain['state_dict'].items():
        assert torch.equal(value, shown['state_dict'][key])


def test_a_second_init_weights_call_does_not_reload(student, tmp_path):
    path = _converted(student, tmp_path)
    model = tiny_downstream(init_cfg=_checked(path, new_keys=['ln2.']))
    model.init_weights()
    with torch.no_grad():
        model.cls_token.fill_(3.0)  # as if trained
    model.init_weights()
    assert torch.all(model.cls_token == 3.0)
