"""The lean optimizer step: merged parameter groups keep every parameter's
hyper-parameters (checked parameter by parameter against MMEngine's and
MMPretrain's ungrouped construction, for the shipped configs), and the
grouped foreach AdamW + foreach clipping step gives the same update."""
import copy
import functools
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from torch import nn

import mmdtm  # noqa: F401  (registers the constructors)
from mmdtm.engine import lean_optim
from mmdtm.engine.lean_optim import fast_kernel_kwargs, merge_param_groups

from ..conftest import REPO, TINY_CLIP

# fused AdamW/SGD on CPU exist since torch 2.4 (decided from the version
# here, independently of the probe under test)
CPU_FUSED = tuple(int(x) for x in torch.__version__.split('.')[:2]) >= (2, 4)
CPU_KERNEL = 'fused' if CPU_FUSED else 'foreach'

# implementation choices, not hyper-parameters
KERNEL_KEYS = ('foreach', 'fused')
# names, and MMEngine's records of how lr / weight_decay were derived
NAME_KEYS = ('params', 'param_name', 'param_names', 'lr_mult', 'decay_mult')
UNGROUPED = {'LeanOptimWrapperConstructor': 'DefaultOptimWrapperConstructor',
             'LeanLayerDecayOptimWrapperConstructor':
             'BackboneLayerDecayOptimWrapperConstructor'}


@functools.lru_cache(maxsize=None)
def _load(path: str) -> Config:
    return Config.fromfile(path)


def _per_param(optimizer: torch.optim.Optimizer) -> dict:
    """id(param) -> its group's hyper-parameters (names and kernels left
    out); every parameter must sit in exactly one group."""
    out = {}
    for group in optimizer.param_groups:
        hyper = {k: v for k, v in group.items()
                 if k not in NAME_KEYS + KERNEL_KEYS}
        for p in group['params']:
            assert id(p) not in out, 'a parameter sits in two groups'
            out[id(p)] = hyper
    return out


def _ungrouped_cfg(model: nn.Module, cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    lean = cfg.get('constructor', 'DefaultOptimWrapperConstructor')
    assert lean in UNGROUPED, f'{lean}: the config does not use a lean ' \
        f'constructor'
    base = UNGROUPED[lean]
    if lean.startswith('LeanLayerDecay') and hasattr(model, 'get_layer_depth'):
        base = 'LearningRateDecayOptimWrapperConstructor'  # MMPretrain's own
    cfg['constructor'] = base
    return cfg


def _compare(model: nn.Module, optim_cfg: dict) -> tuple:
    """(grouped, ungrouped) optimizers; asserts equal hyper-parameters."""
    cfg = dict(copy.deepcopy(optim_cfg), type='OptimWrapper')
    cfg.pop('loss_scale', None)
    grouped = build_optim_wrapper(model, cfg).optimizer
    ungrouped = build_optim_wrapper(model,
                                    _ungrouped_cfg(model, cfg)).optimizer
    ours, ref = _per_param(grouped), _per_param(ungrouped)
    assert ours.keys() == ref.keys()
    names = {id(p): n for n, p in model.named_parameters()}
    for pid, hyper in ref.items():
        assert ours[pid] == hyper, names[pid]
    # as few groups as there are distinct settings
    distinct = {repr(sorted(h.items())) for h in ref.values()}
    assert len(grouped.param_groups) == len(distinct)
    return grouped, ungrouped


def _config(name: str) -> Config:
    paths = glob.glob(osp.join(REPO, 'configs', '**', name), recursive=True)
    assert len(paths) == 1, name
    return _load(paths[0])


def test_pretraining_config_two_groups():
    from mmengine.registry import init_default_scope

    from mmdtm.registry import MODELS
    cfg = _config('dtm_beit-base-p16_8xb256-amp-coslr-300e_in1k.py')
    init_default_scope('mmpretrain')
    model_cfg = copy.deepcopy(cfg.model)
    # a tiny random teacher (frozen either way); the full-size student
    model_cfg.target_generator.update(pretrained=None, model_cfg=TINY_CLIP)
    model_cfg.neck.out_channels = TINY_CLIP['embed_dim']
    model_cfg.backbone.img_size = 64  # the same parameter names
    model_cfg.head.loss.update(max_merge=[16, 16], seed=0)
    model = MODELS.build(model_cfg)
    grouped, ungrouped = _compare(model, cfg.optim_wrapper)
    assert len(ungrouped.param_groups) > 100
    decays = sorted(g['weight_decay'] for g in grouped.param_groups)
    assert decays == [0.0, 0.05]  # decay and no decay, like the reference


def _meta_model(cfg: Config, scope: str) -> nn.Module:
    """The config's full-size model on the meta device (no weights, no
    checkpoint), built in ``scope``'s registry."""
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(scope)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.pop('init_cfg', None)
    with torch.device('meta'):
        return MODELS.build(model_cfg)


def test_finetuning_config_groups_per_layer_and_decay():
    cfg = _config('vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py')
    grouped, _ = _compare(_meta_model(cfg, 'mmpretrain'), cfg.optim_wrapper)
    # 14 depths (stem, 12 blocks, head), each at most decay / no decay
    assert 14 <= len(grouped.param_groups) <= 28


def test_ade20k_config_groups_per_layer_and_decay():
    pytest.importorskip('mmcv._ext', reason='mmseg.models needs mmcv ops')
    import mmseg.models  # noqa: F401  (registers mmseg's models)
    cfg = _config('dtm-vit-base_upernet_8xb2-amp-160k_ade20k-512x512.py')
    grouped, _ = _compare(_meta_model(cfg, 'mmseg'), cfg.optim_wrapper)
    assert len(grouped.param_groups) <= 28


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(),
                         nn.Linear(8, 3))


