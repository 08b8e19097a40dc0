"""DTM as a plug-in for MMPretrain's EVA, MILAN and BEiT v2.

Each variant's config (configs/dtm/frameworks/) is shrunk to 64x64 images,
16 patches, 2-block students and a random tiny CLIP teacher, trained for a
few iterations with the Runner, and checked: the DTM term is in the loss
dict, its gradient reaches the student, and with r = 0 at every level it
equals the framework's own token-wise loss.
"""
import copy
import glob
import json
import os.path as osp

import mmpretrain
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmpretrain.models import BEiT
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from mmdtm.engine import build_runner
from mmdtm.models import DTMHead, DTMLoss
from mmdtm.morphing import MorphLevel
from ..conftest import REPO, TINY_CLIP, make_image_folder

FRAMEWORKS = osp.join(REPO, 'configs', 'dtm', 'frameworks')
CONFIGS = {
    'eva': 'dtm-eva-mae-style_vit-base-p16_16xb256-coslr-400e_in1k.py',
    'milan': 'dtm-milan_vit-base-p16_16xb256-amp-coslr-400e_in1k.py',
    'beitv2': 'dtm-beitv2_beit-base-p16_8xb256-amp-coslr-300e_in1k.py',
}
# The frameworks' own configs (the `_base_` of ours), shipped in mmpretrain.
MMPRETRAIN_CONFIGS = osp.join(osp.dirname(mmpretrain.__file__), '.mim',
                              'configs')
OWN = {
    'eva': 'eva/eva-mae-style_vit-base-p16_16xb256-coslr-400e_in1k.py',
    'milan': 'milan/milan_vit-base-p16_16xb256-amp-coslr-400e_in1k.py',
}
IMG, GRID, N = 64, 4, 16
TINY_VIT = dict(embed_dims=64, num_layers=2, num_heads=2,
                feedforward_channels=128)
TINY_ARCH = dict(_delete_=True, **TINY_VIT)  # replaces arch='b' / 'base'
TINY_TEACHER = dict(pretrained=None, model_cfg=TINY_CLIP)
TINY_LOSS = dict(max_merge=[N, N], max_iters=[4, 4], seed=0)

CROP = dict(type='RandomResizedCrop', scale=IMG, crop_ratio_range=(0.2, 1.0),
            backend='pillow', interpolation='bicubic')
MAE_PIPELINE = [dict(type='LoadImageFromFile'), CROP,
                dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]
BEIT_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomResizedCropAndInterpolationWithTwoPic', size=IMG,
         second_size=IMG, interpolation='bicubic',
         second_interpolation='bicubic', scale=(0.2, 1.0)),
    dict(type='BlockMaskGenerator', input_size=(GRID, GRID),
         num_masking_patches=6, max_num_patches=6, min_num_patches=2),
    dict(type='PackInputs')]

# EVA and MILAN share the MAE-style encoder / decoder, so one tiny setting.
MAE_STYLE_TINY = {
    'model.backbone.arch': TINY_ARCH,
    'model.backbone.img_size': IMG,
    'model.neck': dict(num_patches=N, embed_dim=64, decoder_embed_dim=32,
                       decoder_depth=1, decoder_num_heads=2,
                       predict_feature_dim=32),
    'model.head.loss': TINY_LOSS,
    'model.target_generator': TINY_TEACHER,
}

TINY = {
    'eva': MAE_STYLE_TINY,
    'milan': MAE_STYLE_TINY,
    'beitv2': {
        'model.backbone.arch': TINY_ARCH,
        'model.backbone.img_size': IMG,
        'model.backbone.out_indices': [0, 1],
        'model.neck': dict(num_layers=1, early_layers=1,
                           backbone_arch=dict(TINY_ARCH, depth=2)),
        'model.head': dict(embed_dims=64, num_embed=32),
        'model.target_generator': dict(
            encoder_config=dict(arch=TINY_ARCH, img_size=IMG), num_embed=32,
            embed_dims=8, quantize_kmeans_init=False, init_cfg=None),
        'model.dtm_neck': dict(in_channels=64, out_channels=32),
        'model.dtm_head.loss': TINY_LOSS,
        'model.dtm_target_generator': TINY_TEACHER,
    },
}


