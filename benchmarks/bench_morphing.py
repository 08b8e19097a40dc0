"""Our morphing op against the dense source-matrix formulation, side by side.

"ours": ``mmdtm.morphing.bipartite_partition`` with its default
``method='auto'`` (group ids; the tokens' Gram matrix once when four or
more rounds merge, else per-round products) then ``group_mean`` on the
student (B, N, C) and teacher (B, N, D) tokens.

"dense": the same algorithm written the way the reference code does it, here
independently: a (B, t, N) membership ("source") matrix, the identity at the
start, whose rows are merged every round alongside the size-weighted
features, and group means through two batched matmuls per side
(sums = S @ x, then S^T @ (sums / sizes)).

"rounds": ours with ``method='rounds'`` (a product of the current A and B
groups' features every round: ``_match_round``, what ``'auto'`` runs below
four merging rounds, and what the compiled arm computes).

"gram": ours with ``method='gram'`` (the tokens' Gram matrix once, then a
gather of its A x B block every round: ``_gram_round``, what ``'auto'``
runs from four merging rounds on), at every k, so that both sides of
``'auto'``'s threshold are measured.

"compiled": the static-shape level (``compiled_morph``: partition and both
group means in one ``torch.compile`` region; every schedule runs max(k)
rounds, r = 0 ones as no-ops, so one graph per input shape serves every k).
It prints how many times it recompiled over the timed schedules, and the
top-level operator calls (``torch.profiler``) of one ``DTMLoss`` forward +
backward at the costliest schedule (B = --ops-batch, default 64, m = N,
k = max(--iters) on both levels), eager and compiled.

The arms are checked to give the same group means before anything is timed.
Each configuration (batch B, rounds k) uses r = ceil(N / 2 / k) merges per
round, so about half of the tokens are merged whatever k.

Example::

    OMP_NUM_THREADS=2 python benchmarks/bench_morphing.py --json m.json
    python benchmarks/bench_morphing.py --device cuda --repeats 20
"""
import argparse
import math
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor

import common  # noqa: I100  (benchmarks/common.py, next to this script)
from mmdtm.morphing import (MorphLevel, bipartite_partition, compiled_morph,
                            group_mean, level_rounds, realised_groups)

GOAL_SPEEDUP = 4.0  # ours at least 4x dense at the largest batch ...
GOAL_SPEEDUP_MIN_ITERS = 7  # ... for k >= 7 rounds (k = 1 runs 'rounds')
GOAL_MEM_FRACTION = 0.1  # and at most a tenth of the dense peak memory
GOAL_OPS = 100  # compiled: top-level operator calls per loss fwd + bwd


