"""Bipartite token matching that returns a partition of the original tokens.

Pure functions, vectorised over the batch. The only Python loop runs over the
matching rounds. Memory is O(B * N * C) for the features plus one transient
(B, ceil(t/2), floor(t/2)) score matrix per round; no (B, N, N) membership
matrix is ever built.
"""
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

SPLITS = ('alternate', 'random')


def _round_reductions(r: Union[int, Sequence[int]], iters: int) -> list:
    """Per-round reductions from a scalar ``r`` or a sequence of ``iters``."""
    if isinstance(iters, bool) or int(iters) != iters or iters < 0:
        raise ValueError(f'iters must be a non-negative int, got {iters!r}')
    if isinstance(r, (int, )) and not isinstance(r, bool):
        rounds = [int(r)] * int(iters)
    else:
        rounds = [int(v) for v in r]
        if len(rounds) != iters:
            raise ValueError(f'r has {len(rounds)} per-round values but '
                             f'iters={iters}')
    if any(v < 0 for v in rounds):
        raise ValueError(f'r must be non-negative, got {r!r}')
    return rounds


def _random_order(batch: int, t: int, protect_first: bool,
                  generator: Optional[torch.Generator],
                  device: torch.device) -> Tensor:
    """A random permutation of ``t`` positions per image, (B, t).

    With ``protect_first`` position 0 stays first. The permutation is drawn on
    the generator's device (CPU unless a CUDA generator is given) so that a
    CPU generator gives the same draw whatever device the tokens are on.
    """
    gen_device = generator.device if generator is not None else device
    start = 1 if protect_first else 0
    keys = torch.rand(batch, t - start, generator=generator, device=gen_device)
    perm = keys.argsort(dim=-1).to(device) + start
    if protect_first:
        first = torch.zeros(batch, 1, dtype=perm.dtype, device=device)
        perm = torch.cat([first, perm], dim=1)
    return perm


