"""The partition through ``torch.compile``: compiled once per input shape.

:func:`~mmdtm.morphing.partition.static_partition` takes the drawn schedule
as a tensor, so one compiled graph serves every draw: no recompilation
across training steps, and on CUDA (``mode='reduce-overhead'``) one CUDA
graph replay instead of a thousand small kernel launches. Where compiling
fails (no C++ compiler for the CPU backend, no Triton for CUDA, an
unsupported platform) the same static op runs eagerly, after one warning.
"""
import warnings
from typing import Callable, Dict, Optional, Sequence, Union

import torch
from torch import Tensor

from .partition import (_round_reductions, partition_plan,
                        random_split_perms, static_partition)

BACKEND = 'inductor'  # torch.compile backend; tests may pick 'eager'
_COMPILED: Dict[tuple, Callable] = {}
_FAILED: Dict[str, str] = {}


def compile_mode(device: torch.device) -> Optional[str]:
    """``'reduce-overhead'`` (CUDA graphs) on CUDA, the default elsewhere."""
    return 'reduce-overhead' if device.type == 'cuda' else None


def _compiled(mode: Optional[str]) -> Callable:
    key = (BACKEND, mode if BACKEND == 'inductor' else None)
    if key not in _COMPILED:
        kwargs = dict(mode=key[1]) if BACKEND == 'inductor' else {}
        _COMPILED[key] = torch.compile(static_partition, backend=BACKEND,
                                       dynamic=False, fullgraph=True,
                                       **kwargs)
    return _COMPILED[key]


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
    if metric.dim() != 3:
        raise ValueError(f'metric must be (B, N, C), got {tuple(metric.shape)}')
    rounds = _round_reductions(r, iters)
    batch, n, _ = metric.shape
    if not any(rounds):
        return torch.arange(n, device=metric.device).expand(batch, n).clone()
    plan = partition_plan(rounds, n, protect_first, max_rounds)
    perms = (random_split_perms(plan, len(rounds), batch, protect_first,
                                generator, metric.device)
             if split == 'random' else None)
    plan_t = torch.tensor(plan, dtype=torch.long).to(metric.device,
                                                     non_blocking=True)
    device = metric.device
    if device.type not in _FAILED:
        try:
            groups = _compiled(compile_mode(device))(metric, plan_t,
                                                     protect_first, perms)
            # a CUDA graph's output is overwritten by its next replay
            return groups.clone() if device.type == 'cuda' else groups
        except Exception as err:  # noqa: BLE001  (any backend failure)
            _FAILED[device.type] = f'{type(err).__name__}: {err}'
            warnings.warn(f'torch.compile of the morphing op failed on '
                          f'{device.type} ({_FAILED[device.type][:300]}); '
                          f'running it eagerly from now on')
    return static_partition(metric, plan_t, protect_first, perms)


def reset() -> None:
    """Forget compiled functions and failures (tests)."""
    _COMPILED.clear()
    _FAILED.clear()
