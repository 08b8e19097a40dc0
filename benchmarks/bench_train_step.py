"""One full DTM training step with and without morphing, side by side.

The step is ``DTM.loss`` followed by the optimizer wrapper's
``update_params``: student forward (mask tokens, whole sequence), teacher
forward (frozen CLIP ViT-B/16, random weights), morphing and loss,
backward, gradient clipping and the AdamW step, under the wrapper's
``optim_context`` (autocast with ``--amp``). The model and optimizer are
built from the real configs; the teacher is random
(``model.target_generator.pretrained=None``), which costs exactly what the
real one does.

Arms, on the same model, optimizer, batch and teacher:

* ``morph``: a fixed, representative schedule (``--schedule``), the same in
  every repetition, passed to ``DTMLoss.compute(levels=...)``;
* ``plain``: token-wise distillation, r = 0 at every level (what
  ``head.loss.max_merge=[0, 0]`` gives).

Schedules: ``expected`` (default) is the mean draw of the default schedule,
m = 98 of N = 196 tokens with k = 7 rounds on level 1 and k = 8 on level 2
(E[k] = 7.5 for k ~ U{1..14}); ``max`` is the costliest draw (m = 196, k = 14
on both levels); ``drawn`` uses the real sampler with a fixed seed, one draw
per repetition, the same draws for every model.

Also timed, on the step's own (pred, target): the loss alone (forward and
backward through ``pred``), with and without morphing, so the extra
milliseconds of morphing are visible apart from the noise of a whole step.

Example::

    OMP_NUM_THREADS=2 python benchmarks/bench_train_step.py --json t.json
    python benchmarks/bench_train_step.py --device cuda --amp bf16 --batch 64
"""
import argparse
import copy
import math
import os.path as osp
from typing import Dict, List, Sequence

import torch

import common  # noqa: I100  (benchmarks/common.py, next to this script)

CONFIGS = {
    'small': 'configs/dtm/dtm_beit-small-p16_8xb256-amp-coslr-300e_in1k.py',
    'base': 'configs/dtm/dtm_beit-base-p16_8xb256-amp-coslr-300e_in1k.py',
}
GOAL_RATIO = 1.03  # morphing may cost at most 3 % of a step


def build_model(model_key: str, device: torch.device):
    """(DTM model in train mode, its config); the teacher weights random."""
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope

    import mmdtm  # noqa: F401  (registers the components)
    from mmdtm.registry import MODELS

    # a quiet current logger: no per-parameter lines from the constructor
    MMLogger.get_instance('mmdtm_bench', log_level='WARNING')
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(osp.join(common.REPO, CONFIGS[model_key]))
    cfg.model.target_generator.pretrained = None
    return MODELS.build(cfg.model).to(device).train(), cfg


# the constructor each lean one extends: one parameter group per parameter,
# single-tensor AdamW and clipping (what the configs used before)
UNGROUPED = {'LeanOptimWrapperConstructor': 'DefaultOptimWrapperConstructor',
             'LeanLayerDecayOptimWrapperConstructor':
             'BackboneLayerDecayOptimWrapperConstructor'}


def build(model_key: str, device: torch.device, amp: str):
    """(model, optim_wrapper, per-parameter optim_wrapper) from the config,
    teacher weights random."""
    model, cfg = build_model(model_key, device)
    return (model, build_wrapper(model, cfg.optim_wrapper, amp),
            build_wrapper(model, cfg.optim_wrapper, amp, ungrouped=True))


def build_wrapper(model, optim_wrapper_cfg, amp: str, ungrouped=False):
    """The config's optimizer wrapper; with ``ungrouped`` the constructor it
    extends instead (a group per parameter, single-tensor kernels)."""
    from mmengine.optim import build_optim_wrapper
    optim_cfg = copy.deepcopy(optim_wrapper_cfg)
    if ungrouped:
        optim_cfg.constructor = UNGROUPED.get(
            optim_cfg.get('constructor'), optim_cfg.get('constructor'))
    if amp == 'none':
        optim_cfg.type = 'OptimWrapper'
        optim_cfg.pop('loss_scale', None)
    else:
        optim_cfg.type = 'AmpOptimWrapper'
        optim_cfg.dtype = {'bf16': 'bfloat16', 'fp16': 'float16'}[amp]
        if amp == 'bf16':
            optim_cfg.pop('loss_scale', None)
    return build_optim_wrapper(model, optim_cfg)


