"""The recipe card: the shipped configs train what the reference trained.

Every value below is read from the real full-size models and optimizers
built from the shipped configs (teacher with ``pretrained=None``, the AMP
wrapper swapped for a plain one on CPU) and compared with ``REF``, a table
that cites, for each entry, the file and line of the reference it comes
from:

- ``dtm``: naver-ai/dtm at 322df2e (the DTM reference, a BEiT v2 fork);
- ``unilm``: microsoft/unilm, ``beit2/semantic_segmentation/`` (BEiT v2's
  ADE20K configs, the recipe this lineage reports for segmentation).

Choices the reference leaves open (``${...}`` in its commands) are marked
``open``: their value is ours, the source says what the reference has
there; configs/dtm/README.md lists them. A change of recipe must be a
change of this table.
"""
import functools
import glob
import math
import os.path as osp
from typing import Dict, List, NamedTuple, Set, Tuple

import numpy as np
import open_clip
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS, DefaultScope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS, TRANSFORMS
from torch import nn

from mmdtm.models.losses.dtm_loss import standardize
from mmdtm.models.target_generators.clip_generator import HOW_TO_GET
from ..conftest import REPO


class Ref(NamedTuple):
    value: object
    source: str
    open: bool = False  # a choice the reference leaves open (ours)


# Effective std of N(0, s) truncated at +-s: s * sqrt(1 - 2 phi(1) / erf).
TRUNC_1STD = math.sqrt(1 - 2 * math.exp(-0.5) / math.sqrt(2 * math.pi) /
                       math.erf(1 / math.sqrt(2)))

