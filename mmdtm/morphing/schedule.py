"""The random morphing schedule: how many tokens to merge, in how many rounds.

Drawn once per training step and shared by the whole batch on one process
(``docs/method.md``, item 8). For level l with bounds (n_l, K_l):

* ``count='merge'`` (reference): m_l ~ U{0..n_l} tokens to merge,
  k_l ~ U{1..K_l} rounds, r_l = ceil(m_l / k_l) merges per round, but
  floor(m_l / k_l) when ceil(m_l / k_l) * k_l > n_guard. The realised count
  k_l * r_l can overshoot m_l. ``guard='own'`` compares against the level's
  own n_l; ``guard='first'`` against n_1 for every level (the reference).
* ``count='remain'`` (paper): the number of tokens left, N - m_l with
  m_l ~ U{0..n_l}, is the target; the m_l merges are spread over the k_l
  rounds as evenly as possible, each round taking ceil(left / rounds left)
  but no more than it can merge (floor((t - protected) / 2) of its t
  tokens), so exactly m_l merges happen whenever k_l rounds can make them
  (one round can at most halve the tokens).
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from .partition import round_cap

COUNTS = ('merge', 'remain')
GUARDS = ('own', 'first')


@dataclass(frozen=True)
class MorphLevel:
    """One level of a drawn schedule.

    Attributes:
        merge: the sampled number m of tokens to merge.
        num_rounds: the sampled number k of matching rounds.
        per_round: merges requested in each round (length ``num_rounds``).
    """
    merge: int
    num_rounds: int
    per_round: Tuple[int, ...]

    @property
    def is_identity(self) -> bool:
        return not any(self.per_round)


def _max_merges(t: int, rounds: int, protect_first: bool) -> int:
    """The most ``rounds`` matching rounds can merge among t tokens."""
    start = t
    for _ in range(rounds):
        t -= round_cap(t, protect_first)
    return start - t


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] (inclusive) from ``generator``."""
    return int(torch.randint(low, high + 1, (1, ), generator=generator))


def level_rounds(merge: int,
                 iters: int,
                 count: str = 'merge',
                 guard_n: Optional[int] = None,
                 num_tokens: Optional[int] = None,
                 protect_first: bool = True) -> Tuple[int, ...]:
    """Per-round merges for a drawn (m, k).

    Args:
        merge: m, tokens to merge.
        iters: k >= 1 rounds.
        count: ``'merge'`` (r = ceil(m/k) with the guard) or ``'remain'``
            (exactly m merges spread over the rounds).
        guard_n: the bound the ceil/floor guard compares k * ceil(m/k) with
            (``count='merge'`` only); defaults to no guard.
        num_tokens: N, lets ``count='remain'`` respect each round's cap.
        protect_first: whether token 0 is protected (for the caps).
    """
    if count == 'merge':
        r = math.ceil(merge / iters)
        if guard_n is not None and r * iters > guard_n:
            r = merge // iters
        return (r, ) * iters
    if count == 'remain':
        rounds, left, t = [], merge, num_tokens
        for i in range(iters):
            q = iters - i  # rounds left, this one included
            r = math.ceil(left / q)
            if t is not None:
                cap = round_cap(t, protect_first)
                # take more now if the later rounds could not finish the job
                while r < cap and left - r > _max_merges(
                        t - r, q - 1, protect_first):
                    r += 1
                r = min(r, cap)
                t -= r
            rounds.append(r)
            left -= r
        return tuple(rounds)
    raise ValueError(f'count must be one of {COUNTS}, got {count!r}')


def sample_schedule(max_merge: Sequence[int],
                    max_iters: Sequence[int],
                    generator: torch.Generator,
                    count: str = 'merge',
                    guard: str = 'own',
                    num_tokens: Optional[int] = None,
                    protect_first: bool = True) -> List[MorphLevel]:
    """Draw one schedule: a :class:`MorphLevel` per level.

    Args:
        max_merge: n_l per level (upper bound of m_l).
        max_iters: K_l >= 1 per level (upper bound of k_l).
        generator: a CPU ``torch.Generator``; the draw is a pure function of
            its state.
        count: ``'merge'`` (reference) or ``'remain'`` (paper).
        guard: ``'own'`` or ``'first'`` (reference); see the module doc.
        num_tokens / protect_first: see :func:`level_rounds`.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> levels = sample_schedule([196, 196], [14, 14], g)
        >>> len(levels)
        2
    """
    check_levels(max_merge, max_iters, count=count, guard=guard)
    levels = []
    for n_l, k_max in zip(max_merge, max_iters):
        m = _randint(0, n_l, generator)
        k = _randint(1, k_max, generator)
        guard_n = max_merge[0] if guard == 'first' else n_l
        rounds = level_rounds(m, k, count, guard_n=guard_n,
                              num_tokens=num_tokens,
                              protect_first=protect_first)
        levels.append(MorphLevel(m, k, rounds))
    return levels


def check_levels(max_merge: Sequence[int],
                 max_iters: Sequence[int],
                 num_tokens: Optional[int] = None,
                 count: str = 'merge',
                 guard: str = 'own') -> None:
    """Raise ``ValueError`` naming the field when a schedule config is bad."""
    if count not in COUNTS:
        raise ValueError(f'count must be one of {COUNTS}, got {count!r}')
    if guard not in GUARDS:
        raise ValueError(f'guard must be one of {GUARDS}, got {guard!r}')
    if len(max_merge) == 0:
        raise ValueError('max_merge must list at least one level')
    if len(max_merge) != len(max_iters):
        raise ValueError(f'max_merge has {len(max_merge)} levels but '
                         f'max_iters has {len(max_iters)}; give one value '
                         f'per level')
    for i, (n_l, k_l) in enumerate(zip(max_merge, max_iters)):
        if isinstance(n_l, bool) or not isinstance(n_l, int) or n_l < 0:
            raise ValueError(f'max_merge[{i}] must be an int >= 0, got {n_l!r}')
        if isinstance(k_l, bool) or not isinstance(k_l, int) or k_l < 1:
            raise ValueError(f'max_iters[{i}] must be an int >= 1, got {k_l!r}')
        if num_tokens is not None and n_l > num_tokens:
            raise ValueError(f'max_merge[{i}]={n_l} exceeds the number of '
                             f'tokens ({num_tokens})')


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """A CPU generator seeded from (seed, rank, step).

    Every process draws its own schedule (the reference seeds each rank
    differently), and the draw of step ``step`` depends on nothing but these
    three numbers, so a resumed run draws exactly what an uninterrupted one
    would have.
    """
    import numpy as np
    state = np.random.SeedSequence([int(seed), int(rank), int(step)])
    g = torch.Generator()
    g.manual_seed(int(state.generate_state(1, np.uint64)[0]))
    return g
