"""configs/dtm/teachers/: DTM ViT-B/16 with a SigLIP 2, an EVA02-CLIP and a
DINOv2 teacher build at full size (teacher weights random) and train a step;
a tiny DTM run trains with a timm-tower teacher through MMEngine's Runner."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from mmdtm.engine import build_runner

from tests.conftest import REPO, TINY_CLIP, make_image_folder, toy_config

TEACHERS = osp.join(REPO, 'configs', 'dtm', 'teachers')
EXPECTED = {  # config -> (teacher class, targets dimension, teacher grid)
    'dtm-siglip2-b16': ('CLIPTargetGenerator', 768, (14, 14)),
    'dtm-eva02-clip-b16': ('CLIPTargetGenerator', 512, (14, 14)),
    'dtm-dinov2-b14': ('TimmTargetGenerator', 768, (14, 14)),
}


def _config(prefix):
    """The shipped config with a one-block student (ViT-B width: the neck
    and the patch grid stay as shipped) to keep CPU tests short; the
    teacher stays full size."""
    path, = glob.glob(osp.join(TEACHERS, f'{prefix}_*.py'))
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.arch == 'base'
    cfg.model.backbone.arch = dict(embed_dims=768, num_layers=1,
                                   num_heads=12, feedforward_channels=3072)
    return cfg


def test_every_teacher_config_is_tested():
    shipped = {osp.basename(p).split('_')[0]
               for p in glob.glob(osp.join(TEACHERS, '*.py'))}
    assert shipped == set(EXPECTED)


@pytest.mark.parametrize('prefix', sorted(EXPECTED))
def test_teacher_config_builds_and_trains_a_step(prefix):
    cfg = _config(prefix)
    teacher = cfg.model.target_generator
    assert teacher.pretrained  # the shipped config names real weights
    teacher.pretrained = None
    if teacher.type == 'CLIPTargetGenerator':
        # full-size image tower; a tiny text tower (never used) saves time
        teacher.model_cfg = dict(text_cfg=TINY_CLIP['text_cfg'])
    model = MODELS.build(cfg.model)  # neck width and grids checked here
    kind, dim, grid = EXPECTED[prefix]
    gen = model.target_generator
    assert type(gen).__name__ == kind
    assert gen.out_dim == dim == model.neck.out_channels
    assert gen.grid == grid == tuple(model.backbone.patch_resolution)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    mask = torch.zeros(196, dtype=torch.bool)
    mask[:75] = True
    sample = DataSample()
    sample.set_field(mask.view(14, 14), 'mask')
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model.neck.proj.weight.detach().clone()
    model.train()
    losses = model.loss(x, [sample])
    assert torch.isfinite(losses['loss'])
    losses['loss'].backward()
    optim.step()
    assert not torch.equal(before, model.neck.proj.weight)
    assert not any(k.startswith('target_generator')
                   for k in model.state_dict())


def test_wrong_neck_width_fails_at_build():
    cfg = _config('dtm-dinov2-b14')
    cfg.model.target_generator.pretrained = None
    cfg.model.target_generator.model_kwargs = dict(depth=1)
    cfg.model.neck.out_channels = 512
    with pytest.raises(ValueError, match='neck.out_channels=768'):
        MODELS.build(cfg.model)


def test_grid_mismatch_fails_at_build_naming_both_grids():
    cfg = _config('dtm-dinov2-b14')
    gen = cfg.model.target_generator
    gen.pretrained, gen.model_kwargs = None, dict(depth=1, img_size=224)
    gen.pop('grid_match'), gen.pop('out_grid')
    with pytest.raises(ValueError, match=r'(?s)256 patches \(grid 16x16 '
                       r'\(224x224 px / patch 14\)\).*196 patches \(grid '
                       r"14x14\).*grid_match='resize_input'"):
        MODELS.build(cfg.model)
    gen.grid_match, gen.out_grid = 'resample_tokens', (14, 14)
    assert MODELS.build(cfg.model).target_generator.num_patches == 196


def test_tiny_dtm_run_with_a_timm_tower_teacher(tmp_path, checkpoint_loading):
    """The toy DTM config trained by the Runner with an EVA02-style timm
    tower teacher (patch 14, input resized to the student's 4x4 grid)."""
    data = make_image_folder(str(tmp_path / 'data'), num=4)
    teacher = dict(
        _delete_=True, type='CLIPTargetGenerator', model_name='EVA02-B-16',
        pretrained=None, grid_match='resize_input', out_grid=(4, 4),
        model_cfg=dict(embed_dim=32, text_cfg=TINY_CLIP['text_cfg'],
                       vision_cfg=dict(
                           timm_model_name='eva02_tiny_patch14_224',
                           timm_model_pretrained=False, timm_pool='token',
                           timm_proj=None, image_size=224)))
    cfg = toy_config(str(tmp_path / 'work'), data, max_iters=3,
                     **{'model.target_generator': teacher,
                        'train_dataloader.batch_size': 2,
                        'default_hooks.checkpoint.interval': 3})
    runner = build_runner(cfg)
    runner.train()
    gen = runner.model.target_generator
    assert gen.input_size == (56, 56) and gen.kind == 'timm'
    ckpt = torch.load(osp.join(cfg.work_dir, 'iter_3.pth'),
                      map_location='cpu')
    assert not any(k.startswith('target_generator')
                   for k in ckpt['state_dict'])
