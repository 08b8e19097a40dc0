"""Any teacher: open_clip timm towers (SigLIP-style, EVA02), plain timm ViTs
(DINOv2), the towers that are refused, grid matching and the tag guard.

Small random models throughout: open_clip timm towers are shrunk by pointing
``vision_cfg.timm_model_name`` at a small timm model of the family (open_clip
passes no size arguments to timm), plain timm models by timm kwargs.
"""
import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from mmdtm.checkpoint import CheckpointMismatchError
from mmdtm.models import (CLIPTargetGenerator, CLIPTokensAttentionGenerator,
                          TimmTargetGenerator)
from mmdtm.models.target_generators.frozen_teacher import (IMAGENET_MEAN,
                                                           IMAGENET_STD)

from tests.conftest import TINY_CLIP

TINY_TEXT = TINY_CLIP['text_cfg']
# SigLIP's layout (no class token, MAP pooling, no projection) with one
# register token: timm's test_vit3 (96-d, 160 px, patch 16).
TINY_SIGLIP = dict(embed_dim=96, text_cfg=TINY_TEXT, vision_cfg=dict(
    timm_model_name='test_vit3', timm_model_pretrained=False,
    timm_pool='map', timm_proj='none', image_size=224))
# EVA02-CLIP's layout (class token, token pooling, linear head as the CLIP
# projection): EVA02-Ti/14 (192-d, 224 px, patch 14) projecting to 32.
TINY_EVA = dict(embed_dim=32, text_cfg=TINY_TEXT, vision_cfg=dict(
    timm_model_name='eva02_tiny_patch14_224', timm_model_pretrained=False,
    timm_pool='token', timm_proj=None, image_size=224))
# DINOv2's layout (patch 14, layer scale), 2 blocks of 32-d at 56 px (4x4).
TINY_DINO = dict(embed_dim=32, depth=2, num_heads=2, img_size=56)


def siglip(**kw):
    kw.setdefault('pretrained', None)
    return CLIPTargetGenerator('ViT-B-16-SigLIP2', model_cfg=TINY_SIGLIP,
                               **kw)


def eva(**kw):
    kw.setdefault('pretrained', None)
    return CLIPTargetGenerator('EVA02-B-16', model_cfg=TINY_EVA, **kw)


def dino(name='vit_base_patch14_dinov2', model_kwargs=TINY_DINO, **kw):
    kw.setdefault('pretrained', None)
    return TimmTargetGenerator(name, model_kwargs=model_kwargs, **kw)


def test_siglip_style_tower_gives_normed_patch_tokens():
    gen = siglip()
    trunk = gen.teacher.trunk
    assert trunk.num_prefix_tokens == 1  # the register token
    assert gen.input_size == (160, 160)  # the trunk's, not vision_cfg's
    x = torch.randn(2, 3, 160, 160)
    out = gen(x)
    assert out.shape == (2, 100, 96) and out.dtype == torch.float32
    assert gen.out_dim == 96 and gen.num_patches == 100
    # independent path: every token after the final norm, prefix dropped
    feats = trunk.norm(trunk.blocks(trunk.norm_pre(
        trunk._pos_embed(trunk.patch_embed(x)))))
    torch.testing.assert_close(out, feats[:, 1:])
    # the MAP head pools; there is no token-wise projection
    torch.testing.assert_close(siglip(projected=False)(x), out)
    assert not gen.in_joint_space


def test_eva02_tower_projects_tokens_with_its_linear_head():
    gen = eva()
    trunk = gen.teacher.trunk
    assert trunk.num_prefix_tokens == 1 and gen.patch_size == (14, 14)
    x = torch.randn(1, 3, 224, 224)
    out = gen(x)
    assert out.shape == (1, 256, 32) and gen.out_dim == 32
    tokens = trunk.forward_features(x)[:, 1:]
    torch.testing.assert_close(out, trunk.head(tokens))
    assert gen.in_joint_space
    plain = eva(projected=False)
    assert not plain.in_joint_space
    assert plain.out_dim == 192
    torch.testing.assert_close(plain(x), tokens)