REF: Dict[str, Ref] = {
    # ---- the teacher
    'teacher.activation': Ref(
        'QuickGELU', 'dtm vqkd_teacher/clip/model.py:177-179 (QuickGELU), '
        ':190 (used in every block); run_pretrain_dtm.py:292 '
        '(clip.load("ViT-B/16"))'),
    'teacher.model_name': Ref(
        'ViT-B-16-quickgelu', 'dtm run_pretrain_dtm.py:292 (OpenAI CLIP '
        'ViT-B/16, trained with QuickGELU; open_clip names it so)'),
    # ---- the pre-training student
    'pretrain.drop_path_rate': Ref(
        0.1, 'dtm docs/Training.md:21 (${drop_path}); run_pretrain_dtm.py:79 '
        '(--drop_path default 0.1)', open=True),
    'pretrain.l': Ref(
        (1e-5, 0.1), 'dtm run_pretrain_dtm.py:66-67 (layer scale "1e-5 for '
        'large"), :79 (drop path default 0.1); unilm beit2/PRETRAINING.md:72'
        '-73 (the same in BEiT v2\'s ViT-L command)'),
    'student.drop_paths_per_branch': Ref(
        1, 'dtm models/modeling_finetune.py:199-200 (Block.forward: one '
        'drop_path per branch), :50-67 (Mlp: no drop path)'),
    'student.layer_scale': Ref(0.1, 'dtm docs/Training.md:22'),
    'student.init_std': Ref(
        0.02, 'dtm models/modeling_dtm.py:32 (init_std=0.02), :24-25 '
        '(trunc_normal_ cut at a=-std, b=std)'),
    'student.init_effective_std': Ref(
        0.02 * TRUNC_1STD, 'dtm models/modeling_dtm.py:24-25, :103-114 '
        '(Linear / Conv2d weights), :70-73 (tokens, lm_head)'),
    'student.init_biases': Ref(
        0.0, 'dtm models/modeling_dtm.py:106-107, :113-114; '
        'models/modeling_finetune.py:84-85 (q_bias, v_bias zeros)'),
    'student.init_rel_pos_tables': Ref(
        0.0, 'dtm models/modeling_finetune.py:93-94 (per block), :234-235 '
        'and :257 (shared; its trunc_normal_ is commented out)'),
    'student.init_rescale': Ref(
        'attn.proj and fc2 of block i / sqrt(2 i)',
        'dtm models/modeling_dtm.py:95-101 (fix_init_weight)'),
    # ---- pre-training optimisation
    'pretrain.lr': Ref(1.5e-3, 'dtm docs/Training.md:18 (at batch 2048: '
                       'run_pretrain_dtm.py:337 scales by sqrt(B / 2048))'),
    'pretrain.betas': Ref((0.9, 0.98), 'dtm docs/Training.md:24 '
                          '(--opt_betas 0.9 ${opt_betas}; parser default '
                          'None = AdamW (0.9, 0.999), run_pretrain_dtm.py:96)',
                          open=True),
    'pretrain.eps': Ref(1e-8, 'dtm docs/Training.md:25'),
    'pretrain.weight_decay': Ref(0.05, 'dtm run_pretrain_dtm.py:102'),
    'pretrain.clip_grad': Ref(3.0, 'dtm docs/Training.md:20'),
    'pretrain.min_lr': Ref(1e-5, 'dtm run_pretrain_dtm.py:112'),
    'pretrain.warmup_epochs': Ref(10, 'dtm docs/Training.md:19 '
                                  '(${pretrain_warm_up}; parser default 5, '
                                  'run_pretrain_dtm.py:115)', open=True),
    'pretrain.crop_scale': Ref(0.2, 'dtm docs/Training.md:16 '
                               '(${min_crop_scale}; parser default 0.08, '
                               'run_pretrain_dtm.py:128)', open=True),
    'pretrain.mask_patches': Ref(75, 'dtm docs/Training.md:13'),
    'pretrain.mask_blocks': Ref(
        (16, None), 'dtm run_pretrain_dtm.py:71-72 (--max_mask_patches_per_'
        'block None = the mask size, --min_mask_patches_per_block 16)'),
    'pretrain.mask_generator': Ref(
        'BlockMaskGenerator: blocks anywhere they fit (last row and column '
        'included), 10 tries per block, uniform fill-up to exactly 75',
        'dtm utils/masking_generator.py:57 (10 tries), :62-64 (random.randint'
        ', inclusive), :68 (kept if it adds 1..budget patches), :82-90 (stop '
        'at the first block not placed), :99-103 (uniform fill-up)'),
    'pretrain.augment_order': Ref(
        ('ColorJitter', 'RandomFlip', 'RandomResizedCrop'),
        'dtm utils/datasets.py:70-77 (DataAugmentationForBEiT.common_'
        'transform: jitter, flip, crop), :494 (the pre-training dataset\'s); '
        'run_pretrain_dtm.py:290'),
    'pretrain.color_jitter': Ref((0.4, 0.4, 0.4, 0.0),
                                 'dtm utils/datasets.py:71 (ColorJitter('
                                 '0.4, 0.4, 0.4): no hue)'),
    'pretrain.interpolation': Ref('bicubic', 'dtm run_pretrain_dtm.py:124 '
                                  '(--train_interpolation default)'),
    'pretrain.drop_last': Ref(True, 'dtm run_pretrain_dtm.py:324'),
    'pretrain.iters_per_epoch': Ref(
        625, 'dtm run_pretrain_dtm.py:302 (1,281,167 // 256 // 8 GPUs)'),
    'pretrain.decay_rule': Ref(
        'no decay: ndim <= 1, *.bias, cls_token, pos_embed',
        'dtm utils/optim_factory.py:73 (rule), :115-116 and '
        'models/modeling_dtm.py:117-118 (no_weight_decay)'),
    # ---- DTM's own settings, left to ${...} by the reference's command
    'dtm.loss_type': Ref(
        ('smooth_l1', 2.0), 'dtm docs/Training.md:34 (--loss_type '
        '${loss_type}); run_pretrain_dtm.py:207 (default smoothl1), '
        'engines/engine_for_dtm.py:32 (beta 2.0), :160-161', open=True),
    'dtm.n': Ref((196, 196), 'dtm docs/Training.md:35-36 (${n1}, ${n2}); '
                 'run_pretrain_dtm.py:213-214 (defaults)', open=True),
    'dtm.k': Ref((14, 14), 'dtm docs/Training.md:37-38 (${k1}, ${k2}); '
                 'run_pretrain_dtm.py:215-216 (defaults)', open=True),
    'dtm.levels': Ref(
        2, 'dtm docs/Training.md:39 (--L ${l1}); run_pretrain_dtm.py:212 '
        '(default 2); engines/engine_for_dtm.py:103-106 (two draws), :110, '
        ':130, :150 (range(L)): L = 1 runs, L > 2 fails', open=True),
    'pretrain.standardize_target': Ref(
        'unbiased variance', 'dtm engines/engine_for_dtm.py:155-158 '
        '(--normalize_target: targets.var(dim=-1), torch.var)'),
    # ---- ImageNet-1K fine-tuning (ViT-B)
    'finetune.lr': Ref(5e-4, 'dtm docs/Evaluation.md:16'),
    'finetune.batch': Ref(1024, 'dtm docs/Evaluation.md:15 (128 per GPU), '
                          ':4 (8 GPUs)'),
    'finetune.layer_decay': Ref(0.65, 'dtm docs/Evaluation.md:20'),
    'finetune.drop_path_rate': Ref(0.1, 'dtm docs/Evaluation.md:21'),
    'finetune.weight_decay': Ref(0.05, 'dtm docs/Evaluation.md:13'),
    'finetune.betas': Ref((0.9, 0.999), 'dtm run_class_finetuning.py:91 '
                          '(--opt_betas None: AdamW default)'),
    'finetune.min_lr': Ref(1e-6, 'dtm run_class_finetuning.py:109'),
    'finetune.floor': Ref(
        'min_lr x lr_scale: each group ends at its own fraction of min_lr',
        'dtm engines/engine_for_finetuning.py:61 (lr = schedule[it] x '
        'lr_scale), run_class_finetuning.py:564-566 (cosine from lr to '
        'min_lr), utils/utils.py:540-542'),
    'finetune.drop_last': Ref(True, 'dtm run_class_finetuning.py:320'),
    'finetune.iters_per_epoch': Ref(
        1251, 'dtm run_class_finetuning.py:518-519 (1,281,167 // 1024)'),
    'finetune.epochs': Ref((100, 20), 'dtm docs/Evaluation.md:18-19 '
                           '(${finetune_epochs}, ${finetune_warm_up}; '
                           'parser 30 / 5, run_class_finetuning.py:45, '
                           ':112)', open=True),
    'finetune.head_init_scale': Ref(
        0.001, 'dtm run_class_finetuning.py:160 (--init_scale 0.001); '
        'models/modeling_finetune.py:312-319 (weight and bias times '
        'init_scale after trunc_normal_(std=.02))'),
    'finetune.l': Ref(
        (50, 5, 0.8, 0.2), 'no ViT-L command in dtm; unilm beit2/'
        'get_started_for_image_classification.md:87 (50 epochs), :73 (5 '
        'warm-up), :90 (layer decay 0.8), :91 (drop path 0.2)', open=True),
    'finetune.decay_rule': Ref(
        'no decay: ndim <= 1, *.bias, cls_token, pos_embed',
        'dtm utils/optim_factory.py:73, run_class_finetuning.py:535, '
        'models/modeling_finetune.py:342-343'),
    'finetune.layer_ids': Ref(
        'stem 0, block i -> i + 1, rest L + 1; scale rate ** (L + 1 - id)',
        'dtm utils/optim_factory.py:33-44, run_class_finetuning.py:528'),
    # ---- ADE20K UPerNet (BEiT v2's ImageNet-1K recipe)
    'ade20k.b.lr': Ref(5e-5, 'unilm configs/beit/upernet/'
                       'upernet_beit_base_12_512_slide_160k_ade20k.py:48'),
    'ade20k.b.betas': Ref((0.9, 0.999), 'unilm ..._base_..._ade20k.py:48'),
    'ade20k.b.weight_decay': Ref(0.05, 'unilm ..._base_..._ade20k.py:48'),
    'ade20k.b.layer_decay': Ref(0.75, 'unilm ..._base_..._ade20k.py:50'),
    'ade20k.b.drop_path_rate': Ref(0.15,
                                   'unilm ..._base_..._ade20k.py:32'),
    'ade20k.warmup_iters': Ref(1500, 'unilm ..._base_..._ade20k.py:54 '
                               '(linear, ratio 1e-6 at :55)'),
    'ade20k.poly': Ref((1.0, 0.0), 'unilm ..._base_..._ade20k.py:52, :56 '
                       '(poly, power 1.0, min_lr 0.0)'),
    'ade20k.warmup_ratio': Ref(1e-6, 'unilm ..._base_..._ade20k.py:55'),
    'ade20k.schedule': Ref(
        'mmcv 1.x: poly over all iterations from 0, times the linear '
        'warm-up factor while t < warmup_iters',
        'mmcv v1.7.2 mmcv/runner/hooks/lr_updater.py:244-252 (PolyLrUpdater'
        'Hook.get_lr: (lr - min_lr) (1 - t / max_iters)^power + min_lr), '
        ':92-95 (linear warm-up: the regular lr times 1 - (1 - t / '
        'warmup_iters)(1 - ratio)), :143-149 (every iteration)'),
    'ade20k.iters': Ref(160000, 'unilm ..._base_..._ade20k.py:15 '
                        '(schedule_160k)'),
    'ade20k.batch_per_gpu': Ref(2, 'unilm ..._base_..._ade20k.py:58-59'),
    'ade20k.crop': Ref((512, 512), 'unilm ..._base_..._ade20k.py:17'),
    'ade20k.l.lr': Ref(4e-5, 'unilm configs/beit/upernet/'
                       'upernet_beit_large_24_512_slide_160k_ade20k.py:47'),
    'ade20k.l.layer_decay': Ref(0.9, 'unilm ..._large_..._ade20k.py:49'),
    'ade20k.l.drop_path_rate': Ref(0.2, 'unilm ..._large_..._ade20k.py:32'),
    'ade20k.decay_rule': Ref(
        'no decay: ndim == 1, *.bias (its cls_token / pos_embed exemption '
        'compares unprefixed names with prefixed ones: never matches)',
        'unilm mmcv_custom/layer_decay_optimizer_constructor.py:43 (rule), '
        ':7 (the names carry the backbone. prefix)'),
}

