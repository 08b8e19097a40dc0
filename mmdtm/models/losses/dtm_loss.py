"""The morphing loss: group means of student and teacher tokens, compared."""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.dist import get_rank, sync_random_seed
from torch import Tensor, nn

from mmdtm.morphing import (MorphLevel, bipartite_partition, check_levels,
                            compiled_morph, group_mean, group_sizes,
                            realised_groups, sample_schedule, step_generator)
from mmdtm.morphing.partition import METHODS, check_split
from mmdtm.registry import MODELS

DISTANCES = ('smooth_l1', 'l1', 'l2', 'cosine', 'cosine_distance')
REDUCTIONS = ('all_tokens', 'masked', 'groups')


def token_distance(u: Tensor, v: Tensor, distance: str,
                   beta: float = 2.0) -> Tensor:
    """Per-token distance (B, N) between (B, N, D) tensors.

    ``smooth_l1``: 0.5 d^2 / beta if |d| < beta else |d| - beta / 2, averaged
    over channels; ``l1`` / ``l2``: mean absolute / squared error over
    channels; ``cosine``: the negative cosine similarity;
    ``cosine_distance``: 1 - cosine similarity (with ``loss_weight=2`` it is
    MMPretrain's ``CosineSimilarityLoss(shift_factor=2, scale_factor=2)`` of
    EVA and MILAN).
    """
    if distance == 'smooth_l1':
        return F.smooth_l1_loss(u, v, reduction='none', beta=beta).mean(-1)
    if distance == 'l1':
        return (u - v).abs().mean(-1)
    if distance == 'l2':
        return (u - v).pow(2).mean(-1)
    if distance == 'cosine':
        return -F.cosine_similarity(u, v, dim=-1, eps=1e-8)
    if distance == 'cosine_distance':
        return 1.0 - F.cosine_similarity(u, v, dim=-1, eps=1e-8)
    raise ValueError(f'distance must be one of {DISTANCES}, got {distance!r}')


