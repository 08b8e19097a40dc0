import open_clip
import pytest
import torch

from mmdtm.models import CLIPTargetGenerator
from mmdtm.models.target_generators.clip_generator import (CLIP_MEAN,
                                                           CLIP_STD,
                                                           IMAGENET_MEAN,
                                                           IMAGENET_STD)

from tests.conftest import TINY_CLIP


def tiny(**kw):
    kw.setdefault('pretrained', None)
    return CLIPTargetGenerator('ViT-B-16', model_cfg=TINY_CLIP, **kw)


def test_targets_are_projected_patch_tokens():
    gen = tiny()
    x = torch.randn(2, 3, 64, 64)
    out = gen(x)
    assert out.shape == (2, 16, 32) and out.dtype == torch.float32
    assert gen.out_dim == 32 and gen.num_patches == 16
    visual = gen.teacher
    # independent path: forward_intermediates gives the same last tokens
    _, tokens = visual(x)
    torch.testing.assert_close(out, tokens @ visual.proj)
    assert tokens.shape == (2, 16, 64)
    unprojected = tiny(projected=False)
    assert unprojected(x).shape == (2, 16, 64)
    assert unprojected.out_dim == 64


def test_frozen_for_real():
    gen = tiny()
    assert all(not p.requires_grad for p in gen.teacher.parameters())
    assert list(gen.parameters()) == []
    assert len(gen.state_dict()) == 0
    gen.train()
    assert not gen.teacher.training
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    out = gen(x)
    assert not out.requires_grad
    # usable in autograd even though computed under inference mode
    w = torch.ones(1, requires_grad=True)
    torch.nn.functional.smooth_l1_loss(out * w, out.detach() + 1).backward()
    assert w.grad is not None


def test_same_random_teacher_every_build():
    a, b = tiny(), tiny()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(a(x), b(x))
    state = torch.random.get_rng_state()
    tiny(random_init_seed=1)
    assert torch.equal(state, torch.random.get_rng_state())


def test_device_moves_follow_the_module():
    gen = tiny()
    gen.to(torch.float64)
    assert gen.teacher.proj.dtype == torch.float64
    gen.float()
    assert gen.teacher.proj.dtype == torch.float32


def test_clip_normalisation():
    gen = tiny(input_norm='clip')
    raw = torch.rand(1, 3, 64, 64) * 255
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    student_view = (raw - mean) / std
    clip_view = (raw / 255 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    plain = tiny()
    torch.testing.assert_close(gen(student_view), plain(clip_view),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('dtype', ['bf16', 'fp32'])
def test_autocast_option(dtype):
    gen = tiny(autocast_dtype=dtype)
    out = gen(torch.randn(1, 3, 64, 64))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_loads_a_local_weights_file(tmp_path):
    torch.manual_seed(123)
    model = open_clip.create_model('ViT-B-16', pretrained=None, **TINY_CLIP)
    full = tmp_path / 'clip_full.pt'
    torch.save(model.state_dict(), full)
    gen = tiny(pretrained=str(full))
    for k, v in model.visual.state_dict().items():
        assert torch.equal(gen.teacher.state_dict()[k], v), k
    visual_only = tmp_path / 'visual.pth'
    torch.save({f'visual.{k}': v for k, v in
                model.visual.state_dict().items()}, visual_only)
    gen = tiny(pretrained=str(visual_only))
    assert torch.equal(gen.teacher.proj, model.visual.proj)


def test_bad_weights_fail_at_build_naming_the_path(tmp_path):
    missing = tmp_path / 'nope' / 'clip.bin'
    with pytest.raises(FileNotFoundError, match='nope/clip.bin'):
        tiny(pretrained=str(missing))
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'not a checkpoint at all')
    with pytest.raises(RuntimeError, match='garbage.pt'):
        tiny(pretrained=str(garbage))
    wrong = tmp_path / 'wrong.pt'
    torch.save({'visual.proj': torch.zeros(3, 3)}, wrong)
    with pytest.raises(RuntimeError, match='(?s)wrong.pt.*shape mismatch'):
        tiny(pretrained=str(wrong))
    partial = tmp_path / 'partial.pt'
    torch.save({'visual.proj': torch.zeros(64, 32)}, partial)
    with pytest.raises(RuntimeError, match='(?s)partial.pt.*missing keys'):
        tiny(pretrained=str(partial))


def test_unknown_tag_offline_gives_actionable_error():
    with pytest.raises(RuntimeError, match="pretrained='/path/to/that/file'"):
        tiny(pretrained='no-such-tag')


def test_invalid_options():
    with pytest.raises(ValueError, match='input_norm'):
        tiny(input_norm='mine')
    with pytest.raises(ValueError, match='autocast_dtype'):
        tiny(autocast_dtype='int8')
    with pytest.raises(ValueError, match='model_name'):
        CLIPTargetGenerator('ViT-Nope', pretrained=None)