CFG = {
    'pretrain': 'configs/dtm_vitb.py',
    'pretrain_l': 'configs/dtm/'
                  'dtm_beit-large-p16_8xb256-amp-coslr-300e_in1k.py',
    'finetune_l': 'configs/dtm/benchmarks/'
                  'vit-large-p16_dtm-pre_8xb128-amp-coslr-50e_in1k.py',
    'finetune': 'configs/dtm/benchmarks/'
                'vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py',
    'finetune_s': 'configs/dtm/benchmarks/'
                  'vit-small-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py',
    'ade20k_b': 'configs/ade20k/'
                'dtm-vit-base_upernet_8xb2-amp-160k_ade20k-512x512.py',
    'ade20k_l': 'configs/ade20k/'
                'dtm-vit-large_upernet_8xb2-amp-160k_ade20k-512x512.py',
}
FRAMEWORK_CFGS = (
    'configs/dtm/frameworks/'
    'dtm-eva-mae-style_vit-base-p16_16xb256-coslr-400e_in1k.py',
    'configs/dtm/frameworks/'
    'dtm-milan_vit-base-p16_16xb256-amp-coslr-400e_in1k.py',
    'configs/dtm/frameworks/'
    'dtm-beitv2_beit-base-p16_8xb256-amp-coslr-300e_in1k.py',
)

# Parameters of one BEiT block (MMPretrain names), by the reference's rule.
BLOCK_DECAY = ('attn.qkv.weight', 'attn.proj.weight',
               'attn.relative_position_bias_table', 'ffn.layers.0.0.weight',
               'ffn.layers.1.weight')
BLOCK_NO_DECAY = ('gamma_1', 'gamma_2', 'ln1.weight', 'ln1.bias',
                  'ln2.weight', 'ln2.bias', 'attn.q_bias', 'attn.v_bias',
                  'attn.proj.bias', 'ffn.layers.0.0.bias',
                  'ffn.layers.1.bias')


def blocks(names, depth: int = 12) -> Set[str]:
    return {f'backbone.layers.{i}.{n}' for i in range(depth) for n in names}


@functools.lru_cache(maxsize=None)
def load(key: str) -> Config:
    """Parse a shipped config once (read-only below)."""
    return Config.fromfile(osp.join(REPO, CFG.get(key, key)))


def plain_wrapper(optim_wrapper: dict) -> dict:
    """The config's optim wrapper with AmpOptimWrapper -> OptimWrapper."""
    cfg = dict(optim_wrapper.to_dict() if hasattr(optim_wrapper, 'to_dict')
               else optim_wrapper)
    assert cfg.pop('type') == 'AmpOptimWrapper'
    cfg.pop('loss_scale', None)
    return dict(type='OptimWrapper', **cfg)