TINY_CFG = dict(
    optimizer=dict(type='AdamW', lr=1e-2, betas=(0.9, 0.98),
                   weight_decay=0.05),
    constructor='LeanOptimWrapperConstructor',
    clip_grad=dict(max_norm=0.5),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'3.weight': dict(lr_mult=0.5)}))


def test_grouped_fused_step_matches_ungrouped_step():
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
    models, wrappers = [], []
    for lean in (True, False):
        model = _tiny()
        cfg = copy.deepcopy(TINY_CFG)
        if not lean:
            cfg = _ungrouped_cfg(model, cfg)
        wrapper = build_optim_wrapper(model, cfg)
        models.append(model)
        wrappers.append(wrapper)
    grouped = wrappers[0]
    assert [g[CPU_KERNEL] for g in grouped.optimizer.param_groups
            ] == [True] * 3
    assert grouped.clip_grad_kwargs == dict(max_norm=0.5, foreach=True)
    assert wrappers[1].clip_grad_kwargs == dict(max_norm=0.5)
    assert len(wrappers[1].optimizer.param_groups) == 6
    lrs = sorted(g['lr'] for g in grouped.optimizer.param_groups)
    assert lrs == [5e-3, 1e-2, 1e-2]
    for _ in range(3):
        for model, wrapper in zip(models, wrappers):
            loss = model(x).square().mean() * 100  # large: clipping acts
            wrapper.update_params(loss)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b)
    assert not torch.equal(models[0][0].weight, _tiny()[0].weight)


def test_resuming_another_grouping_says_why():
    """A state written by the ungrouped constructor (one group per
    parameter) cannot resume a grouped optimizer: the error says what the
    two layouts are and names the config key and load_from; the same
    grouping resumes every parameter's state."""
    model = _tiny()
    lean = build_optim_wrapper(model, copy.deepcopy(TINY_CFG))
    plain = build_optim_wrapper(model, _ungrouped_cfg(model, TINY_CFG))
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    for wrapper in (lean, plain):
        wrapper.update_params(model(x).square().mean())
    with pytest.raises(ValueError) as err:
        build_optim_wrapper(model, copy.deepcopy(TINY_CFG)).load_state_dict(
            plain.state_dict())
    msg = str(err.value)
    assert '6 parameter groups (sizes 1, 1, 1, 1, 1, 1)' in msg
    assert 'this optimizer has 3 parameter groups' in msg
    assert 'optim_wrapper.constructor' in msg and 'load_from' in msg
    resumed = build_optim_wrapper(model, copy.deepcopy(TINY_CFG))
    resumed.load_state_dict(lean.state_dict())
    for p in model.parameters():
        for key, value in lean.optimizer.state[p].items():
            assert torch.equal(resumed.optimizer.state[p][key], value), key


def test_config_choices_are_kept():
    model = _tiny()
    cfg = copy.deepcopy(TINY_CFG)
    cfg['optimizer']['foreach'] = True
    cfg['clip_grad']['foreach'] = False
    wrapper = build_optim_wrapper(model, cfg)
    assert all(g['foreach'] is True and not g['fused']
               for g in wrapper.optimizer.param_groups)
    assert wrapper.clip_grad_kwargs['foreach'] is False
    # no paramwise_cfg: one group, still fused; LARS has neither kernel
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='AdamW', lr=1e-3),
        constructor='LeanOptimWrapperConstructor'))
    assert len(wrapper.optimizer.param_groups) == 1
    assert wrapper.optimizer.param_groups[0][CPU_KERNEL] is True
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='LARS', lr=1e-3),
        constructor='LeanOptimWrapperConstructor'))
    assert wrapper.optimizer.defaults.get('foreach') is None