def tiny_cfg(name: str, work_dir: str = '', data_root: str = '',
             **options) -> Config:
    """Our config for ``name``, shrunk for CPU; ``options`` are dotted."""
    cfg = Config.fromfile(osp.join(FRAMEWORKS, CONFIGS[name]))
    pipeline = BEIT_PIPELINE if name == 'beitv2' else MAE_PIPELINE
    cfg.merge_from_dict(copy.deepcopy({  # merging pops `_delete_` keys
        **TINY[name],
        'work_dir': work_dir,
        'train_dataloader': dict(
            batch_size=4, num_workers=0, persistent_workers=False,
            dataset=dict(_delete_=True, type='CustomDataset',
                         data_root=data_root, with_label=False,
                         pipeline=pipeline)),
        'optim_wrapper': dict(_delete_=True, type='OptimWrapper',
                              optimizer=dict(type='AdamW', lr=1e-3)),
        'param_scheduler': [],
        'train_cfg': dict(_delete_=True, type='IterBasedTrainLoop',
                          max_iters=3),
        'default_hooks.checkpoint': dict(_delete_=True, type='CheckpointHook',
                                         interval=1000, by_epoch=False),
        'default_hooks.logger.interval': 1,
        'log_processor.by_epoch': False,
        'resume': False,
        'randomness': dict(seed=0),
        **options,
    }))
    return cfg


def build(name: str, **options):
    return MODELS.build(tiny_cfg(name, **options).model)