def decay_sets(model: nn.Module, optim_wrapper) -> Tuple[Set[str], Set[str]]:
    """(decayed, not decayed) parameter names, as the optimizer has them."""
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = set(), set()
    for group in optim_wrapper.optimizer.param_groups:
        for p in group['params']:
            (decay if group['weight_decay'] > 0 else no_decay).add(
                names[id(p)])
    assert not decay & no_decay
    return decay, no_decay


def lr_scales(model, optim_wrapper) -> Dict[str, float]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g['lr_scale']
            for g in optim_wrapper.optimizer.param_groups for p in g['params']}


def reference_rule(name: str, param: nn.Parameter,
                   skip=('backbone.cls_token', 'backbone.pos_embed')) -> bool:
    """True: the reference decays it (optim_factory.py:73)."""
    return not (param.ndim <= 1 or name.endswith('.bias') or name in skip)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def pretrain():
    """The full-size DTM ViT-B model and optimizer of configs/dtm_vitb.py."""
    cfg = load('pretrain')
    model_cfg = cfg.model.copy()
    model_cfg.target_generator = dict(cfg.model.target_generator,
                                      pretrained=None)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        torch.manual_seed(0)
        model = MODELS.build(model_cfg)
        model.init_weights()
        wrapper = build_optim_wrapper(model, plain_wrapper(cfg.optim_wrapper))
    return cfg, model, wrapper


@pytest.fixture(scope='module')
def finetune():
    """The ViT-B fine-tuning classifier (shapes only) and its optimizer, and
    its head built and initialised for real."""
    cfg = load('finetune')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        with torch.device('meta'):
            model = MODELS.build(cfg.model)
        wrapper = build_optim_wrapper(model, plain_wrapper(cfg.optim_wrapper))
        torch.manual_seed(0)
        head = MODELS.build(cfg.model.head)
        head.init_weights()
    return cfg, model, wrapper, head


@functools.lru_cache(maxsize=None)
def ade20k(key: str):
    """An ADE20K segmentor (shapes only) and its optimizer."""
    from mmseg.registry import MODELS as SEG_MODELS
    cfg = load(key)
    with DefaultScope.overwrite_default_scope('mmseg'):
        with torch.device('meta'):
            model = SEG_MODELS.build(cfg.model)
        wrapper = build_optim_wrapper(model, plain_wrapper(cfg.optim_wrapper))
    return cfg, model, wrapper


# ------------------------------------------------------------ the teacher
def test_teacher_is_quickgelu(pretrain):
    cfg, model, _ = pretrain
    name = cfg.model.target_generator.model_name
    assert name == REF['teacher.model_name'].value
    assert cfg.model.target_generator.pretrained == 'openai'
    # open_clip's own record: the OpenAI tag was trained with QuickGELU, and
    # this model name builds it
    assert open_clip.get_pretrained_cfg(name, 'openai')['quick_gelu']
    assert open_clip.get_model_config(name)['quick_gelu']
    teacher = model.target_generator.teacher
    acts = {type(b.mlp.gelu).__name__ for b in teacher.transformer.resblocks}
    assert acts == {REF['teacher.activation'].value}
    x = torch.linspace(-4, 4, 101)
    act = teacher.transformer.resblocks[0].mlp.gelu
    assert torch.allclose(act(x), x * torch.sigmoid(1.702 * x))
    assert not torch.allclose(act(x), nn.functional.gelu(x), atol=1e-3)


@pytest.mark.parametrize('path', FRAMEWORK_CFGS, ids=osp.basename)
def test_framework_teachers_are_quickgelu(path):
    cfg = load(path)
    # BEiT v2 keeps its VQKD target_generator; DTM's is the second teacher
    gen = cfg.model.get('dtm_target_generator') or cfg.model.target_generator
    # EVA / MILAN: the same teacher in MMPretrain's tuple format
    assert gen.type in ('CLIPTargetGenerator', 'CLIPTokensAttentionGenerator')
    assert gen.model_name == REF['teacher.model_name'].value


def test_how_to_get_weights_names_the_quickgelu_model():
    text = HOW_TO_GET.format(name='ViT-B-16-quickgelu')
    assert "create_model('ViT-B-16-quickgelu', pretrained='openai'" in text
    assert 'QuickGELU' in text


# ------------------------------------------------------ drop path, init
def drop_paths(layer: nn.Module) -> Dict[str, float]:
    """Where a block drops paths: module path -> drop probability."""
    return {name: m.drop_prob for name, m in layer.named_modules()
            if type(m).__name__ == 'DropPath' and m.drop_prob > 0}


def check_drop_path(backbone: nn.Module, rate: float) -> None:
    probs = torch.linspace(0, rate, len(backbone.layers)).tolist()
    for layer, p in zip(backbone.layers, probs):
        found = drop_paths(layer)
        if p == 0:
            assert not found
            continue
        # one DropPath module, the block's drop_path, which forward applies
        # to each of the two branches; none inside the FFN
        assert found.keys() == {'drop_path'}, found
        assert len(found) == REF['student.drop_paths_per_branch'].value
        assert found['drop_path'] == pytest.approx(p)
        assert isinstance(layer.ffn.dropout_layer, nn.Identity)


TINY = dict(embed_dims=64, num_layers=2, num_heads=2,
            feedforward_channels=128)


