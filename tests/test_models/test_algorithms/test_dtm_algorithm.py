import copy
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from tests.conftest import TOY_CFG


def build(**changes):
    cfg = Config.fromfile(TOY_CFG)
    model_cfg = copy.deepcopy(cfg.model)
    for key, value in changes.items():
        node = model_cfg
        *path, last = key.split('.')
        for p in path:
            node = node[p]
        node[last] = value
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def batch(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, 64, 64, generator=g)
    samples = []
    for _ in range(b):
        ds = DataSample()
        ds.set_field(torch.rand(4, 4, generator=g) < 0.4, 'mask')
        samples.append(ds)
    return x, samples


def test_loss_dict_and_gradients():
    model = build()
    model.train()
    x, samples = batch()
    out = model(x, samples, mode='loss')
    assert set(out) == {'loss', 'groups_l1', 'groups_l2'}
    assert 1 <= out['groups_l1'] <= 16
    out['loss'].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values()), [
        n for n, g in grads.items() if g is None]
    assert grads['backbone.mask_token'].abs().sum() > 0
    assert grads['neck.proj.weight'].abs().sum() > 0
    # the teacher is frozen, outside the optimizer and the checkpoint
    assert not any(p.requires_grad
                   for p in model.target_generator.teacher.parameters())
    assert not any(k.startswith('target_generator')
                   for k in model.state_dict())
    assert not any(n.startswith('target_generator')
                   for n, _ in model.named_parameters())
    assert not model.target_generator.teacher.training


def test_mask_changes_the_student_input_only():
    model = build()
    model.eval()
    x, samples = batch()
    teacher_before = model.target_generator(x)
    for ds in samples:
        ds.mask = torch.ones_like(ds.mask)
    pred_all_masked = model.neck(model.backbone(x, torch.stack(
        [ds.mask for ds in samples])))
    for ds in samples:
        ds.mask = torch.zeros_like(ds.mask)
    pred_none_masked = model.neck(model.backbone(x, torch.stack(
        [ds.mask for ds in samples])))
    assert not torch.allclose(pred_all_masked, pred_none_masked)
    torch.testing.assert_close(model.target_generator(x), teacher_before)


def test_extract_feat_and_tensor_mode():
    model = build()
    feats = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert feats[-1].shape == (1, 17, 64)


def test_both_relative_position_biases():
    model = build()
    assert model.backbone.rel_pos_bias is not None
    assert model.backbone.layers[0].attn.use_rel_pos_bias
    sd = model.state_dict()
    assert 'backbone.rel_pos_bias.relative_position_bias_table' in sd
    assert 'backbone.layers.0.attn.relative_position_bias_table' in sd
    # a reload keeps both tables as they were (no shared->block expansion)
    clone = build()
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p))
    clone.load_state_dict(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(clone.state_dict()[k], v), k


@pytest.mark.parametrize('changes,field', [
    ({'neck.out_channels': 48}, 'neck.out_channels=48'),
    ({'head.loss.max_merge': [17, 16]}, r'head.loss.max_merge\[0\]=17'),
    ({'head.loss.max_iters': [4]}, 'max_iters'),
    ({'head.loss.distance': 'huber'}, 'distance'),
    ({'backbone.img_size': 96}, 'patches'),
])
def test_invalid_config_raises_at_build(changes, field):
    with pytest.raises(ValueError, match=field):
        build(**changes)


def test_registry_names_via_custom_imports(tmp_path):
    """A fresh interpreter that never imports mmdtm itself builds DTM from a
    config that only lists it in custom_imports."""
    cfg_file = tmp_path / 'uses_mmdtm.py'
    cfg_file.write_text(
        f"_base_ = ['{TOY_CFG}']\n"
        "custom_imports = dict(imports=['mmdtm'], "
        "allow_failed_imports=False)\n")
    code = (
        'import sys\n'
        'from mmengine.config import Config\n'
        'from mmengine.registry import init_default_scope\n'
        'from mmpretrain.registry import MODELS\n'
        'assert "mmdtm" not in sys.modules\n'
        f'cfg = Config.fromfile({str(cfg_file)!r})\n'
        'init_default_scope("mmpretrain")\n'
        'print(type(MODELS.build(cfg.model)).__name__)\n'
        'for name in ("DTMLoss", "DTMHead", "DTMNeck", '
        '"CLIPTargetGenerator", "DTMPretrainViT"):\n'
        '    assert MODELS.get(name) is not None, name\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == 'DTM'