def schedules(kind: str, count: int, seed: int, num_tokens: int,
              loss_module) -> List[list]:
    """``count`` schedules (lists of MorphLevel) for the morphing arm."""
    from mmdtm.morphing import MorphLevel, level_rounds, sample_schedule
    n1 = loss_module.max_merge[0]
    if kind in ('expected', 'max'):
        if kind == 'expected':
            draws = [(n // 2, k) for n, k in zip(
                loss_module.max_merge, (7, 8) * len(loss_module.max_merge))]
        else:
            draws = list(zip(loss_module.max_merge, loss_module.max_iters))
        levels = [MorphLevel(m, k, level_rounds(
            m, k, loss_module.count, guard_n=n1, num_tokens=num_tokens,
            protect_first=loss_module.protect_first)) for m, k in draws]
        return [levels] * count
    g = torch.Generator().manual_seed(seed)
    return [sample_schedule(loss_module.max_merge, loss_module.max_iters, g,
                            count=loss_module.count, guard=loss_module.guard,
                            num_tokens=num_tokens,
                            protect_first=loss_module.protect_first)
            for _ in range(count)]


def identity_levels(num_levels: int) -> list:
    from mmdtm.morphing import MorphLevel
    return [MorphLevel(0, 1, (0, ))] * num_levels


class Cycle:
    """Calls ``fn(item)`` with the items of ``items`` in turn."""

    def __init__(self, fn, items: Sequence):
        self.fn, self.items, self.i = fn, list(items), 0

    def __call__(self):
        item = self.items[self.i % len(self.items)]
        self.i += 1
        return self.fn(item)


def bench_optimizer(model, wrappers: Dict, img, mask, device, args) -> Dict:
    """Seconds of clip + step (``optim_wrapper.step()``) per wrapper, on
    gradients of one real backward; interleaved like the steps."""
    loss_module = model.head.loss_module
    with next(iter(wrappers.values())).optim_context(model):
        pred = model.neck(model.backbone(img, mask))
        target = model.target_generator(img)
        loss, _ = loss_module.compute(
            pred, target, mask, levels=identity_levels(loss_module.num_levels))
    loss.backward()
    arms = {name: wrapper.step for name, wrapper in wrappers.items()}
    return common.time_interleaved(arms, device, args.repeats,
                                   max(args.warmup, 1))