@pytest.mark.parametrize('student,scale,kept', [
    ('DTMPretrainViT', 2.0, 0.5),  # the reference: one draw, 1 / (1 - p)
    ('BEiTPretrainViT', 4.0, 0.25),  # MMPretrain: two draws on the FFN
])
def test_ffn_branch_dropped_once(student, scale, kept):
    torch.manual_seed(0)
    model = MODELS.build(dict(type=student, arch=TINY, img_size=32,
                              drop_path_rate=0.5))
    layer = model.layers[1]  # p = 0.5
    with torch.no_grad():
        layer.gamma_1.zero_()  # attention branch off: the FFN branch alone
    x = torch.randn(400, 5, 64)
    layer.eval()
    ref = (layer(x, None) - x).flatten(1)
    layer.train()
    out = (layer(x, None) - x).flatten(1)
    ratio = (out * ref).sum(1) / ref.pow(2).sum(1)  # per sample
    on = ratio > 0.5
    assert torch.allclose(ratio[on], torch.full_like(ratio[on], scale),
                          rtol=1e-4)
    assert torch.all(ratio[~on].abs() < 1e-6)
    assert on.float().mean().item() == pytest.approx(kept, abs=0.07)


def test_drop_path_fix_keeps_the_state_dict_keys():
    from mmpretrain.models import BEiTViT
    kw = dict(arch=TINY, img_size=32, drop_path_rate=0.1)
    ours = MODELS.build(dict(type='DTMViT', **kw))
    assert ours.state_dict().keys() == BEiTViT(**kw).state_dict().keys()


def test_student_architecture(pretrain):
    _, model, _ = pretrain
    bb = model.backbone
    rate = REF['pretrain.drop_path_rate'].value
    check_drop_path(bb, rate)
    for layer in bb.layers:
        assert torch.all(layer.gamma_1 == REF['student.layer_scale'].value)
    assert bb.rel_pos_bias is not None and bb.layers[0].attn.use_rel_pos_bias


def test_student_init_statistics(pretrain):
    _, model, _ = pretrain
    bb, neck = model.backbone, model.neck
    std = REF['student.init_std'].value
    eff = REF['student.init_effective_std'].value
    assert bb.init_std == std and eff == pytest.approx(0.0108, abs=1e-4)
    plain = [bb.patch_embed.projection.weight, neck.proj.weight]
    for layer in bb.layers:
        plain += [layer.attn.qkv.weight, layer.ffn.layers[0][0].weight]
    for w in plain:
        assert w.abs().max() <= std + 1e-7
    flat = torch.cat([w.detach().flatten() for w in plain])
    assert flat.std().item() == pytest.approx(eff, rel=0.01)
    # xavier-uniform fc1 (MMPretrain) would give std ~0.0226 here
    for i, layer in enumerate(bb.layers, start=1):
        for w in (layer.attn.proj.weight, layer.ffn.layers[1].weight):
            assert w.std().item() == pytest.approx(
                eff / math.sqrt(2 * i), rel=0.03)
            assert w.abs().max() <= std / math.sqrt(2 * i) + 1e-7
    for token in (bb.cls_token, bb.mask_token):
        assert token.abs().max() <= std and token.std() > 0
    zero_bias = REF['student.init_biases'].value
    zero_table = REF['student.init_rel_pos_tables'].value
    for name, p in list(bb.named_parameters()) + list(
            neck.named_parameters(prefix='neck')):
        if name.endswith('bias'):  # q / v biases too
            assert torch.all(p == zero_bias), name
        elif name.endswith('relative_position_bias_table'):
            assert torch.all(p == zero_table), name  # shared and per block
        elif '.ln' in name or name.startswith('ln'):
            assert torch.all(p == 1), name


# ---------------------------------------------------- pre-training optimizer
def test_pretrain_optimizer(pretrain):
    cfg, model, wrapper = pretrain
    opt = wrapper.optimizer
    assert type(opt).__name__ == 'AdamW'
    group = opt.param_groups[0]
    assert group['lr'] == REF['pretrain.lr'].value
    assert group['betas'] == REF['pretrain.betas'].value
    assert group['eps'] == REF['pretrain.eps'].value
    assert max(g['weight_decay'] for g in opt.param_groups) == \
        REF['pretrain.weight_decay'].value
    assert wrapper.clip_grad_kwargs['max_norm'] == \
        REF['pretrain.clip_grad'].value
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    warmup, cosine = cfg.param_scheduler
    assert warmup.end == cosine.begin == REF['pretrain.warmup_epochs'].value
    assert cosine.eta_min == REF['pretrain.min_lr'].value
    steps = {t['type']: t for t in cfg.train_pipeline}
    assert steps['RandomResizedCrop']['crop_ratio_range'][0] == \
        REF['pretrain.crop_scale'].value
    masking = steps['BlockMaskGenerator']
    assert masking['num_masking_patches'] == \
        REF['pretrain.mask_patches'].value
    assert (masking['min_num_patches'], masking['max_num_patches']) == \
        REF['pretrain.mask_blocks'].value


def test_pretrain_decay_set_by_name(pretrain):
    _, model, wrapper = pretrain
    decay, no_decay = decay_sets(model, wrapper)
    assert decay == blocks(BLOCK_DECAY) | {
        'backbone.mask_token', 'backbone.patch_embed.projection.weight',
        'backbone.rel_pos_bias.relative_position_bias_table',
        'neck.proj.weight'}
    assert no_decay == blocks(BLOCK_NO_DECAY) | {
        'backbone.cls_token', 'backbone.patch_embed.projection.bias',
        'backbone.ln1.weight', 'backbone.ln1.bias', 'neck.proj.bias'}
    # the same sets from the reference's rule itself
    trainable = dict(model.named_parameters())
    assert decay == {n for n, p in trainable.items() if reference_rule(n, p)}
    assert len(decay) + len(no_decay) == len(trainable)  # teacher: none