def test_fast_kernel_choice():
    cpu, cuda = torch.device('cpu'), torch.device('cuda', 0)
    adamw, sgd = torch.optim.AdamW, torch.optim.SGD
    # CUDA is probed only where it exists
    on_cuda = 'fused' if torch.cuda.is_available() else 'foreach'
    assert fast_kernel_kwargs(adamw, [cuda], {}) == {on_cuda: True}
    assert fast_kernel_kwargs(adamw, [cpu], {}) == {CPU_KERNEL: True}
    # no fused kernel in the class: foreach
    assert fast_kernel_kwargs(torch.optim.RMSprop, [cpu], {}) == {
        'foreach': True}
    assert fast_kernel_kwargs(sgd, [cuda], {}) == {on_cuda: True}
    assert fast_kernel_kwargs(adamw, [cpu, cuda], {}) == {}
    assert fast_kernel_kwargs(adamw, [torch.device('meta')], {}) == {}
    assert fast_kernel_kwargs(adamw, [cuda], {'fused': False}) == {}
    assert fast_kernel_kwargs(torch.optim.LBFGS, [cpu], {}) == {}


def test_merge_keeps_order_names_and_distinct_settings():
    p = [nn.Parameter(torch.zeros(i + 1)) for i in range(5)]
    groups = [dict(params=[p[0]], weight_decay=0.0, param_name='a'),
              dict(params=[p[1]], lr=1.0, weight_decay=0.05, param_name='b'),
              dict(params=[p[2]], lr=1.0, weight_decay=0.0, param_name='c'),
              dict(params=[p[3]], lr=0.5, weight_decay=0.0, param_name='d'),
              dict(params=[p[4]], lr=1.0, weight_decay=0.0,
                   betas=(0.9, 0.9), param_name='e')]
    merged = merge_param_groups(groups, dict(lr=1.0, betas=(0.9, 0.999)))
    assert [g['param_names'] for g in merged] == [['a', 'c'], ['b'], ['d'],
                                                   ['e']]
    assert merged[0]['params'] == [p[0], p[2]]
    assert groups[0]['params'] == [p[0]]  # input untouched
    assert 'param_name' not in merged[0]
    assert merged[0]['betas'] == (0.9, 0.999) and merged[0]['lr'] == 1.0
    with pytest.raises(ValueError, match='betas'):
        merge_param_groups(groups)


def test_no_fused_cpu_kernel_degrades_with_one_line(monkeypatch):
    """Where fused AdamW does not run on CPU (torch < 2.4; simulated on a
    newer torch), the constructor takes foreach, logs one line for the
    whole process, and training steps."""
    import mmengine.logging

    lines = []
    monkeypatch.setattr(mmengine.logging, 'print_log',
                        lambda msg, **kw: lines.append(msg))
    monkeypatch.setattr(lean_optim, '_FUSED_WORKS', {})
    monkeypatch.setattr('mmdtm.degrade._TOLD', set())
    if CPU_FUSED:  # newer torch: AdamW refuses fused CPU params as before 2.4
        init = torch.optim.AdamW.__init__

        @functools.wraps(init)  # same signature for the constructor
        def refusing_init(self, params, *args, **kwargs):
            params = list(params)
            tensors = [p for g in params for p in (
                g['params'] if isinstance(g, dict) else [g])]
            if kwargs.get('fused') and any(p.device.type == 'cpu'
                                           for p in tensors):
                raise RuntimeError('`fused=True` requires all the params '
                                   'to be CUDA, floating point Tensor')
            init(self, params, *args, **kwargs)

        monkeypatch.setattr(torch.optim.AdamW, '__init__', refusing_init)
    cfg = copy.deepcopy(TINY_CFG)
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(3))
    for _ in range(2):
        model = _tiny()
        wrapper = build_optim_wrapper(model, copy.deepcopy(cfg))
        assert all(g['foreach'] is True and not g['fused']
                   for g in wrapper.optimizer.param_groups)
        before = model[0].weight.detach().clone()
        wrapper.update_params(model(x).square().mean())
        assert not torch.equal(model[0].weight, before)
    lines = [line for line in lines if 'fused=True' in line]
    assert len(lines) == 1, lines
    assert 'AdamW' in lines[0] and 'foreach' in lines[0] and (
        torch.__version__ in lines[0])
