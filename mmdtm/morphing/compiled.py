"""The partition through ``torch.compile``: compiled once per input shape.

:func:`~mmdtm.morphing.partition.static_partition` takes the drawn schedule
as a tensor, so one compiled graph serves every draw: no recompilation
across training steps, and on CUDA (``mode='reduce-overhead'``) one CUDA
graph replay instead of a thousand small kernel launches. Where compiling
fails (no C++ compiler for the CPU backend, no Triton for CUDA, an
unsupported platform) the same static op runs eagerly, after one warning.
Only compiling may fail that way: once a compiled call has succeeded on a
device type, every later error (out of memory, a shape bug) propagates.
"""
import warnings
from typing import Callable, Dict, Optional, Sequence, Set, Union

import torch
from torch import Tensor

from .partition import (_round_reductions, check_split, group_mean,
                        partition_plan, random_split_perms, static_partition)

BACKEND = 'inductor'  # torch.compile backend; tests may pick 'eager'
_COMPILED: Dict[tuple, Callable] = {}
_FAILED: Dict[str, str] = {}  # device type -> why compiling failed there
_WORKS: Set[str] = set()  # device types where a compiled call succeeded


def compile_mode(device: torch.device) -> Optional[str]:
    """``'reduce-overhead'`` (CUDA graphs) on CUDA, the default elsewhere."""
    return 'reduce-overhead' if device.type == 'cuda' else None


def static_morph(pred: Tensor, target: Tensor, plan: Tensor,
                 protect_first: bool = True,
                 perms: Optional[Tensor] = None) -> tuple:
    """One morphing level with static shapes: the partition of ``target``
    (:func:`~mmdtm.morphing.partition.static_partition`) and the group
    means of both sides over N rows per image.

    Returns:
        ``(groups, u, v)``: (B, N) int64 group ids, (B, N, C) group means of
        ``pred`` (gradient flows) and (B, N, D) of ``target``.
    """
    groups = static_partition(target, plan, protect_first, perms)
    return groups, group_mean(pred, groups), group_mean(target, groups)


def _compiled(fn: Callable, mode: Optional[str]) -> Callable:
    key = (fn.__name__, BACKEND, mode if BACKEND == 'inductor' else None)
    if key not in _COMPILED:
        kwargs = dict(mode=key[2]) if BACKEND == 'inductor' else {}
        _COMPILED[key] = torch.compile(fn, backend=BACKEND, dynamic=False,
                                       fullgraph=True, **kwargs)
    return _COMPILED[key]


def _plan(metric: Tensor, r, iters: int, max_rounds: int,
          protect_first: bool, split: str,
          generator: Optional[torch.Generator]) -> Optional[tuple]:
    """(plan (K, 2), perms or None) on ``metric``'s device; None when the
    schedule merges nothing."""
    if metric.dim() != 3:
        raise ValueError(f'metric must be (B, N, C), got '
                         f'{tuple(metric.shape)}')
    check_split(split)
    rounds = _round_reductions(r, iters)
    if not any(rounds):
        return None
    plan = partition_plan(rounds, metric.shape[1], protect_first, max_rounds)
    perms = (random_split_perms(plan, len(rounds), metric.shape[0],
                                protect_first, generator, metric.device)
             if split == 'random' else None)
    plan_t = torch.tensor(plan, dtype=torch.long).to(metric.device,
                                                     non_blocking=True)
    return plan_t, perms


def _run(fn: Callable, device: torch.device, *args):
    """``fn(*args)`` compiled.

    Until a compiled call has succeeded on ``device``'s type, a compiled
    call that fails where the eager ``fn`` does not is the compiler's
    failure: one warning, then ``fn`` runs eagerly on that device type from
    now on. An error the eager ``fn`` raises too, an out-of-memory error,
    and any error after the first success propagate.
    """
    kind = device.type
    if kind in _FAILED:
        return fn(*args)
    compiled = _compiled(fn, compile_mode(device))
    if kind in _WORKS:
        return _own_outputs(compiled(*args), device)
    try:
        out = compiled(*args)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as err:  # noqa: BLE001  (any backend failure)
        out = fn(*args)  # the op's own error, if it has one, propagates
        _FAILED[kind] = f'{type(err).__name__}: {err}'
        warnings.warn(f'torch.compile of the morphing op failed on {kind} '
                      f'({_FAILED[kind][:300]}); running it eagerly from '
                      f'now on')
        return out
    _WORKS.add(kind)
    return _own_outputs(out, device)


def _own_outputs(out, device: torch.device):
    """A compiled call's outputs, cloned on CUDA, where a CUDA graph's
    outputs are overwritten by its next replay."""
    if device.type != 'cuda':
        return out
    return (tuple(o.clone() for o in out) if isinstance(out, tuple) else
            out.clone())


def compiled_partition(metric: Tensor,
                       r: Union[int, Sequence[int]],
                       iters: int,
                       max_rounds: int,
                       protect_first: bool = True,
                       split: str = 'alternate',
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """:func:`~mmdtm.morphing.bipartite_partition` through the compiled
    static-shape op; the same group ids (and the same draws from
    ``generator``).

    Args:
        metric, r, iters, protect_first, split, generator: as for
            :func:`~mmdtm.morphing.bipartite_partition`.
        max_rounds: the most rounds any schedule of this level has (its
            K_l); every call of a level runs that many rounds (r = 0 ones
            are no-ops), so the graph is the same for every draw.

    Returns:
        (B, N) int64 group ids.
    """
    planned = _plan(metric, r, iters, max_rounds, protect_first, split,
                    generator)
    if planned is None:
        batch, n, _ = metric.shape
        return torch.arange(n, device=metric.device).expand(batch, n).clone()
    return _run(static_partition, metric.device, metric, planned[0],
                protect_first, planned[1])


def compiled_morph(pred: Tensor,
                   target: Tensor,
                   r: Union[int, Sequence[int]],
                   iters: int,
                   max_rounds: int,
                   protect_first: bool = True,
                   split: str = 'alternate',
                   generator: Optional[torch.Generator] = None) -> tuple:
    """A whole morphing level in one compiled region (:func:`static_morph`):
    forward one graph, backward one graph, whatever the drawn schedule.

    Args:
        pred: (B, N, C) student tokens (gradient flows).
        target: (B, N, D) teacher tokens, the matching metric.
        r, iters, max_rounds, protect_first, split, generator: as for
            :func:`compiled_partition`.

    Returns:
        ``(groups, u, v)`` as :func:`static_morph`; for a schedule that
        merges nothing, the identity ids and the inputs themselves.
    """
    planned = _plan(target, r, iters, max_rounds, protect_first, split,
                    generator)
    if planned is None:
        batch, n, _ = target.shape
        ids = torch.arange(n, device=target.device).expand(batch, n).clone()
        return ids, pred, target
    return _run(static_morph, pred.device, pred, target, planned[0],
                protect_first, planned[1])


def reset() -> None:
    """Forget compiled functions, failures and successes (tests)."""
    _COMPILED.clear()
    _FAILED.clear()
    _WORKS.clear()