def test_dtm_settings_left_open_by_the_reference(pretrain):
    cfg = pretrain[0]
    loss = cfg.model.head.loss
    assert (loss.distance, loss.beta) == REF['dtm.loss_type'].value
    assert tuple(loss.max_merge) == REF['dtm.n'].value
    assert tuple(loss.max_iters) == REF['dtm.k'].value
    assert len(loss.max_merge) == len(loss.max_iters) == \
        REF['dtm.levels'].value


def test_standardize_target_is_unbiased():
    t = torch.randn(3, 7, 16)
    ref = (t - t.mean(-1, keepdim=True)) / (
        torch.var(t, dim=-1, keepdim=True) + 1e-6)**.5
    assert REF['pretrain.standardize_target'].value == 'unbiased variance'
    assert torch.allclose(standardize(t), ref, atol=1e-6)


# ------------------------------------------------ pre-training data
def mask_generators(node) -> List[str]:
    """Types of every ``*MaskGenerator`` transform anywhere in a config."""
    if isinstance(node, dict):
        found = [node['type']] if str(node.get('type', '')).endswith(
            'MaskGenerator') else []
        return found + [t for v in node.values() for t in mask_generators(v)]
    if isinstance(node, (list, tuple)):
        return [t for v in node for t in mask_generators(v)]
    return []


def test_every_block_masking_config_uses_the_references_generator():
    paths = sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**',
                                                 '*.py'), recursive=True)
                   if '_base_' not in p)
    keys = {path: key for key, path in CFG.items()}  # share load()'s cache
    using = {}
    for path in paths:
        rel = osp.relpath(path, REPO)
        types = set(mask_generators(load(keys.get(rel, rel)).to_dict()))
        if types:
            using[rel] = types
    # the pre-training configs, the toy / demo ones and BEiT v2 + DTM
    assert {CFG['pretrain'], FRAMEWORK_CFGS[2],
            'configs/dtm/dtm_vit-tiny-p16_1xb8-40iter_toy.py'} <= set(using)
    for path, types in using.items():  # never MMPretrain's BEiT one
        assert types == {'BlockMaskGenerator'}, path
    assert REF['pretrain.mask_generator'].value.startswith(
        'BlockMaskGenerator')


def test_pretrain_masks_reach_every_position(pretrain):
    """The shipped generator, as configured: exactly 75, and the last row
    and column masked too (the full comparison: tests/test_datasets/
    test_masking.py)."""
    cfg = pretrain[0]
    step = [t for t in cfg.train_pipeline if t['type'].endswith(
        'MaskGenerator')]
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        gen = TRANSFORMS.build(step[0])
    masks = np.stack([gen.transform({})['mask'] for _ in range(600)])
    assert np.all(masks.reshape(600, -1).sum(1) ==
                  REF['pretrain.mask_patches'].value)
    assert masks[:, -1, :].mean() > 0.08 and masks[:, :, -1].mean() > 0.08


@pytest.mark.parametrize('key', ['pretrain', 'pretrain_l'])
def test_pretrain_augmentation_order(key):
    """Jitter the whole image, flip, then crop; the teacher sees the
    student's view (one image per sample, no second view)."""
    cfg = load(key)
    pipeline = cfg.train_dataloader.dataset.pipeline
    types = [t['type'] for t in pipeline]
    aug = REF['pretrain.augment_order'].value
    assert types == ['SeedPerSample', 'SafeLoadImageFromFile', *aug,
                     'BlockMaskGenerator', 'PackInputs']
    first = types.index(aug[0])
    jitter, flip, crop = pipeline[first:first + 3]
    assert (jitter.brightness, jitter.contrast, jitter.saturation,
            jitter.hue) == REF['pretrain.color_jitter'].value
    assert (flip.prob, flip.direction) == (0.5, 'horizontal')
    assert (crop.scale, crop.interpolation) == (
        224, REF['pretrain.interpolation'].value)
    # the chain runs, and the jitter gets the whole (non-square) image
    seen = []
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        steps = [TRANSFORMS.build(t) for t in pipeline[first:first + 4]]
    jitter = steps[0]
    plain = jitter.transform
    jitter.transform = lambda r: (seen.append(r['img'].shape), plain(r))[1]
    img = np.random.randint(0, 255, (300, 200, 3), np.uint8)
    results = dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2])
    for step in steps:
        results = step(results)
    assert seen == [(300, 200, 3)]
    assert results['img'].shape == (224, 224, 3)
    assert results['mask'].sum() == REF['pretrain.mask_patches'].value


@pytest.mark.parametrize('key,ref', [('pretrain', 'pretrain'),
                                     ('finetune', 'finetune')])
def test_full_batches_only(key, ref, monkeypatch):
    """ImageNet-1K's 1,281,167 images on 8 ranks: the last incomplete
    batch is dropped, as in the reference."""
    cfg = load(key)
    loader_cfg = cfg.train_dataloader.to_dict()
    assert loader_cfg['drop_last'] is REF[f'{ref}.drop_last'].value
    loader_cfg['dataset'] = range(1281167)  # a stand-in of the same length
    monkeypatch.setattr('mmengine.dataset.sampler.get_dist_info',
                        lambda: (0, 8))
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    assert len(loader.sampler) == 160146  # per rank, padded as the reference
    assert len(loader) == REF[f'{ref}.iters_per_epoch'].value
    loader_cfg.update(dataset=range(1281167), drop_last=False)
    assert len(Runner.build_dataloader(loader_cfg, seed=0)) == \
        REF[f'{ref}.iters_per_epoch'].value + 1  # the partial batch