def test_plain_timm_teacher_drops_class_and_register_tokens():
    gen = dino()
    x = torch.randn(2, 3, 56, 56)
    out = gen(x)
    assert out.shape == (2, 16, 32) and gen.out_dim == 32
    torch.testing.assert_close(out, gen.teacher.forward_features(x)[:, 1:])
    reg = dino('vit_small_patch14_reg4_dinov2')
    assert reg.teacher.num_prefix_tokens == 5
    torch.testing.assert_close(
        reg(x), reg.teacher.forward_features(x)[:, 5:])


@pytest.mark.parametrize('make', [siglip, dino], ids=['open_clip', 'timm'])
def test_frozen_for_real(make):
    gen = make()
    teacher = gen.teacher
    assert all(not p.requires_grad for p in teacher.parameters())
    assert list(gen.parameters()) == []
    assert set(gen.state_dict()) == set()
    holder = torch.nn.Sequential(torch.nn.Linear(2, 2), gen)
    optim = torch.optim.AdamW(holder.parameters())
    assert sum(len(g['params']) for g in optim.param_groups) == 2
    holder.train()
    assert not teacher.training
    size = gen.input_size
    x = torch.randn(1, 3, *size, requires_grad=True)
    out = gen(x)
    assert not out.requires_grad and not out.is_inference()
    w = torch.ones(1, requires_grad=True)
    (out * w).sum().backward()
    assert w.grad is not None and x.grad is None
    # the same random teacher every build; the global RNG untouched
    state = torch.random.get_rng_state()
    torch.testing.assert_close(make()(x.detach()), out)
    assert torch.equal(state, torch.random.get_rng_state())
    assert make(autocast_dtype='bf16')(x.detach()).dtype == torch.float32
    assert make(inference_mode=False)(x.detach()).dtype == torch.float32


def test_teacher_normalisation_uses_the_teachers_own_statistics():
    gen = dino(input_norm='teacher')  # DINOv2: ImageNet mean/std
    assert gen.norm_stats[0] == pytest.approx((0.485, 0.456, 0.406))
    x = torch.randn(1, 3, 56, 56)
    torch.testing.assert_close(gen(x), dino()(x), rtol=1e-4, atol=1e-4)
    gen = siglip(input_norm='teacher')  # SigLIP: 0.5 / 0.5
    assert gen.norm_stats == ((0.5,) * 3, (0.5,) * 3)
    raw = torch.rand(1, 3, 160, 160) * 255
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(gen((raw - mean) / std),
                               siglip()((raw / 255 - 0.5) / 0.5),
                               rtol=1e-4, atol=1e-4)


def test_timm_teacher_loads_a_local_file_strictly(tmp_path):
    torch.manual_seed(5)
    model = timm.create_model('vit_base_patch14_dinov2', **TINY_DINO)
    path = tmp_path / 'dino.pth'
    torch.save(model.state_dict(), path)  # with its 1000-class head
    gen = dino(pretrained=str(path))
    for k, v in gen.teacher.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    missing = tmp_path / 'nope' / 'dino.pth'
    with pytest.raises(FileNotFoundError, match='nope/dino.pth'):
        dino(pretrained=str(missing))
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'not a checkpoint')
    with pytest.raises(RuntimeError, match='garbage.pt'):
        dino(pretrained=str(garbage))
    partial = tmp_path / 'partial.pt'
    torch.save({'cls_token': model.cls_token}, partial)
    with pytest.raises(RuntimeError, match='(?s)partial.pt.*missing keys'):
        dino(pretrained=str(partial))


def test_one_loader_reports_keys_for_every_teacher(tmp_path):
    """Both libraries' files go through compare_state_dict: the error is a
    CheckpointMismatchError carrying the offending keys; a timm file's
    classifier head is the only thing left unused."""
    def saved(model, name, drop, add):
        state = {k: v for k, v in model.state_dict().items() if k != drop}
        torch.save(dict(state, **add), tmp_path / name)
        return str(tmp_path / name)

    torch.manual_seed(5)
    path = saved(timm.create_model('vit_base_patch14_dinov2', **TINY_DINO),
                 'dino_extra.pth', 'norm.weight',
                 {'blocks.9.attn.qkv.weight': torch.zeros(1)})
    with pytest.raises(CheckpointMismatchError,
                       match='(?s)dino_extra.pth.*do not fit timm model') as e:
        dino(pretrained=path)
    assert e.value.missing == ['norm.weight']
    assert e.value.unexpected == ['blocks.9.attn.qkv.weight']
    path = saved(open_clip.create_model('EVA02-B-16', **TINY_EVA),
                 'eva_bad.pt', 'visual.trunk.norm.bias',
                 {'visual.trunk.head.weight': torch.zeros(3, 3)})
    with pytest.raises(CheckpointMismatchError,
                       match='(?s)eva_bad.pt.*do not fit open_clip') as e:
        eva(pretrained=path)
    assert e.value.missing == ['trunk.norm.bias']
    assert e.value.mismatched[0].startswith('trunk.head.weight')