def batch(name: str, b: int = 2, seed: int = 0):
    """Random normalised inputs and data samples (BEiT v2: with masks)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, IMG, IMG, generator=g)
    samples = [DataSample() for _ in range(b)]
    if name != 'beitv2':
        return x, samples
    for s in samples:
        mask = torch.zeros(N)
        mask[torch.randperm(N, generator=g)[:6]] = 1
        s.set_mask(mask.view(GRID, GRID))
    return [x, torch.randn(b, 3, IMG, IMG, generator=g)], samples


def dtm_parts(name: str, model):
    """(DTM head, the loss-dict key of the DTM term)."""
    if name == 'beitv2':
        return model.dtm_head, 'loss_dtm'
    return model.head, 'loss'


def seeded_loss(model, inputs, samples, seed=0):
    """``model.loss`` with the global RNG (MAE/MILAN masking) seeded."""
    torch.manual_seed(seed)
    return model.loss(inputs, samples)


# --------------------------------------------------------------- components
def test_cosine_distance_by_hand():
    """'cosine_distance' = 1 - cos; with loss_weight=2 it is 2 - 2 cos."""
    u = torch.tensor([[[1., 0.], [1., 1.], [0., 2.]]])
    v = torch.tensor([[[1., 0.], [1., 0.], [0., -1.]]])
    cos = [1.0, 2 ** -0.5, -1.0]
    loss = DTMLoss(max_merge=[0], max_iters=[1], distance='cosine_distance',
                   loss_weight=2.0)
    expected = sum(2 - 2 * c for c in cos) / 3
    assert loss(u, v).item() == pytest.approx(expected, rel=1e-6)
    # morphed, by hand: A = {0, 2}, B = {1}; the teacher's token 0 is the
    # most similar to token 1 (cos 1 vs 0), so groups {0, 1} and {2}
    one = [MorphLevel(merge=1, num_rounds=1, per_round=(1, ))]
    value, stats = DTMLoss(max_merge=[1], max_iters=[1], protect_first=False,
                           distance='cosine_distance').compute(
                               u, v, levels=one)
    assert stats['groups_l1'].item() == 2
    c01 = 1.0 / 1.25 ** 0.5  # cos((1, .5), (1, 0))
    expected = (2 * (1 - c01) + (1 - (-1.0))) / 3
    assert value.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match='distance'):
        DTMLoss(distance='cos')


def test_clip_tokens_attention_generator():
    """The tuple format: class token + patch targets, last-block attention."""
    gen = MODELS.build(dict(type='CLIPTokensAttentionGenerator',
                            **TINY_TEACHER))
    plain = MODELS.build(dict(type='CLIPTargetGenerator', **TINY_TEACHER))
    x = torch.randn(2, 3, IMG, IMG)
    tokens, attn = gen(x)
    assert tokens.shape == (2, 1 + N, 32) and attn.shape == (2, 1 + N, 1 + N)
    torch.testing.assert_close(tokens[:, 1:], plain(x))
    # the class token: open_clip's pooled (projected) output
    torch.testing.assert_close(tokens[:, 0], plain.teacher(x)[0])
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 1 + N))
    # attention by hand from the last block's weights
    visual = plain.teacher
    with torch.no_grad():
        h = visual._embeds(x)
        for blk in visual.transformer.resblocks[:-1]:
            h = blk(h)
        last = visual.transformer.resblocks[-1]
        h = last.ln_1(h)
        heads = last.attn.num_heads
        q, k, _ = F.linear(h, last.attn.in_proj_weight,
                           last.attn.in_proj_bias).chunk(3, dim=-1)
        q = q.view(2, 1 + N, heads, -1).transpose(1, 2)
        k = k.view(2, 1 + N, heads, -1).transpose(1, 2)
        w = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
    torch.testing.assert_close(attn, w.mean(1), rtol=1e-4, atol=1e-6)
    assert not tokens.requires_grad
    with pytest.raises(ValueError, match='output_format'):
        MODELS.build(dict(type='CLIPTargetGenerator', **TINY_TEACHER,
                          output_format='tuple'))


def test_old_tokens_attention_spelling_names_the_new_type():
    """A config from before CLIPTokensAttentionGenerator existed fails at
    build time, before any teacher is built, naming the type to use; the
    old default spelling still builds the patch-target teacher."""
    with pytest.raises(ValueError, match="(?s)type of its own.*type="
                       "'CLIPTokensAttentionGenerator'"):
        MODELS.build(dict(type='CLIPTargetGenerator', **TINY_TEACHER,
                          output_format='tokens_attention'))
    gen = MODELS.build(dict(type='CLIPTargetGenerator', **TINY_TEACHER,
                            output_format='patch_tokens'))
    assert gen(torch.randn(2, 3, IMG, IMG)).shape == (2, N, 32)


# ------------------------------------------------------ training per variant
@pytest.mark.parametrize('name', ['eva', 'milan', 'beitv2'])
def test_variant_trains_with_runner(name, tmp_path):
    data = make_image_folder(str(tmp_path / 'data'), num=8, size=72)
    cfg = tiny_cfg(name, str(tmp_path / 'work'), data)
    runner = build_runner(cfg)
    runner.train()
    head, key = dtm_parts(name, runner.model)
    assert isinstance(head, DTMHead)
    assert int(head.loss_module.schedule_state[1]) == 3  # 3 DTM calls
    logs = []
    for path in glob.glob(osp.join(cfg.work_dir, '*', 'vis_data',
                                   'scalars.json')):
        with open(path) as f:
            logs += [json.loads(line) for line in f]
    values = [e[key] for e in logs if key in e]
    assert len(values) == 3 and all(v == v and v > 0 for v in values)
    if name == 'beitv2':  # BEiT v2's own terms are still there
        assert all('loss_1' in e and 'loss_2' in e and 'dtm_groups_l1' in e
                   for e in logs if key in e)


@pytest.mark.parametrize('name', ['eva', 'milan', 'beitv2'])
def test_dtm_term_gradient_reaches_student(name):
    model = build(name)
    head, key = dtm_parts(name, model)
    # force real morphing: 4 merges in 2 rounds at each of the two levels
    fixed = [MorphLevel(merge=4, num_rounds=2, per_round=(2, 2))] * 2
    compute, stats = head.loss_module.compute, {}

    def compute_fixed(*args, **kwargs):
        loss, level_stats = compute(*args, levels=fixed, **kwargs)
        stats.update(level_stats)
        return loss, level_stats

    head.loss_module.compute = compute_fixed
    inputs, samples = batch(name)
    losses = seeded_loss(model, inputs, samples)
    assert key in losses
    assert stats['groups_l1'].item() < (N + 1 if name == 'milan' else N)
    params = [p for p in model.backbone.parameters() if p.requires_grad]
    grads = torch.autograd.grad(losses[key], params, allow_unused=True,
                                retain_graph=True)
    assert sum(g.abs().sum().item() for g in grads if g is not None) > 0
    if name != 'beitv2':
        # EVA/MILAN configs set find_unused_parameters=False: every
        # trainable parameter must get a gradient.
        total = sum(v for k, v in losses.items() if 'loss' in k)
        total.backward()
        unused = [n for n, p in model.named_parameters()
                  if p.requires_grad and p.grad is None]
        assert not unused


@pytest.mark.parametrize('name', ['eva', 'milan'])
def test_r0_equals_the_frameworks_own_loss(name):
    """No morphing: our model's loss equals the same model with the
    framework's own head (from its own config), end to end."""
    own_head_cfg = Config.fromfile(
        osp.join(MMPRETRAIN_CONFIGS, OWN[name])).model.head
    reduction = 'masked' if name == 'eva' else 'all_tokens'
    model = build(name, **{'model.head.loss.max_merge': [0, 0],
                           'model.head.loss.reduction': reduction})
    model.eval()
    inputs, samples = batch(name)
    ours = seeded_loss(model, inputs, samples)['loss']
    model.head = MODELS.build(own_head_cfg)
    theirs = seeded_loss(model, inputs, samples)['loss']
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # and the config's other reduction, on the same tensors
    pred, target = torch.randn(2, N, 32), torch.randn(2, N, 32)
    mask = (torch.rand(2, N) < 0.75).float()
    other = 'all_tokens' if name == 'eva' else 'masked'
    dtm = DTMLoss(max_merge=[0], max_iters=[1], reduction=other,
                  distance='cosine_distance', loss_weight=2.0)
    torch.testing.assert_close(
        dtm(pred, target, mask),
        model.head.loss(pred, target, mask if other == 'masked' else None))