def _match_round(feat: Tensor, size: Tensor, r: int,
                 protect_first: bool) -> tuple:
    """One round of bipartite soft matching on the current tokens.

    Args:
        feat: (B, t, C) float32 current group features (size-weighted means).
        size: (B, t) float32 number of original tokens in each current group.
        r: requested reduction; capped at floor((t - protected) / 2).
        protect_first: the token at position 0 never merges.

    Returns:
        ``(feat, size, new_pos)``: the (B, t - r') features and sizes in the
        new order (unmerged A tokens in their previous relative order, then
        all B tokens in theirs) and ``new_pos`` (B, t), the new position of
        every current token.
    """
    batch, t, _ = feat.shape
    r = min(r, (t - int(protect_first)) // 2)
    arange_t = torch.arange(t, device=feat.device)
    if r <= 0:
        return feat, size, arange_t.expand(batch, t)

    unit = feat / feat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    a, b = unit[:, ::2], unit[:, 1::2]
    scores = a @ b.transpose(1, 2)  # (B, ta, tb)
    if protect_first:
        scores[:, 0, :] = -torch.inf
    best, best_b = scores.max(dim=-1)  # (B, ta)
    order = best.argsort(dim=-1, descending=True, stable=True)
    src = order[:, :r]  # A positions that merge, (B, r)
    unm = order[:, r:].sort(dim=-1).values  # kept A positions, (B, ta - r)
    dst = best_b.gather(1, src)  # their B partners, (B, r)

    ta, tb, n_unm = a.shape[1], b.shape[1], order.shape[1] - r
    feat_a, feat_b = feat[:, ::2], feat[:, 1::2]
    size_a, size_b = size[:, ::2], size[:, 1::2]
    # Size-weighted means: accumulate sums on the B side, then divide.
    sum_b = feat_b * size_b.unsqueeze(-1)
    src_sum = (feat_a * size_a.unsqueeze(-1)).gather(
        1, src.unsqueeze(-1).expand(-1, -1, feat.shape[-1]))
    sum_b = sum_b.scatter_add(
        1, dst.unsqueeze(-1).expand(-1, -1, feat.shape[-1]), src_sum)
    size_b = size_b.scatter_add(1, dst, size_a.gather(1, src))
    feat_b = sum_b / size_b.unsqueeze(-1)

    idx_c = unm.unsqueeze(-1).expand(-1, -1, feat.shape[-1])
    new_feat = torch.cat([feat_a.gather(1, idx_c), feat_b], dim=1)
    new_size = torch.cat([size_a.gather(1, unm), size_b], dim=1)

    # New position of every current token: kept A -> rank among kept A,
    # merged A -> n_unm + its B partner, B -> n_unm + its B index.
    pos_a = torch.empty(batch, ta, dtype=torch.long, device=feat.device)
    pos_a.scatter_(1, unm, arange_t[:n_unm].expand(batch, n_unm))
    pos_a.scatter_(1, src, dst + n_unm)
    new_pos = torch.empty(batch, t, dtype=torch.long, device=feat.device)
    new_pos[:, ::2] = pos_a
    new_pos[:, 1::2] = (arange_t[:tb] + n_unm).expand(batch, tb)
    return new_feat, new_size, new_pos


def bipartite_partition(metric: Tensor,
                        r: Union[int, Sequence[int]],
                        iters: int,
                        protect_first: bool = True,
                        split: str = 'alternate',
                        generator: Optional[torch.Generator] = None) -> Tensor:
    """Partition N tokens into groups by ``iters`` rounds of bipartite matching.

    Each round, on the t current groups (cosine similarity of their features,
    computed in float32 even under autocast): A = even positions, B = odd
    positions of the current order; every A token picks its most similar B
    token; the ``r`` best-scoring A tokens merge into their B token (stable
    sort by score); a merged group's feature is the size-weighted mean and
    sizes add. ``r`` is capped at floor((t - protected) / 2). The new order is
    the kept A tokens in their previous relative order, then the B tokens.

    Args:
        metric: (B, N, C) token features that define similarity (the teacher's
            targets in DTM). No gradient flows through the matching.
        r: merges per round, an int or a sequence of ``iters`` ints.
        iters: number of rounds. ``r == 0`` or ``iters == 0`` gives the
            identity partition.
        protect_first: the token at position 0 never merges (reference: it
            is treated as a class token). ``False`` is the paper's reading.
        split: ``'alternate'`` (reference: even/odd positions) or
            ``'random'`` (paper: the current tokens are shuffled per image
            before the even/odd split; position 0 stays first when
            protected).
        generator: RNG for ``split='random'``.

    Returns:
        (B, N) int64: the group id (0..G-1) of every original token, where
        G = N - realised merges, the same for every image.

    Examples:
        >>> x = torch.randn(2, 196, 512)
        >>> groups = bipartite_partition(x, r=16, iters=4)
        >>> int(groups.max()) + 1
        132
    """
    if metric.dim() != 3:
        raise ValueError(f'metric must be (B, N, C), got {tuple(metric.shape)}')
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    rounds = _round_reductions(r, iters)
    batch, n, _ = metric.shape
    device = metric.device
    groups = torch.arange(n, device=device).expand(batch, n)
    if not any(rounds):
        return groups.clone()

    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        feat = metric.detach().float()
        size = torch.ones(batch, n, device=device)
        for r_i in rounds:
            t = feat.shape[1]
            if split == 'random':
                perm = _random_order(batch, t, protect_first, generator,
                                     device)
                feat = feat.gather(1, perm.unsqueeze(-1).expand_as(feat))
                size = size.gather(1, perm)
                inv = torch.empty_like(perm)
                inv.scatter_(1, perm, torch.arange(t, device=device).expand(
                    batch, t))
                groups = inv.gather(1, groups)
            feat, size, new_pos = _match_round(feat, size, r_i, protect_first)
            groups = new_pos.gather(1, groups)
    return groups


def group_mean(x: Tensor, groups: Tensor) -> Tensor:
    """Replace every token by the plain mean of ``x`` over its group.

    Args:
        x: (B, N, D) features; may require gradient (the student side).
        groups: (B, N) int64 group ids in [0, N) from
            :func:`bipartite_partition`.

    Returns:
        (B, N, D) tensor of ``x``'s dtype; the sums are accumulated in float32.

    Examples:
        >>> x = torch.tensor([[[1.], [3.], [5.]]])
        >>> group_mean(x, torch.tensor([[0, 0, 1]])).flatten().tolist()
        [2.0, 2.0, 5.0]
    """
    if x.dim() != 3 or groups.shape != x.shape[:2]:
        raise ValueError(f'x must be (B, N, D) and groups (B, N); got '
                         f'{tuple(x.shape)} and {tuple(groups.shape)}')
    batch, n, d = x.shape
    xf = x.float()
    idx = groups.unsqueeze(-1).expand(-1, -1, d)
    sums = xf.new_zeros(batch, n, d).scatter_add(1, idx, xf)
    counts = xf.new_zeros(batch, n).scatter_add(
        1, groups, xf.new_ones(batch, n))
    means = sums / counts.clamp_min(1.0).unsqueeze(-1)
    return means.gather(1, idx).to(x.dtype)


def group_sizes(groups: Tensor) -> Tensor:
    """(B, N) float32: the size of the group of every token."""
    counts = torch.zeros(groups.shape, device=groups.device).scatter_add(
        1, groups, torch.ones(groups.shape, device=groups.device))
    return counts.gather(1, groups)


def num_groups(groups: Tensor) -> int:
    """Number of groups G (the same for every image)."""
    return int(groups[0].max()) + 1 if groups.numel() else 0