# ------------------------------------------------------------ fine-tuning
def test_finetune_recipe(finetune):
    cfg, model, wrapper, head = finetune
    check_drop_path(model.backbone, REF['finetune.drop_path_rate'].value)
    group = wrapper.optimizer.param_groups[0]
    assert cfg.optim_wrapper.optimizer.lr == REF['finetune.lr'].value
    assert 8 * cfg.train_dataloader.batch_size == REF['finetune.batch'].value
    assert cfg.auto_scale_lr.base_batch_size == REF['finetune.batch'].value
    assert group['betas'] == REF['finetune.betas'].value
    assert cfg.optim_wrapper.optimizer.weight_decay == \
        REF['finetune.weight_decay'].value
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == \
        REF['finetune.layer_decay'].value
    warmup, cosine = cfg.param_scheduler
    assert (cfg.train_cfg.max_epochs, warmup.end) == \
        REF['finetune.epochs'].value
    assert cosine.eta_min_ratio * cfg.optim_wrapper.optimizer.lr == \
        pytest.approx(REF['finetune.min_lr'].value, rel=1e-12)
    # the head: N(0, 0.02) (timm's trunc_normal_, cut at +-2: untruncated)
    # times init_scale; zero bias
    scale = REF['finetune.head_init_scale'].value
    assert head.fc.weight.std().item() == pytest.approx(0.02 * scale,
                                                        rel=0.02)
    assert torch.all(head.fc.bias == 0)


def test_vit_l_pretraining_and_finetuning_numbers():
    bb = load('pretrain_l').model.backbone
    assert bb.arch == 'large'
    assert (bb.layer_scale_init_value, bb.drop_path_rate) == \
        REF['pretrain.l'].value
    cfg = load('finetune_l')
    warmup, _ = cfg.param_scheduler
    assert (cfg.train_cfg.max_epochs, warmup.end,
            cfg.optim_wrapper.paramwise_cfg.layer_decay_rate,
            cfg.model.backbone.drop_path_rate) == REF['finetune.l'].value
    assert cfg.model.backbone.arch == 'large'


def test_finetune_decay_set_and_layer_decay(finetune):
    _, model, wrapper, _ = finetune
    decay, no_decay = decay_sets(model, wrapper)
    assert decay == blocks(BLOCK_DECAY) | {
        'backbone.patch_embed.projection.weight', 'head.fc.weight'}
    assert no_decay == blocks(BLOCK_NO_DECAY) | {
        'backbone.cls_token', 'backbone.patch_embed.projection.bias',
        'backbone.ln2.weight', 'backbone.ln2.bias', 'head.fc.bias'}
    trainable = dict(model.named_parameters())
    assert decay == {n for n, p in trainable.items() if reference_rule(n, p)}
    rate = REF['finetune.layer_decay'].value
    scales = lr_scales(model, wrapper)
    for name, scale in scales.items():
        if name.startswith('backbone.layers.'):
            layer_id = int(name.split('.')[2]) + 1
        elif name.startswith(('backbone.cls_token', 'backbone.patch_embed')):
            layer_id = 0
        else:
            layer_id = 13
        assert scale == pytest.approx(rate**(13 - layer_id)), name


def reference_cosine(it: int, lr: float, min_lr: float, warmup: int,
                     total: int) -> float:
    """The reference's lr at iteration ``it`` >= ``warmup`` of ``total``,
    before the group's lr_scale (utils/utils.py:540-542)."""
    i, n = it - warmup, total - warmup
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * i / n))


@pytest.mark.parametrize('key', ['finetune_s', 'finetune', 'finetune_l'])
def test_finetune_floor_is_min_lr_times_each_groups_scale(key):
    """Each layer group's cosine ends at min_lr x its lr_scale. The shipped
    optimizer and schedulers, stepped as the Runner steps them (a short
    epoch: the shape of the schedule does not depend on its length)."""
    cfg = load(key)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        with torch.device('meta'):
            model = MODELS.build(cfg.model)
        wrapper = build_optim_wrapper(model, plain_wrapper(cfg.optim_wrapper))
    epoch = 50  # T = 4000 cosine steps: the last is within 1e-4 of the end
    schedulers = [PARAM_SCHEDULERS.build(
        s, default_args=dict(optimizer=wrapper, epoch_length=epoch))
        for s in cfg.param_scheduler]
    total = cfg.train_cfg.max_epochs * epoch
    warmup = cfg.param_scheduler[0].end * epoch
    for _ in range(total - 1):  # to the last iteration
        for scheduler in schedulers:
            scheduler.step()
    lr, min_lr = REF['finetune.lr'].value, REF['finetune.min_lr'].value
    end = reference_cosine(total - 1, lr, min_lr, warmup, total)
    groups = wrapper.optimizer.param_groups
    for group in groups:
        assert group['lr'] == pytest.approx(end * group['lr_scale'],
                                            rel=1e-9)
    lowest = min(groups, key=lambda g: g['lr_scale'])
    depth = len(model.backbone.layers)
    rate = cfg.optim_wrapper.paramwise_cfg.layer_decay_rate
    assert lowest['lr_scale'] == pytest.approx(rate**(depth + 1))
    # min_lr x scale (the last step is (pi / T)^2 / 4 of the peak above it)
    assert lowest['lr'] == pytest.approx(min_lr * lowest['lr_scale'],
                                         rel=1e-3)
    assert REF['finetune.floor'].value.startswith('min_lr x lr_scale')


def test_transfer_configs_share_the_finetuning_schedule():
    """iNaturalist and the fine-grained sets: the ImageNet schedule (and
    its per-group floor) and full batches, unchanged."""
    paths = glob.glob(osp.join(REPO, 'configs', 'dtm', 'benchmarks',
                               'vit-base-p16_dtm-pre_8xb128-amp-coslr-'
                               '100e_*.py'))
    assert len(paths) == 9
    base = load('finetune')
    for path in paths:
        cfg = load(path)
        assert cfg.param_scheduler == base.param_scheduler, path
        assert cfg.train_dataloader.drop_last is True, path