def test_one_random_init_warning(capsys):
    """The same words for every teacher without weights (and the demo's),
    logged once per teacher."""
    from mmengine.logging import MMLogger

    from mmdtm.models.target_generators.frozen_teacher import \
        random_init_warning
    MMLogger.get_instance('test_one_random_init_warning')  # to stdout
    dino()
    eva()
    printed = capsys.readouterr().out
    for owner, name in (('TimmTargetGenerator', 'vit_base_patch14_dinov2'),
                        ('CLIPTargetGenerator', 'EVA02-B-16')):
        assert printed.count(random_init_warning(owner, name)) == 1
    assert printed.count('RANDOMLY INITIALISED') == 2


def test_timm_tower_loads_a_local_open_clip_file(tmp_path):
    torch.manual_seed(3)
    model = open_clip.create_model('EVA02-B-16', pretrained=None, **TINY_EVA)
    path = tmp_path / 'eva.pt'
    torch.save(model.state_dict(), path)
    gen = eva(pretrained=str(path), grid_match='resize_input',
              out_grid=(4, 4))  # loaded at 224 px, then resized to 56
    trunk, ref = gen.teacher.trunk, model.visual.trunk
    assert torch.equal(gen.teacher.trunk.head.weight, ref.head.weight)
    torch.testing.assert_close(trunk.pos_embed, resample_abs_pos_embed(
        ref.pos_embed, new_size=(4, 4), old_size=(16, 16),
        num_prefix_tokens=1))


@pytest.mark.parametrize('name', [
    'RN50',  # open_clip's modified ResNet
    'convnext_base',  # a timm ConvNeXt tower
])
def test_non_vit_towers_are_refused(name):
    cfg = dict(embed_dim=32, text_cfg=TINY_TEXT)
    if name == 'RN50':
        cfg['vision_cfg'] = dict(layers=[1, 1, 1, 1], width=16,
                                 image_size=64)
    else:
        cfg['vision_cfg'] = dict(timm_model_name='test_convnext',
                                 timm_model_pretrained=False,
                                 timm_pool='avg', timm_proj='linear',
                                 image_size=64)
    with pytest.raises(ValueError, match='(?s)not a ViT|no ViT image tower'):
        CLIPTargetGenerator(name, pretrained=None, model_cfg=cfg)
    with pytest.raises(ValueError, match='not a ViT'):
        TimmTargetGenerator('test_resnet', pretrained=None)


def test_resize_input_timm_teacher():
    native = dino(model_kwargs=dict(TINY_DINO, img_size=70))  # 5x5
    gen = dino(model_kwargs=dict(TINY_DINO, img_size=70),
               grid_match='resize_input', out_grid=(4, 4))
    assert native.num_patches == 25 and gen.num_patches == 16
    assert gen.input_size == (56, 56) and gen.grid == (4, 4)
    # the seeded weights, position embedding resampled once at build time
    torch.testing.assert_close(gen.teacher.pos_embed, resample_abs_pos_embed(
        native.teacher.pos_embed, new_size=(4, 4), old_size=(5, 5),
        num_prefix_tokens=1))
    assert not gen.teacher.pos_embed.requires_grad
    x = torch.randn(2, 3, 64, 64)  # the student's view
    small = F.interpolate(x, size=(56, 56), mode='bicubic',
                          align_corners=False, antialias=True)
    torch.testing.assert_close(
        gen(x), gen.teacher.forward_features(small)[:, 1:])


def test_resize_input_open_clip_towers():
    gen = CLIPTargetGenerator('ViT-B-16', pretrained=None,
                              model_cfg=TINY_CLIP, grid_match='resize_input',
                              out_grid=(3, 3))
    assert gen.input_size == (48, 48) and gen.teacher.grid_size == (3, 3)
    assert gen.teacher.positional_embedding.shape == (10, 64)
    assert gen(torch.randn(1, 3, 64, 64)).shape == (1, 9, 32)
    gen = eva(grid_match='resize_input', out_grid=(14, 14))
    assert gen.input_size == (196, 196)
    assert gen(torch.randn(1, 3, 224, 224)).shape == (1, 196, 32)