def bench_model(model_key: str, args, device: torch.device) -> Dict:
    from mmdtm.morphing import realised_groups
    model, optim_wrapper, per_param = build(model_key, device, args.amp)
    g = torch.Generator().manual_seed(args.seed)
    h, w = model.backbone.patch_resolution
    n = model.num_tokens
    img = torch.randn(args.batch, 3, h * 16, w * 16, generator=g).to(device)
    num_masked = round(n * 75 / 196)
    keys = torch.rand(args.batch, n, generator=g)
    mask = torch.zeros(args.batch, n, dtype=torch.bool)
    mask.scatter_(1, keys.argsort(1)[:, :num_masked], True)
    mask = mask.view(args.batch, h, w).to(device)
    optim_times = bench_optimizer(
        model, {'lean': optim_wrapper, 'per_param': per_param}, img, mask,
        device, args)
    optim = dict(
        optim_groups_lean=len(optim_wrapper.optimizer.param_groups),
        optim_groups_per_param=len(per_param.optimizer.param_groups),
        optim_lean_ms=1e3 * common.median(optim_times['lean']),
        optim_per_param_ms=1e3 * common.median(optim_times['per_param']),
        optim_speedup=(common.median(optim_times['per_param']) /
                       common.median(optim_times['lean'])),
        optim_speedup_min=(min(optim_times['per_param']) /
                           min(optim_times['lean'])),
        optim_times_s=optim_times)
    del per_param
    optim_wrapper.zero_grad()
    if args.optimizer_only:
        return dict(model=model_key, batch=args.batch, **optim)
    loss_module = model.head.loss_module

    def step(levels):
        # DTM.loss, line by line, with a fixed schedule, then the update
        with optim_wrapper.optim_context(model):
            pred = model.neck(model.backbone(img, mask))
            target = model.target_generator(img)
            loss, _ = loss_module.compute(pred, target, mask, levels=levels)
        optim_wrapper.update_params(loss)
        return loss.detach()

    calls = args.warmup + args.repeats
    morph_levels = schedules(args.schedule, calls, args.seed, n, loss_module)
    plain_levels = identity_levels(loss_module.num_levels)
    steps = {'morph': Cycle(step, morph_levels),
             'plain': Cycle(step, [plain_levels])}
    times = common.time_interleaved(steps, device, args.repeats, args.warmup)
    mem = {name: common.median([common.peak_memory(fn, device)
                                for _ in range(args.mem_repeats)])
           for name, fn in steps.items()}
    last_loss = float(step(plain_levels))

    # the loss alone on this model's (pred, target), forward + backward
    with torch.no_grad(), optim_wrapper.optim_context(model):
        pred0 = model.neck(model.backbone(img, mask)).detach()
        target0 = model.target_generator(img)

    def loss_only(levels):
        pred = pred0.detach().requires_grad_(True)
        with optim_wrapper.optim_context(model):
            loss, _ = loss_module.compute(pred, target0, mask, levels=levels)
        loss.backward()
        return pred.grad

    loss_arms = {'morph': Cycle(loss_only, morph_levels),
                 'plain': Cycle(loss_only, [plain_levels])}
    loss_times = common.time_interleaved(loss_arms, device, args.repeats,
                                         args.warmup)
    t_m, t_p = (common.median(times[a]) for a in ('morph', 'plain'))
    l_m, l_p = (common.median(loss_times[a]) for a in ('morph', 'plain'))
    groups = [[realised_groups(n, lv.per_round, loss_module.protect_first)
               for lv in levels] for levels in morph_levels]
    del model, optim_wrapper
    return dict(
        model=model_key, batch=args.batch, tokens=n,
        schedule=args.schedule,
        schedule_levels=[[dict(merge=lv.merge, num_rounds=lv.num_rounds,
                               per_round=list(lv.per_round)) for lv in levels]
                         for levels in morph_levels[:1 if args.schedule != 'drawn'
                                                    else calls]],
        groups_per_level=groups[0] if args.schedule != 'drawn' else groups,
        morph_ms=1e3 * t_m, plain_ms=1e3 * t_p, step_ratio=t_m / t_p,
        # noise on a shared machine only ever adds time: the ratio of the
        # fastest repetitions is a second, less noisy estimate
        step_ratio_min=min(times['morph']) / min(times['plain']),
        morph_mib=mem['morph'], plain_mib=mem['plain'],
        mem_ratio=(mem['morph'] / mem['plain'] if mem['plain'] > 0 else
                   float('nan')),
        loss_morph_ms=1e3 * l_m, loss_plain_ms=1e3 * l_p,
        morph_extra_ms=1e3 * (l_m - l_p),
        morph_extra_min_ms=1e3 * (min(loss_times['morph']) -
                                  min(loss_times['plain'])),
        # extra loss time of morphing over a plain step, fastest repetitions
        morph_share=((min(loss_times['morph']) - min(loss_times['plain'])) /
                     min(times['plain'])),
        images_per_s_plain=args.batch / t_p,
        final_loss=last_loss, loss_finite=math.isfinite(last_loss),
        times_s=times, loss_times_s=loss_times, **optim)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=['small', 'base'],
                        choices=sorted(CONFIGS),
                        help='students: small = ViT-S/16, base = ViT-B/16')
    parser.add_argument('--batch', type=int, default=2,
                        help='images per step (default 2, for a CPU)')
    parser.add_argument('--amp', default='none',
                        choices=['none', 'bf16', 'fp16'],
                        help='AmpOptimWrapper dtype (CUDA); none = fp32')
    parser.add_argument('--schedule', default='expected',
                        choices=['expected', 'max', 'drawn'],
                        help='morphing schedule of the morph arm')
    parser.add_argument('--optimizer-only', action='store_true',
                        help='time only the optimizer part (clip + step), '
                        'lean against per-parameter groups')
    parser.add_argument('--mem-repeats', type=int, default=1,
                        help='peak-memory measurements per arm (median)')
    common.add_common_args(parser, repeats=5, warmup=1)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = common.setup(args)
    if args.batch < 1:
        raise SystemExit(f'--batch must be >= 1, got {args.batch}')
    if args.amp != 'none' and device.type != 'cuda':
        raise SystemExit(f'--amp {args.amp} needs --device cuda (MMEngine\'s '
                         f'AmpOptimWrapper is CUDA-only)')
    info = common.machine_info(device)
    print(f"# bench_train_step on {info['device']} ({info.get('gpu', info['cpu'])}"
          f", torch {info['torch']}, {info['torch_threads']} threads), "
          f"batch {args.batch}, amp {args.amp}, schedule {args.schedule}")
    rows = []
    for key in args.models:
        row = bench_model(key, args, device)
        rows.append(row)
        print(f"  {key}: clip + step {row['optim_lean_ms']:.1f} ms in "
              f"{row['optim_groups_lean']} groups against "
              f"{row['optim_per_param_ms']:.1f} ms in "
              f"{row['optim_groups_per_param']}", flush=True)
        if not args.optimizer_only:
            print(f"  {key}: morph {row['morph_ms']:.0f} ms, plain "
                  f"{row['plain_ms']:.0f} ms, ratio {row['step_ratio']:.3f}; "
                  f"loss alone +{row['morph_extra_ms']:.1f} ms", flush=True)
    print()
    common.print_table(
        ['student', 'B', 'groups (lean)', 'clip + step lean ms',
         'groups (per parameter)', 'clip + step per-parameter ms',
         'speed-up (per-parameter / lean)', 'of fastest'],
        [[r['model'], r['batch'], r['optim_groups_lean'], r['optim_lean_ms'],
          r['optim_groups_per_param'], r['optim_per_param_ms'],
          r['optim_speedup'], r['optim_speedup_min']] for r in rows],
        title=f'the optimizer part: gradient clipping + AdamW step '
        f'(optim_wrapper.step()), the configs\' lean constructors against '
        f'the ungrouped constructors they extend, median of {args.repeats} '
        f'interleaved repetitions')
    summary: Dict[str, object] = {}
    for r in rows:
        summary[f"optim_speedup_{r['model']}"] = r['optim_speedup']
    if not args.optimizer_only:
        print()
        common.print_table(
            ['student', 'B', 'morph step ms', 'plain step ms',
             'step ratio (morph/plain)', 'ratio of fastest', 'morph MiB',
             'plain MiB', 'memory ratio', 'loss fwd+bwd morph ms',
             'loss plain ms', 'morphing share of step (fastest)'],
            [[r['model'], r['batch'], r['morph_ms'], r['plain_ms'],
              r['step_ratio'], r['step_ratio_min'], r['morph_mib'],
              r['plain_mib'], r['mem_ratio'], r['loss_morph_ms'],
              r['loss_plain_ms'], f"{100 * r['morph_share']:.2f} %"]
             for r in rows],
            title=f"schedule {args.schedule} (groups per level "
            f"{rows[0]['groups_per_level'] if args.schedule != 'drawn' else 'drawn'}"
            f"), median of {args.repeats} interleaved repetitions after "
            f"{args.warmup} warm-up; peak memory of a step above the model "
            f"and optimizer state "
            f"({'CUDA allocator' if device.type == 'cuda' else 'RSS'})")
        for r in rows:
            summary[f"step_ratio_{r['model']}"] = r['step_ratio']
        for r in rows:
            summary[f"step_ratio_min_{r['model']}"] = r['step_ratio_min']
        for r in rows:
            summary[f"mem_ratio_{r['model']}"] = r['mem_ratio']
        for r in rows:
            summary[f"morph_share_{r['model']}"] = r['morph_share']
        summary['goal_step_ratio'] = (
            'met' if max(r['step_ratio'] for r in rows) <= GOAL_RATIO else
            'missed')
    common.finish('train_step', summary,
                  dict(machine=info, args=vars(args), rows=rows,
                       goals=dict(step_ratio_at_most=GOAL_RATIO)),
                  args.json)


if __name__ == '__main__':
    main()