def test_r0_beitv2_dtm_term_is_token_wise_distillation():
    """BEiT v2 has no distillation loss of its own: with r = 0 the DTM term
    is plain token-wise smooth-L1 (beta 2) between the projected student
    features and the CLIP targets; BEiT v2's own terms are unchanged."""
    model = build('beitv2', **{'model.dtm_head.loss.max_merge': [0, 0]})
    model.eval()  # VQKD's EMA codebook stays put between the two passes
    inputs, samples = batch('beitv2')
    ours = model.loss(inputs, samples)
    own = BEiT.loss(model, inputs, samples)
    for k in ('loss_1', 'loss_2'):
        torch.testing.assert_close(ours[k], own[k])
    mask = torch.stack([s.mask for s in samples])
    with torch.no_grad():
        feats, _ = model.neck(model.backbone(inputs[0], mask),
                              rel_pos_bias=model.backbone.shared_rel_pos_bias)
        pred = model.dtm_neck(feats)
        target = model.dtm_target_generator(inputs[0])
    expected = F.smooth_l1_loss(pred, target, beta=2.0)
    torch.testing.assert_close(ours['loss_dtm'], expected)
    assert ours['dtm_groups_l1'].item() == N


def test_beitv2_dtm_checks_its_parts():
    with pytest.raises(ValueError, match='dtm_neck.out_channels'):
        build('beitv2', **{'model.dtm_neck.out_channels': 16})
    with pytest.raises(ValueError, match='dtm_head.loss'):
        build('beitv2', **{'model.dtm_head.loss.max_merge': [N + 1, N]})
    cfg = copy.deepcopy(tiny_cfg('beitv2'))
    cfg.model.pop('neck')
    with pytest.raises(ValueError, match='BEiTV2Neck'):
        MODELS.build(cfg.model)


@pytest.mark.parametrize('name', ['eva', 'milan', 'beitv2'])
def test_full_size_config_runs_one_step(name):
    """The shipped configs as they are (ViT-B/16, 224x224, 196 patches; only
    the teacher's weights are random): build and compute the loss of one
    image. Catches mismatches between a framework's parts at real size
    (MMPretrain 1.2.0's own MILAN config has one, fixed in ours)."""
    cfg = Config.fromfile(osp.join(FRAMEWORKS, CONFIGS[name]))
    key = 'dtm_target_generator' if name == 'beitv2' else 'target_generator'
    cfg.model[key].pretrained = None
    # full-size image tower; a tiny text tower (never used) saves time
    cfg.model[key].model_cfg = dict(text_cfg=TINY_CLIP['text_cfg'])
    model = MODELS.build(cfg.model)  # no init_weights: no VQKD download
    x = torch.randn(1, 3, 224, 224)
    sample = DataSample()
    if name == 'beitv2':
        mask = torch.zeros(196)
        mask[:75] = 1
        sample.set_mask(mask.view(14, 14))
        x = [x, torch.randn(1, 3, 224, 224)]
    losses = model.loss(x, [sample])
    head, key = dtm_parts(name, model)
    assert torch.isfinite(losses[key])
    assert int(head.loss_module.schedule_state[1]) == 1