# --------------------------------------------------------------- dense arm
def dense_sources(metric: Tensor, rounds: Sequence[int],
                  protect_first: bool = True) -> Tensor:
    """(B, G, N) float32 membership matrix after the matching rounds.

    Row g of ``S`` is the indicator of the original tokens in group g. Every
    round: cosine scores between even (A) and odd (B) rows of the current
    size-weighted features, each A row's best B partner, the r best A rows
    merged into their partners (stable sort by score), features merged as
    size-weighted sums, and the membership rows merged the same way.
    """
    batch, n, _ = metric.shape
    feat = metric.detach().float()
    size = feat.new_ones(batch, n, 1)
    src = torch.eye(n, device=feat.device).expand(batch, n, n).clone()
    for r in rounds:
        t = feat.shape[1]
        r = min(r, (t - int(protect_first)) // 2)
        if r <= 0:
            continue
        unit = feat / feat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sim = unit[:, 0::2] @ unit[:, 1::2].transpose(1, 2)
        if protect_first:
            sim[:, 0] = -math.inf
        score, partner = sim.max(dim=-1)
        ranking = score.argsort(dim=-1, descending=True, stable=True)
        moved = ranking[:, :r]
        kept = ranking[:, r:].sort(dim=-1).values
        target = partner.gather(1, moved)

        def merge_rows(rows: Tensor) -> Tensor:
            """(B, t, K) -> (B, t - r, K): kept A rows, then B rows + moved."""
            width = rows.shape[-1]
            a_rows, b_rows = rows[:, 0::2], rows[:, 1::2]
            keep = a_rows.gather(1, kept.unsqueeze(-1).expand(-1, -1, width))
            move = a_rows.gather(1, moved.unsqueeze(-1).expand(-1, -1, width))
            b_rows = b_rows.scatter_add(
                1, target.unsqueeze(-1).expand(-1, -1, width), move)
            return torch.cat([keep, b_rows], dim=1)

        weighted = merge_rows(torch.cat([feat * size, size], dim=-1))
        size = weighted[..., -1:]
        feat = weighted[..., :-1] / size
        src = merge_rows(src)
    return src


def dense_group_mean(x: Tensor, src: Tensor) -> Tensor:
    """(B, N, D) group means through two batched matmuls with (B, G, N)."""
    sums = src @ x.float()  # (B, G, D)
    means = sums / src.sum(-1, keepdim=True)
    return (src.transpose(1, 2) @ means).to(x.dtype)  # (B, N, D)


def dense_arm(student: Tensor, teacher: Tensor, rounds: Sequence[int]
              ) -> Tuple[Tensor, Tensor]:
    src = dense_sources(teacher, rounds)
    return dense_group_mean(student, src), dense_group_mean(teacher, src)


# ---------------------------------------------------------------- our arm
def method_arm(method: str) -> Callable:
    """Ours with ``bipartite_partition(method=method)``, as ``DTMLoss``
    does it: the number of groups is known from the schedule, so
    ``group_mean`` allocates G rows per image, not N."""
    def arm(student: Tensor, teacher: Tensor, rounds: Sequence[int]
            ) -> Tuple[Tensor, Tensor]:
        groups = bipartite_partition(teacher, list(rounds), len(rounds),
                                     method=method)
        g = realised_groups(teacher.shape[1], rounds)
        return (group_mean(student, groups, num_groups=g),
                group_mean(teacher, groups, num_groups=g))
    return arm


our_arm = method_arm('auto')  # the default
rounds_arm = method_arm('rounds')  # per-round products of the groups' sums
gram_arm = method_arm('gram')  # the tokens' Gram matrix, gathered per round


def compiled_arm(max_rounds: int) -> Callable:
    """The static-shape level through ``torch.compile``
    (``compiled_morph``): every schedule runs ``max_rounds`` rounds, so one
    graph per input shape serves every k."""
    def arm(student: Tensor, teacher: Tensor, rounds: Sequence[int]
            ) -> Tuple[Tensor, Tensor]:
        _, u, v = compiled_morph(student, teacher, list(rounds), len(rounds),
                                 max_rounds)
        return u, v
    return arm


def dynamo_graphs() -> int:
    """Graphs dynamo has compiled so far in this process."""
    from torch._dynamo.utils import counters
    return int(counters['stats']['unique_graphs'])


def count_top_level_ops(fn: Callable, device: torch.device) -> int:
    """Operator calls ``fn()`` dispatches at the top level (torch.profiler
    events without a parent, autograd's included); a compiled region counts
    once per call. ``fn`` runs twice first (compilation, warm caches)."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    fn()
    common.sync(device)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
        common.sync(device)
    return sum(1 for e in prof.events() if e.cpu_parent is None)


def loss_step(n: int, c: int, k: int, batch: int, device: torch.device,
              seed: int, compile: bool) -> Callable:
    """One ``DTMLoss`` forward + backward (two levels of up to k rounds, as
    the default config with k = 14) at the costliest schedule, m = N merges
    in k rounds on both levels."""
    from mmdtm.models import DTMLoss
    loss = DTMLoss(max_merge=[n, n], max_iters=[k, k], seed=0,
                   compile=compile)
    levels = [MorphLevel(n, k, level_rounds(n, k, 'merge', guard_n=n,
                                             num_tokens=n))] * 2
    student, teacher = make_tokens(batch, n, c, c, device, seed)

    def run():
        x = student.detach().requires_grad_(True)
        value, _ = loss.compute(x, teacher, levels=levels)
        value.backward()
        return x.grad
    return run


# ------------------------------------------------------------------ inputs
def make_tokens(batch: int, n: int, c: int, d: int, device: torch.device,
                seed: int) -> Tuple[Tensor, Tensor]:
    """Student (B, N, C) and teacher (B, N, D) tokens.

    The teacher tokens are clustered (a few "objects" per image plus noise),
    so that the matching sees structure rather than i.i.d. noise.
    """
    g = torch.Generator().manual_seed(seed)
    num_objects = max(2, n // 24)
    centers = torch.randn(batch, num_objects, d, generator=g)
    owner = torch.randint(0, num_objects, (batch, n), generator=g)
    teacher = centers.gather(1, owner.unsqueeze(-1).expand(-1, -1, d))
    teacher = teacher + 0.7 * torch.randn(batch, n, d, generator=g)
    student = torch.randn(batch, n, c, generator=g)
    return student.to(device), teacher.to(device)


def with_backward(arm: Callable, student: Tensor, teacher: Tensor,
                  rounds: Sequence[int], grad: Tensor) -> Callable:
    """The arm plus the student-side backward (as in training)."""
    def run():
        x = student.detach().requires_grad_(True)
        u, v = arm(x, teacher, rounds)
        u.backward(grad)
        return u.detach(), v, x.grad
    return run


def check_same(student: Tensor, teacher: Tensor,
               rounds: Sequence[int]) -> float:
    """Max abs difference of the group means of both arms; raises if off."""
    with torch.no_grad():
        u_ours, v_ours = our_arm(student, teacher, rounds)
        u_dense, v_dense = dense_arm(student, teacher, rounds)
    err = max(float((u_ours - u_dense).abs().max()),
              float((v_ours - v_dense).abs().max()))
    scale = max(1.0, float(teacher.abs().max()))
    if not err <= 1e-4 * scale:
        raise SystemExit(f'ours and dense disagree: max |diff| of the group '
                         f'means = {err:.3g} for rounds={list(rounds)}; fix '
                         f'the op before timing it')
    return err


def check_compiled(arm: Callable, student: Tensor, teacher: Tensor,
                   rounds: Sequence[int], grad: bool) -> float:
    """Max abs difference of an arm's (compiled, rounds, gram) group means
    from ours (in the grad mode the arm is timed in: a graph per mode)."""
    with torch.set_grad_enabled(grad):
        u_c, v_c = arm(student.detach().requires_grad_(grad), teacher, rounds)
    with torch.no_grad():
        u_o, v_o = our_arm(student, teacher, rounds)
    err = max(float((u_c - u_o).abs().max()), float((v_c - v_o).abs().max()))
    if not err <= 1e-4 * max(1.0, float(teacher.abs().max())):
        raise SystemExit(f'an arm and ours disagree: max |diff| = '
                         f'{err:.3g} for rounds={list(rounds)}')
    return err


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, nargs='+', default=[8, 64],
                        help='batch sizes B (default 8 64)')
    parser.add_argument('--tokens', type=int, default=196,
                        help='tokens N (default 196)')
    parser.add_argument('--channels', type=int, default=512,
                        help='student channels C = teacher channels D '
                        '(default 512)')
    parser.add_argument('--iters', type=int, nargs='+', default=[1, 7, 14],
                        help='matching rounds k (default 1 7 14)')
    parser.add_argument('--merge-fraction', type=float, default=0.5,
                        help='fraction of tokens to merge; r = ceil(N * f / '
                        'k) (default 0.5)')
    parser.add_argument('--backward', action='store_true',
                        help='include the student-side backward')
    parser.add_argument('--compile-backend', default='inductor',
                        help="torch.compile backend of the compiled arm "
                        "(default inductor; 'eager' checks graph capture "
                        "without code generation)")
    parser.add_argument('--ops-batch', type=int, default=64,
                        help='batch of the operator count (default 64)')
    parser.add_argument('--no-compiled', action='store_true',
                        help='leave out the compiled arm (torch.compile of '
                        'the static-shape level) and the op counts')
    parser.add_argument('--mem-repeats', type=int, default=3,
                        help='peak-memory measurements per arm (median)')
    parser.add_argument('--profile', type=int, default=0, metavar='ROWS',
                        help='print the top ROWS operators of each arm '
                        '(torch.profiler) at the largest B and k')
    common.add_common_args(parser, repeats=7, warmup=2)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = common.setup(args)
    n, c = args.tokens, args.channels
    if n < 3 or c < 1:
        raise SystemExit(f'--tokens must be >= 3 and --channels >= 1, got '
                         f'{n} and {c}')
    if not 0 < args.merge_fraction <= 1:
        raise SystemExit(f'--merge-fraction must be in (0, 1], got '
                         f'{args.merge_fraction}')
    if min(args.iters) < 1 or min(args.batch) < 1:
        raise SystemExit('--iters and --batch values must be >= 1')
    info = common.machine_info(device)
    print(f"# bench_morphing on {info['device']} ({info['cpu']}, torch "
          f"{info['torch']}, {info['torch_threads']} threads), "
          f"{'forward + student backward' if args.backward else 'forward'}")

    rows: List[Dict[str, object]] = []
    use_compiled = not args.no_compiled
    from mmdtm.morphing import compiled
    compiled.BACKEND = args.compile_backend
    if use_compiled and device.type == 'cpu':
        # no pool of compile workers competing with the timed arms
        import torch._inductor.config as inductor_config
        inductor_config.compile_threads = 1
    recompiles, compile_s = 0, {}
    comp = compiled_arm(max(args.iters))
    for batch in args.batch:
        student, teacher = make_tokens(batch, n, c, c, device, args.seed)
        grad = torch.randn(batch, n, c, device=device)
        graphs_before = dynamo_graphs()
        for k in args.iters:
            r = math.ceil(n * args.merge_fraction / k)
            rounds = [r] * k
            err = check_same(student, teacher, rounds)
            named = [('ours', our_arm), ('dense', dense_arm),
                     ('rounds', rounds_arm), ('gram', gram_arm)]
            for arm in (rounds_arm, gram_arm):
                err = max(err, check_compiled(arm, student, teacher, rounds,
                                              False))
            if use_compiled:
                named.append(('compiled', comp))
                if batch not in compile_s:  # the first call compiles
                    start = time.perf_counter()
                    (with_backward(comp, student, teacher, rounds, grad)
                     if args.backward else
                     (lambda: _no_grad(comp, student, teacher, rounds)))()
                    compile_s[batch] = time.perf_counter() - start
                err = max(err, check_compiled(comp, student, teacher, rounds,
                                              args.backward))
            arms = {}
            for name, arm in named:
                if args.backward:
                    arms[name] = with_backward(arm, student, teacher, rounds,
                                               grad)
                else:
                    arms[name] = (lambda a=arm: _no_grad(a, student, teacher,
                                                         rounds))
            times = common.time_interleaved(arms, device, args.repeats,
                                            args.warmup)
            mem = {
                name: common.median([
                    common.peak_memory(fn, device)
                    for _ in range(args.mem_repeats)
                ]) for name, fn in arms.items()
            }
            t_ours, t_dense = (common.median(times[a]) for a in
                               ('ours', 'dense'))
            t_comp = (common.median(times['compiled']) if use_compiled
                      else float('nan'))
            t_rounds = common.median(times['rounds'])
            t_gram = common.median(times['gram'])
            row = dict(
                batch=batch, tokens=n, channels=c, iters=k, r=r,
                groups=realised_groups(n, rounds), max_abs_diff=err,
                ours_ms=1e3 * t_ours, dense_ms=1e3 * t_dense,
                speedup=t_dense / t_ours,
                speedup_min=min(times['dense']) / min(times['ours']),
                compiled_ms=1e3 * t_comp, compiled_speedup=t_dense / t_comp,
                rounds_ms=1e3 * t_rounds, rounds_speedup=t_dense / t_rounds,
                gram_ms=1e3 * t_gram, gram_speedup=t_dense / t_gram,
                ours_mib=mem['ours'], dense_mib=mem['dense'],
                mem_fraction=(mem['ours'] / mem['dense']
                              if mem['dense'] > 0 else float('nan')),
                times_s=times)
            rows.append(row)
            print(f"  B={batch} k={k} r={r}: ours {row['ours_ms']:.2f} ms, "
                  f"dense {row['dense_ms']:.2f} ms, x{row['speedup']:.2f}; "
                  f"{mem['ours']:.1f} vs {mem['dense']:.1f} MiB"
                  + f"; rounds {row['rounds_ms']:.2f} ms"
                  + f"; gram {row['gram_ms']:.2f} ms"
                  + (f"; compiled {row['compiled_ms']:.2f} ms"
                     if use_compiled else ''), flush=True)
        if use_compiled:
            # one graph per input shape: every further one is a recompile
            recompiles += max(0, dynamo_graphs() - graphs_before - 1)

    print()
    common.print_table(
        ['B', 'k', 'r', 'groups', 'ours ms', 'dense ms', 'speed-up (dense/ours)',
         'of fastest', 'rounds ms', 'speed-up (dense/rounds)', 'gram ms',
         'speed-up (dense/gram)', 'compiled ms',
         'speed-up (dense/compiled)', 'ours MiB', 'dense MiB',
         'memory (ours/dense)'],
        [[r['batch'], r['iters'], r['r'], r['groups'], r['ours_ms'],
          r['dense_ms'], r['speedup'], r['speedup_min'], r['rounds_ms'],
          r['rounds_speedup'], r['gram_ms'], r['gram_speedup'],
          r['compiled_ms'], r['compiled_speedup'],
          r['ours_mib'], r['dense_mib'], r['mem_fraction']] for r in rows],
        title=f'N={n}, C=D={c}, median of {args.repeats} interleaved '
        f'repetitions after {args.warmup} warm-up, peak memory above the '
        f'inputs ({"CUDA allocator" if device.type == "cuda" else "RSS"})')

    if args.profile:
        profile_arms(args, device)

    big = max(args.batch)
    at_big = [r for r in rows if r['batch'] == big]
    summary: Dict[str, object] = {}
    for r in rows:
        summary[f"speedup_B{r['batch']}_k{r['iters']}"] = r['speedup']
    for r in rows:
        summary[f"mem_frac_B{r['batch']}_k{r['iters']}"] = r['mem_fraction']
    goal_rows = [r for r in at_big if r['iters'] >= GOAL_SPEEDUP_MIN_ITERS]
    max_mem = max(r['mem_fraction'] for r in at_big)
    summary['goal_speedup'] = (
        'n/a' if not goal_rows else 'met' if min(
            r['speedup'] for r in goal_rows) >= GOAL_SPEEDUP else 'missed')
    for arm in ('rounds', 'gram'):
        for r in rows:
            summary[f"{arm}_speedup_B{r['batch']}_k{r['iters']}"] = \
                r[f'{arm}_speedup']
    ops = {}
    if use_compiled:
        for r in rows:
            summary[f"compiled_speedup_B{r['batch']}_k{r['iters']}"] = \
                r['compiled_speedup']
        summary['compiled_recompiles'] = recompiles
        for name, flag in (('eager', False), ('compiled', True)):
            ops[name] = count_top_level_ops(
                loss_step(n, c, max(args.iters), args.ops_batch, device,
                          args.seed, flag), device)
            summary[f'ops_per_step_{name}'] = ops[name]
        summary['goal_ops_compiled'] = ('met' if ops['compiled'] <=
                                        GOAL_OPS else 'missed')
        print(f"\ncompiled arm: {recompiles} recompilations over the timed "
              f"schedules (one graph per input shape; first call "
              + ', '.join(f'B={b}: {t:.0f} s' for b, t in compile_s.items())
              + f"); DTMLoss forward + backward at B={args.ops_batch}, m=N, "
              f"k={max(args.iters)} on both "
              f"levels: {ops['eager']} top-level operator calls eager, "
              f"{ops['compiled']} compiled")
    summary['goal_memory'] = ('met' if max_mem <= GOAL_MEM_FRACTION else
                              'missed' if max_mem == max_mem else 'n/a')
    common.finish('morphing', summary,
                  dict(machine=info, args=vars(args), rows=rows,
                       compile_s=compile_s, ops_per_step=ops,
                       goals=dict(speedup_at_least=GOAL_SPEEDUP,
                                  speedup_for_iters_from=(
                                      GOAL_SPEEDUP_MIN_ITERS),
                                  ops_per_step_compiled_at_most=GOAL_OPS,
                                  memory_fraction_at_most=GOAL_MEM_FRACTION,
                                  batch=big)),
                  args.json)


def profile_arms(args: argparse.Namespace, device: torch.device) -> None:
    """Top operators of each arm at the largest batch and round count."""
    from torch.profiler import ProfilerActivity, profile
    batch, k = max(args.batch), max(args.iters)
    rounds = [math.ceil(args.tokens * args.merge_fraction / k)] * k
    student, teacher = make_tokens(batch, args.tokens, args.channels,
                                   args.channels, device, args.seed)
    grad = torch.randn_like(student)
    activities = [ProfilerActivity.CPU]
    if device.type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    sort_by = ('self_cuda_time_total' if device.type == 'cuda' else
               'self_cpu_time_total')
    for name, arm in (('ours', our_arm), ('dense', dense_arm)):
        fn = (with_backward(arm, student, teacher, rounds, grad)
              if args.backward else
              (lambda a=arm: _no_grad(a, student, teacher, rounds)))
        fn()
        common.sync(device)
        with profile(activities=activities) as prof:
            fn()
            common.sync(device)
        print(f'\nprofile of {name} at B={batch}, k={k}, r={rounds[0]} '
              f'(top {args.profile} operators by self time)')
        print(prof.key_averages().table(sort_by=sort_by,
                                        row_limit=args.profile))


def _no_grad(arm: Callable, student: Tensor, teacher: Tensor,
             rounds: Sequence[int]):
    with torch.no_grad():
        return arm(student, teacher, rounds)


if __name__ == '__main__':
    main()