def test_resample_tokens():
    gen = dino(model_kwargs=dict(TINY_DINO, img_size=64, patch_size=8),
               grid_match='resample_tokens', out_grid=(4, 4))
    assert gen.teacher_grid == (8, 8) and gen.num_patches == 16
    x = torch.randn(2, 3, 64, 64)
    tokens = gen.teacher.forward_features(x)[:, 1:]  # (2, 64, 32)
    fmap = tokens.transpose(1, 2).reshape(2, 32, 8, 8)
    expected = F.interpolate(fmap, size=(4, 4), mode='bilinear',
                             align_corners=False, antialias=True)
    torch.testing.assert_close(gen(x),
                               expected.flatten(2).transpose(1, 2))
    with pytest.raises(ValueError, match='runs at 64x64 px but got 32x32'):
        gen(torch.randn(1, 3, 32, 32))


def test_grid_options_are_checked():
    with pytest.raises(ValueError, match='grid_match'):
        dino(grid_match='crop', out_grid=(4, 4))
    with pytest.raises(ValueError, match='out_grid'):
        dino(grid_match='resize_input')
    with pytest.raises(ValueError, match='input_norm'):
        dino(input_norm='mine')
    with pytest.raises(ValueError, match="pretrained='lvd142m'"):
        TimmTargetGenerator('vit_base_patch14_dinov2.lvd142m')
    with pytest.raises(ValueError, match='TokensAttention.*grid_match'):
        CLIPTokensAttentionGenerator(
            'ViT-B-16', pretrained=None, model_cfg=TINY_CLIP,
            grid_match='resize_input', out_grid=(3, 3))


@pytest.fixture
def no_downloads(monkeypatch):
    """Any download attempt fails loudly (and never touches the network)."""
    def refuse(*args, **kwargs):
        raise OSError('DOWNLOAD ATTEMPTED')
    monkeypatch.setattr(open_clip.factory, 'download_pretrained', refuse)
    monkeypatch.setattr(timm.models._builder, 'load_pretrained', refuse)


@pytest.mark.parametrize('name, kw, match', [
    # OpenAI's weights were trained with QuickGELU; plain ViT-B-16 is GELU
    ('ViT-B-16', {}, "(?s)activation='QuickGELU'.*'GELU'.*"
                     "'ViT-B-16-quickgelu'"),
    ('ViT-B-16-quickgelu', dict(model_cfg=dict(quick_gelu=False)),
     "activation='QuickGELU'.*'GELU'"),
    # the tag was trained at 224 px
    ('ViT-B-16-quickgelu', dict(model_cfg=TINY_CLIP),
     "image_size=224.*image_size=64"),
    ('ViT-B-16-quickgelu', dict(model_cfg=dict(force_image_size=448)),
     "image_size=224.*image_size=448"),
    ('ViT-B-16', dict(model_cfg=dict(force_quick_gelu=True),
                      input_norm='teacher', teacher_mean=(0.5,) * 3,
                      teacher_std=(0.5,) * 3),
     r'(?s)\(0.4815.*teacher_mean/teacher_std.*\(0.5, 0.5, 0.5\)'),
    # CLIP's mean/std fed to a teacher trained with another
    ('ViT-B-16-SigLIP2', dict(input_norm='clip'),
     r"(?s)\(0.5, 0.5, 0.5\).*input_norm='clip'.*0.4815"),
    ('ViT-B-16-SigLIP2', dict(input_norm='teacher', teacher_mean=(0.4,) * 3,
                              teacher_std=(0.2,) * 3),
     r'(?s)\(0.5, 0.5, 0.5\).*teacher_mean/teacher_std.*0.4'),
])
def test_open_clip_tag_guard_fires_before_download(no_downloads, name, kw,
                                                    match):
    tag = 'webli' if 'SigLIP' in name else 'openai'
    with pytest.raises(ValueError, match=match) as err:
        CLIPTargetGenerator(name, pretrained=tag, **kw)
    assert f'pretrained={tag!r}' in str(err.value)