def standardize(v: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-token standardisation over the D channels of (..., D): subtract
    the mean, divide by sqrt(var + eps) with the unbiased variance
    (``torch.var``'s default), as the reference's ``--normalize_target``."""
    mean = v.mean(-1, keepdim=True)
    var = v.var(-1, keepdim=True)
    return (v - mean) / (var + eps).sqrt()


@MODELS.register_module()
class DTMLoss(nn.Module):
    """Dynamic Token Morphing loss (docs/method.md, items 4 to 9).

    Each call draws a schedule (one (m_l, k_l) per level), partitions the
    tokens by matching the *teacher* targets, replaces every token on both
    sides by its group mean, and averages a per-token distance.

    Args:
        max_merge: n_l per level, the upper bound of tokens to merge.
            Defaults to (196, 196).
        max_iters: K_l per level, the upper bound of matching rounds.
            Defaults to (14, 14).
        num_levels: optional L, checked against the per-level lists.
        count: ``'merge'`` (reference: m tokens to merge, r = ceil(m/k) with
            the floor guard) or ``'remain'`` (paper: exactly m merges, i.e.
            N - m tokens remain).
        guard: ``'own'`` (each level's n_l) or ``'first'`` (n_1 for every
            level, as the reference). Identical for the default levels.
        protect_first: token 0 never merges (reference). ``False``: paper.
        split: ``'alternate'`` (reference) or ``'random'`` (paper).
        distance: ``'smooth_l1'`` (default), ``'l1'``, ``'l2'``, ``'cosine'``
            (-cos), ``'cosine_distance'`` (1 - cos: the distance of EVA's and
            MILAN's own loss, which is 2 - 2 cos, i.e. ``loss_weight=2``).
        beta: smooth-L1 threshold. Defaults to 2.0.
        reduction: ``'all_tokens'`` (reference: mean over all N tokens, so a
            group weighs as much as its size), ``'masked'`` (masked tokens
            only) or ``'groups'`` (paper: one term per morphed token pair).
        standardize_target: per-token standardisation of the morphed targets
            (the reference's ``--normalize_target``, unbiased variance).
        loss_weight: w.
        seed: base seed of the schedule. ``None``: MMEngine's
            ``sync_random_seed`` at build time (numpy's global RNG, seeded
            by the Runner's ``randomness``, on rank 0, broadcast), so that
            every rank shares it even with ``diff_rank_seed=True`` (a
            resumed run restores rank 0's).
            The seed and the number of calls are buffers, saved in
            checkpoints, so a resumed run draws the same schedules.
        compile: each level (partition and group means) as one
            ``torch.compile`` region of its static-shape form (compiled once
            per input shape, never per drawn schedule; a CUDA graph on
            CUDA, ``mode='reduce-overhead'``; eager where compiling fails),
            with the same group ids.
            ``'auto'`` (default): on for CUDA inputs, off on CPU; ``True``:
            everywhere; ``False``: never.
        method: how the eager partition computes its scores (the
            ``method`` of :func:`~mmdtm.morphing.bipartite_partition`):
            ``'auto'`` (default: the Gram matrix from four merging rounds
            on), ``'rounds'`` (per-round products: exactly what the
            compiled path computes) or ``'gram'``. Same partitions up to
            float rounding. Unused where ``compile`` is on.

    Schedules: call ``i`` on process ``rank`` draws from a generator seeded
    by (seed, rank, i): every rank draws its own schedule, as the reference
    seeds each rank differently, and the draw is reproducible and resumable.
    """

    def __init__(self,
                 max_merge: Sequence[int] = (196, 196),
                 max_iters: Sequence[int] = (14, 14),
                 num_levels: Optional[int] = None,
                 count: str = 'merge',
                 guard: str = 'own',
                 protect_first: bool = True,
                 split: str = 'alternate',
                 distance: str = 'smooth_l1',
                 beta: float = 2.0,
                 reduction: str = 'all_tokens',
                 standardize_target: bool = False,
                 loss_weight: float = 1.0,
                 seed: Optional[int] = None,
                 compile: Union[str, bool] = 'auto',
                 method: str = 'auto') -> None:
        super().__init__()
        max_merge, max_iters = list(max_merge), list(max_iters)
        check_levels(max_merge, max_iters, count=count, guard=guard)
        if num_levels is not None and num_levels != len(max_merge):
            raise ValueError(f'num_levels={num_levels} but max_merge and '
                             f'max_iters list {len(max_merge)} levels')
        check_split(split)
        if distance not in DISTANCES:
            raise ValueError(
                f'distance must be one of {DISTANCES}, got {distance!r}')
        if reduction not in REDUCTIONS:
            raise ValueError(
                f'reduction must be one of {REDUCTIONS}, got {reduction!r}')
        if not beta > 0:
            raise ValueError(f'beta must be > 0, got {beta!r}')
        if compile not in ('auto', True, False):
            raise ValueError(f"compile must be 'auto', True or False, got "
                             f'{compile!r}')
        if method not in METHODS:
            raise ValueError(f'method must be one of {METHODS}, got '
                             f'{method!r}')
        self.compile, self.method = compile, method
        self.max_merge, self.max_iters = max_merge, max_iters
        self.count, self.guard = count, guard
        self.protect_first, self.split = protect_first, split
        self.distance, self.beta = distance, float(beta)
        self.reduction = reduction
        self.standardize_target = standardize_target
        self.loss_weight = float(loss_weight)
        if seed is None:
            seed = sync_random_seed()  # rank 0's draw, on every rank
        # [seed, calls]: a persistent buffer, so checkpoints carry them. The
        # Python mirrors avoid a device sync per step on CUDA.
        self._seed, self._calls = int(seed), 0
        self.register_buffer('schedule_state',
                             torch.tensor([int(seed), 0], dtype=torch.long))
        self.register_load_state_dict_post_hook(DTMLoss._read_schedule_state)

    def _read_schedule_state(self, incompatible_keys=None) -> None:
        """After ``load_state_dict``: the Python mirrors follow the loaded
        ``schedule_state`` buffer."""
        self._seed, self._calls = (int(v) for v in self.schedule_state.tolist())

    @property
    def num_levels(self) -> int:
        return len(self.max_merge)

    def check_num_tokens(self, num_tokens: int) -> None:
        """Raise if a level would merge more tokens than there are."""
        check_levels(self.max_merge, self.max_iters, num_tokens=num_tokens,
                     count=self.count, guard=self.guard)

    def take_call_generator(self) -> torch.Generator:
        """The generator of this call, (seed, rank, call); counts the call,
        so the next one gets the next generator."""
        generator = step_generator(self._seed, get_rank(), self._calls)
        self._calls += 1
        self.schedule_state[1].fill_(self._calls)
        return generator

    def _reduce(self, dist: Tensor, groups: Optional[Tensor],
                mask: Optional[Tensor]) -> Tensor:
        if self.reduction == 'all_tokens':
            return dist.mean()
        if self.reduction == 'masked':
            if mask is None:
                raise ValueError("reduction='masked' needs the mask")
            w = mask.flatten(1).to(dist.dtype)
            return (dist * w).sum() / w.sum().clamp_min(1.0)
        # 'groups': every group counts once, whatever its size.
        if groups is None:
            return dist.mean()
        sizes = group_sizes(groups)
        per_image = (dist / sizes).sum(1) / (1.0 / sizes).sum(1)
        return per_image.mean()

    def compute(self,
                pred: Tensor,
                target: Tensor,
                mask: Optional[Tensor] = None,
                levels: Optional[Sequence[MorphLevel]] = None
                ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The loss and logging statistics.

        Args:
            pred: (B, N, D) student predictions.
            target: (B, N, D) teacher targets (no gradient).
            mask: optional (B, N) or (B, h, w) mask, 1 = masked.
            levels: a fixed schedule (for tests and benchmarks); drawn from
                the call's generator when ``None``.

        Returns:
            ``(loss, stats)``: the scalar loss (float32) and, per level l,
            ``groups_l{l}`` (groups G after morphing; N = no morphing).
        """
        if pred.shape != target.shape or pred.dim() != 3:
            raise ValueError(f'pred and target must both be (B, N, D); got '
                             f'{tuple(pred.shape)} and {tuple(target.shape)}')
        batch, n, d = pred.shape
        self.check_num_tokens(n)
        generator = self.take_call_generator()
        if levels is None:
            levels = sample_schedule(
                self.max_merge, self.max_iters, generator, count=self.count,
                guard=self.guard, num_tokens=n,
                protect_first=self.protect_first)
        pred_f, target_f = pred.float(), target.detach().float()
        losses, stats = [], {}
        for i, level in enumerate(levels, start=1):
            groups = None
            u, v = pred_f, target_f
            groups_left = realised_groups(n, level.per_round,
                                          self.protect_first)
            if not level.is_identity:
                groups, u, v = self._morph(pred_f, target_f, level, i - 1,
                                           groups_left, generator)
            if self.standardize_target:
                v = standardize(v)
            dist = token_distance(u, v, self.distance, self.beta)
            losses.append(self._reduce(dist, groups, mask))
            stats[f'groups_l{i}'] = torch.tensor(float(groups_left),
                                                 device=pred.device)
        loss = self.loss_weight * torch.stack(losses).mean()
        return loss, stats

    def uses_compile(self, device: torch.device) -> bool:
        """Whether the partition goes through ``torch.compile`` here."""
        return (device.type == 'cuda' if self.compile == 'auto' else
                bool(self.compile))

    def _morph(self, pred: Tensor, target: Tensor, level: MorphLevel,
               index: int, groups_left: int,
               generator: torch.Generator) -> Tuple[Tensor, Tensor, Tensor]:
        """(groups, u, v) of one level: group ids and group means of both
        sides, eager or as one compiled region."""
        kwargs = dict(protect_first=self.protect_first, split=self.split,
                      generator=generator)
        if self.uses_compile(target.device):
            bound = (self.max_iters[index] if index < len(self.max_iters)
                     else level.num_rounds)
            max_rounds = max(bound, level.num_rounds)
            return compiled_morph(pred, target, level.per_round, level.num_rounds,
                                  max_rounds, **kwargs)
        groups = bipartite_partition(target, level.per_round, level.num_rounds,
                                     method=self.method, **kwargs)
        # G is known from the schedule: G rows per image, no sync
        return (groups, group_mean(pred, groups, num_groups=groups_left),
                group_mean(target, groups, num_groups=groups_left))

    def forward(self, pred: Tensor, target: Tensor,
                mask: Optional[Tensor] = None) -> Tensor:
        """The scalar loss; see :meth:`compute`."""
        return self.compute(pred, target, mask)[0]

    def extra_repr(self) -> str:
        return (f'max_merge={self.max_merge}, max_iters={self.max_iters}, '
                f'count={self.count!r}, guard={self.guard!r}, '
                f'protect_first={self.protect_first}, split={self.split!r}, '
                f'distance={self.distance!r}, reduction={self.reduction!r}, '
                f'loss_weight={self.loss_weight}, compile={self.compile!r}, '
                f'method={self.method!r}')