# ----------------------------------------------------------------- ADE20K
@pytest.mark.parametrize('size', ['b', 'l'])
def test_ade20k_recipe(size):
    cfg, model, wrapper = ade20k(f'ade20k_{size}')
    opt = cfg.optim_wrapper.optimizer
    assert opt.lr == REF[f'ade20k.{size}.lr'].value
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == \
        REF[f'ade20k.{size}.layer_decay'].value
    check_drop_path(model.backbone, REF[f'ade20k.{size}.drop_path_rate'].value)
    assert tuple(opt.betas) == REF['ade20k.b.betas'].value
    assert opt.weight_decay == REF['ade20k.b.weight_decay'].value
    warmup, poly = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and poly.type == 'PolyLR'
    assert warmup.start_factor == REF['ade20k.warmup_ratio'].value
    assert (poly.power, poly.eta_min) == REF['ade20k.poly'].value
    assert cfg.train_cfg.max_iters == REF['ade20k.iters'].value
    assert cfg.train_dataloader.batch_size == REF['ade20k.batch_per_gpu'].value
    assert cfg.crop_size == REF['ade20k.crop'].value


def test_ade20k_decay_set_and_layer_decay():
    cfg, model, wrapper = ade20k('ade20k_b')
    decay, no_decay = decay_sets(model, wrapper)
    backbone = {n for n in decay | no_decay if n.startswith('backbone.')}
    assert decay & backbone == blocks(BLOCK_DECAY) | {
        'backbone.cls_token', 'backbone.patch_embed.projection.weight'}
    assert no_decay & backbone == blocks(BLOCK_NO_DECAY) | {
        'backbone.patch_embed.projection.bias'}
    trainable = dict(model.named_parameters())
    assert set(trainable) == decay | no_decay
    for name, p in trainable.items():  # BEiT v2: 1-D or *.bias -> no decay
        assert (name in no_decay) == (p.ndim == 1 or name.endswith('.bias'))
    # e.g. the decode head's and the neck's BatchNorm weights
    assert {'decode_head.bottleneck.bn.weight',
            'auxiliary_head.convs.0.bn.weight'} <= no_decay
    rate = REF['ade20k.b.layer_decay'].value
    for name, scale in lr_scales(model, wrapper).items():
        if name.startswith('backbone.layers.'):
            expected = rate**(12 - int(name.split('.')[2]))
        elif name.startswith(('backbone.cls_token', 'backbone.patch_embed')):
            expected = rate**13
        else:
            expected = 1.0
        assert scale == pytest.approx(expected), name


def mmcv_poly(t: int, lr: float) -> float:
    """mmcv 1.x's lr at iteration ``t`` under BEiT v2's lr_config
    (REF['ade20k.schedule'])."""
    power, min_lr = REF['ade20k.poly'].value
    regular = (lr - min_lr) * (1 - t / REF['ade20k.iters'].value)**power \
        + min_lr
    warmup, ratio = (REF['ade20k.warmup_iters'].value,
                     REF['ade20k.warmup_ratio'].value)
    if t >= warmup:
        return regular
    return regular * (1 - (1 - t / warmup) * (1 - ratio))


ADE_CHECKS = (0, 750, 1500, 80000, 159999)


def test_ade20k_schedule_is_mmcv_poly():
    """The shipped schedulers, stepped through all 160k iterations, give
    mmcv 1.x's lr at each checked iteration (to 1e-9 of it)."""
    cfg = load('ade20k_b')
    lr = cfg.optim_wrapper.optimizer.lr
    wrapper = OptimWrapper(torch.optim.SGD([nn.Parameter(torch.zeros(1))],
                                           lr=lr))
    schedulers = [PARAM_SCHEDULERS.build(s, default_args=dict(
        optimizer=wrapper)) for s in cfg.param_scheduler]
    got = {}
    for t in range(cfg.train_cfg.max_iters):
        if t in ADE_CHECKS:
            got[t] = wrapper.optimizer.param_groups[0]['lr']
        for scheduler in schedulers:
            scheduler.step()
    for t in ADE_CHECKS:
        assert got[t] == pytest.approx(mmcv_poly(t, lr), rel=1e-9, abs=0), t
    assert got[1500] == pytest.approx(lr * (1 - 1500 / 160000), rel=1e-12)


def test_ade20k_schedule_per_layer_group():
    """Every layer-decay group follows the schedule times its scale (the
    floor, min_lr 0, is 0 for every group)."""
    cfg, model, _ = ade20k('ade20k_b')
    with DefaultScope.overwrite_default_scope('mmseg'):
        wrapper = build_optim_wrapper(model, plain_wrapper(cfg.optim_wrapper))
    schedulers = [PARAM_SCHEDULERS.build(s, default_args=dict(
        optimizer=wrapper)) for s in cfg.param_scheduler]
    lr = cfg.optim_wrapper.optimizer.lr
    for t in range(1501):
        if t in (750, 1500):
            for group in wrapper.optimizer.param_groups:
                assert group['lr'] == pytest.approx(
                    mmcv_poly(t, lr) * group['lr_scale'], rel=1e-9)
        for scheduler in schedulers:
            scheduler.step()


def test_every_open_choice_is_in_the_config_readme():
    text = open(osp.join(REPO, 'configs', 'dtm', 'README.md')).read()
    for key, ref in REF.items():
        if ref.open:
            assert f'`{key}`' in text, key