def test_open_clip_tag_that_agrees_goes_on_to_download(no_downloads):
    # the defaults: OpenAI's weights on the QuickGELU model, the student's
    # ImageNet-normalised view (the reference's recipe)
    with pytest.raises(RuntimeError, match='DOWNLOAD ATTEMPTED'):
        CLIPTargetGenerator()
    with pytest.raises(RuntimeError, match='DOWNLOAD ATTEMPTED'):
        CLIPTargetGenerator('ViT-B-16-quickgelu', pretrained='openai',
                            input_norm='clip')
    with pytest.raises(RuntimeError, match='DOWNLOAD ATTEMPTED'):
        CLIPTargetGenerator('EVA02-B-16', pretrained='merged2b_s8b_b131k',
                            input_norm='teacher')


def test_timm_tag_guard_fires_before_download(no_downloads):
    name = 'vit_base_patch14_dinov2'
    with pytest.raises(ValueError, match="(?s)input size='518x518'.*"
                                         "'224x224'"):
        TimmTargetGenerator(name, 'lvd142m', model_kwargs=dict(img_size=224))
    with pytest.raises(ValueError, match=r"(?s)0.485.*input_norm='clip'"):
        TimmTargetGenerator(name, 'lvd142m', input_norm='clip')
    with pytest.raises(ValueError, match="not a timm tag.*'lvd142m'"):
        TimmTargetGenerator(name, 'webli')
    with pytest.raises(RuntimeError, match='(?s)DOWNLOAD ATTEMPTED.*'
                                           "pretrained='/path/to/FILE'"):
        TimmTargetGenerator(name, 'lvd142m', input_norm='teacher',
                            model_kwargs=dict(depth=1),
                            grid_match='resize_input', out_grid=(14, 14))


ACCEPTED = {  # open_clip model -> (tokens at its own size, D projected)
    'ViT-B-16-quickgelu': (196, 512),  # native: ln_post @ proj
    'ViT-H-14-CLIPA': (256, 1024),  # native, ln_post after pooling
    'ViT-B-16-SigLIP2': (196, 768),  # timm, MAP head: no projection
    'EVA02-B-16': (196, 512),  # timm EVA, linear head
    'PE-Core-B-16': (196, 1024),  # timm EVA with MAP, linear head
    'MobileCLIP-B': (196, 512),  # timm ViT, hybrid stem
    'ViTamin-S': (196, 384),  # timm, hybrid stem, fc_norm, proj
}
REFUSED = ['RN50', 'convnext_tiny', 'swin_base_patch4_window7_224',
           'MobileCLIP-S1', 'coca_ViT-B-32']


@pytest.mark.parametrize('name', list(ACCEPTED) + REFUSED)
def test_open_clip_families_on_the_meta_device(name):
    """One model per open_clip family, its image tower built without
    memory (meta tensors): accepted ones give one token per patch of the
    projected dimension; the others are refused by name."""
    from open_clip.model import _build_vision_tower

    from mmdtm.models.target_generators.clip_generator import (
        _timm_tower_projection, _tower_kind)
    from mmdtm.models.target_generators.vit_trunk import (
        timm_patch_tokens, trunk_input_size, trunk_patch_size)
    cfg = open_clip.get_model_config(name)
    with torch.device('meta'):
        visual = _build_vision_tower(cfg['embed_dim'], cfg['vision_cfg'],
                                     cfg.get('quick_gelu', False))
        if name in REFUSED:
            with pytest.raises(ValueError, match='not a ViT|no ViT image'):
                _tower_kind(visual, name)
            return
        n, dim = ACCEPTED[name]
        if _tower_kind(visual, name) == 'native':
            x = torch.empty(1, 3, *visual.image_size)
            tokens = visual.forward_intermediates(
                x, indices=1, normalize_intermediates=True,
                intermediates_only=True, output_fmt='NLC')[
                    'image_intermediates'][-1] @ visual.proj
        else:
            trunk = visual.trunk
            size, patch = trunk_input_size(trunk), trunk_patch_size(trunk)
            assert (size[0] // patch[0]) * (size[1] // patch[1]) == n
            tokens = timm_patch_tokens(trunk, torch.empty(1, 3, *size))
            for layer in _timm_tower_projection(visual)[0]:
                tokens = layer(tokens)
    assert tokens.shape == (1, n, dim)
