"""Bipartite token matching that returns a partition of the original tokens.

Pure functions, vectorised over the batch. The only Python loop runs over the
matching rounds. Groups live in fixed slots (one per original token), so a
round reads the current groups once and writes only the merged rows; the
bookkeeping is integer index tensors. Memory: one transient
(B, ceil(t/2), floor(t/2)) score matrix per round, plus a (B, N, C) copy of
the features (``method='rounds'``) or the (B, N, N) Gram matrix
(``method='gram'``); no (B, t, N) membership matrix is ever built.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

SPLITS = ('alternate', 'random')
METHODS = ('auto', 'rounds', 'gram')
# 'auto' uses the Gram matrix from this many merging rounds on
GRAM_MIN_ROUNDS = 4


def round_cap(t: int, protect_first: bool) -> int:
    """The most one matching round can merge among t groups:
    floor((t - protected) / 2)."""
    return max(0, (t - int(protect_first)) // 2)


def realised_groups(num_tokens: int, merges: Sequence[int],
                    protect_first: bool = True) -> int:
    """Groups G the partition leaves after rounds of ``merges`` requested
    merges each (every round capped by :func:`round_cap`)."""
    t = num_tokens
    for r in merges:
        t -= min(int(r), round_cap(t, protect_first))
    return t


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


def check_split(split: str) -> str:
    """``split`` if it is one of :data:`SPLITS`; else a ValueError naming
    the field (so that a typo never runs ``'alternate'``)."""
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    return split


def split_shuffle(batch: int, t: int, protect_first: bool,
                  generator: Optional[torch.Generator],
                  device: torch.device) -> Tensor:
    """(B, t) int64: one round's shuffle of the t current positions for
    ``split='random'``, per image; position 0 stays first with
    ``protect_first``. The only draw of the random split: the eager op
    (:func:`bipartite_partition`) and the static one
    (:func:`random_split_perms`) both call it, so they agree bit for bit.

    The keys (t - protected per image) are drawn on the generator's device
    (CPU unless a CUDA generator is given), so a CPU generator gives the
    same draw whatever ``device`` the tokens are on.
    """
    gen_device = generator.device if generator is not None else device
    start = 1 if protect_first else 0
    keys = torch.rand(batch, t - start, generator=generator, device=gen_device)
    perm = keys.argsort(dim=-1).to(device) + start
    if protect_first:
        perm = torch.cat([perm.new_zeros(batch, 1), perm], dim=1)
    return perm


def _pick_merges(scores: Tensor, slot_a: Tensor, slot_b: Tensor, r: int,
                 protect_first: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """A round's merges from its cosine scores.

    Args:
        scores: (B, ta, tb) float32 scores of the A x B block; row 0 is
            overwritten with -inf when ``protect_first``.
        slot_a: (B, ta) slots of the A groups; ``slot_b``: (B, tb) of B.
        r: merges (already capped).
        protect_first: the group at position 0 never merges.

    Returns:
        ``(src_slot, dst_slot, kept)``: (B, r) slots of the merging A groups
        and of their B partners (stable sort by score), and the (B, ta - r)
        A positions that stay, in order.
    """
    if protect_first:
        scores[:, 0, :] = -torch.inf
    best, best_b = scores.max(dim=-1)  # (B, ta)
    ranked = best.argsort(dim=-1, descending=True, stable=True)
    src = ranked[:, :r]  # A positions that merge, (B, r)
    kept = ranked[:, r:].sort(dim=-1).values  # A positions kept, in order
    return (slot_a.gather(1, src), slot_b.gather(1, best_b.gather(1, src)),
            kept)


def _relabel(order: Tensor, slot_of_token: Tensor, src_slot: Tensor,
             dst_slot: Tensor, kept: Tensor) -> Tuple[Tensor, Tensor]:
    """``(order, slot_of_token)`` after a round's merges: the kept A groups
    in their previous relative order, then all B groups in theirs; the
    tokens of a merged slot now belong to its partner's slot."""
    batch, n = slot_of_token.shape
    remap = torch.arange(n, device=order.device).repeat(batch, 1)
    remap.scatter_(1, src_slot, dst_slot)
    order = torch.cat([order[:, ::2].gather(1, kept), order[:, 1::2]], dim=1)
    return order, remap.gather(1, slot_of_token)


def _match_round(sums: Tensor, norms: Tensor, order: Tensor,
                 slot_of_token: Tensor, r: int, protect_first: bool,
                 in_slot_order: bool = False, update: bool = True) -> tuple:
    """One round of bipartite soft matching on the current groups.

    Groups live in fixed slots: ``sums[:, s]`` is the feature sum of the group
    in slot ``s`` (cosine similarity is scale-free, so sums stand in for the
    size-weighted means), ``norms[:, s]`` its norm, and ``order`` lists the
    slots of the t current groups in their current order. Only the merged
    rows (and their norms) are written.

    Args:
        sums: (B, N, C) float32 group feature sums; updated in place.
        norms: (B, N) float32 norms of ``sums``' rows; updated in place.
        order: (B, t) slot of each current group, in the current order.
        slot_of_token: (B, N) slot of every original token's group.
        r: merges, already capped at floor((t - protected) / 2)
            (:func:`partition_plan`); 0 changes nothing.
        protect_first: the group at position 0 never merges.
        in_slot_order: ``order`` is ``arange(N)`` in every image (nothing
            merged or shuffled yet), so A and B are the even and odd slots:
            strided views instead of a gather.
        update: write the merged rows and norms; ``False`` for a last round
            (nothing reads them after it), which then writes nothing.

    Returns:
        ``(order, slot_of_token)`` after the round (:func:`_relabel`).
    """
    if r <= 0:
        return order, slot_of_token
    batch, t = order.shape
    n, c = sums.shape[1:]
    rows, row_norms = sums.view(batch * n, c), norms.view(batch * n)
    offset = torch.arange(0, batch * n, n, device=sums.device).unsqueeze(1)
    slot_a, slot_b = order[:, ::2], order[:, 1::2]
    ta = slot_a.shape[1]
    if in_slot_order:
        feat_a, feat_b = sums[:, 0::2], sums[:, 1::2]
        norm_a, norm_b = norms[:, 0::2], norms[:, 1::2]
    else:
        # one row gather (index_select: an index per row, not per element)
        idx = (torch.cat([slot_a, slot_b], dim=1) + offset).flatten()
        ab = rows.index_select(0, idx).view(batch, t, c)
        nab = row_norms.index_select(0, idx).view(batch, t)
        feat_a, feat_b = ab[:, :ta], ab[:, ta:]
        norm_a, norm_b = nab[:, :ta], nab[:, ta:]
    scores = feat_a @ feat_b.transpose(1, 2)  # (B, ta, tb)
    scores.div_(norm_a.clamp_min(1e-12).unsqueeze(-1))
    scores.div_(norm_b.clamp_min(1e-12).unsqueeze(1))
    src_slot, dst_slot, kept = _pick_merges(scores, slot_a, slot_b, r,
                                            protect_first)
    if update:
        dst_rows = (dst_slot + offset).flatten()
        rows.index_add_(0, dst_rows, rows.index_select(
            0, (src_slot + offset).flatten()))
        row_norms.index_copy_(0, dst_rows,
                              rows.index_select(0, dst_rows).norm(dim=-1))
    return _relabel(order, slot_of_token, src_slot, dst_slot, kept)


def _gram_round(gram: Tensor, norms: Tensor, order: Tensor,
                slot_of_token: Tensor, r: int, protect_first: bool,
                in_slot_order: bool = False, update: bool = True) -> tuple:
    """:func:`_match_round` reading the scores from the slots' Gram matrix.

    ``gram[:, s, s']`` is the dot product of the feature sums of the groups
    in slots s and s' (computed once per call). A round reads its A x B
    block (a row gather, then a column gather; no feature gather, no
    matmul) and, as groups merge, adds the merged rows and then columns
    into their partners' (a sum's dot products are the sums of its parts').
    A group's norm is the square root of its diagonal entry, so the
    features are not kept at all.
    The scores equal the per-round products' up to float rounding.

    Args:
        gram: (B, N, N) float32; updated in place.
        norms: (B, N) float32 norms of the slots' sums (clamped at 1e-12);
            updated in place.
        in_slot_order: as for :func:`_match_round` (the block is a strided
            view of ``gram``).
        update: write the merged rows, columns and norms (``False`` for a
            last round).
        (the rest as :func:`_match_round`)
    """
    if r <= 0:
        return order, slot_of_token
    batch = order.shape[0]
    n = gram.shape[1]
    offset = torch.arange(0, batch * n, n, device=gram.device).unsqueeze(1)
    g_rows = gram.view(batch * n, n)
    slot_a, slot_b = order[:, ::2], order[:, 1::2]
    ta, tb = slot_a.shape[1], slot_b.shape[1]
    # the (B, ta, tb) A x B block: the A rows, then the B columns of them
    if in_slot_order:
        scores = gram[:, 0::2, 1::2].div(norms[:, 0::2].unsqueeze(-1))
    else:
        scores = g_rows.index_select(0, (slot_a + offset).flatten()).view(
            batch, ta, n).gather(2, slot_b.unsqueeze(1).expand(-1, ta, tb))
        scores.div_(norms.gather(1, slot_a).unsqueeze(-1))
    scores.div_(norms.gather(1, slot_b).unsqueeze(1))
    src_slot, dst_slot, kept = _pick_merges(scores, slot_a, slot_b, r,
                                            protect_first)
    if update:
        # Gram: rows, then columns (of the updated rows) of the merged slots
        g_rows.index_add_(0, (dst_slot + offset).flatten(), g_rows.index_select(
            0, (src_slot + offset).flatten()))
        gram.scatter_add_(2, dst_slot.unsqueeze(1).expand(-1, n, -1),
                          gram.gather(2, src_slot.unsqueeze(1).expand(
                              -1, n, -1)))
        diag = gram.diagonal(dim1=1, dim2=2).gather(1, dst_slot)
        norms.scatter_(1, dst_slot, diag.clamp_min(1e-24).sqrt())
    return _relabel(order, slot_of_token, src_slot, dst_slot, kept)


def bipartite_partition(metric: Tensor,
                        r: Union[int, Sequence[int]],
                        iters: int,
                        protect_first: bool = True,
                        split: str = 'alternate',
                        generator: Optional[torch.Generator] = None,
                        method: str = 'auto') -> Tensor:
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
        method: how the scores are computed. ``'rounds'``: a product of
            the current A and B groups' features every round (the static
            and compiled forms compute exactly this). ``'gram'``: the
            tokens' Gram matrix once per call, then per round one gather
            of its A x B block and the merged rows' and columns' updates
            (no feature gather, no matmul). ``'auto'`` (default):
            ``'gram'`` when at least :data:`GRAM_MIN_ROUNDS` rounds merge,
            else ``'rounds'`` (the Gram matrix costs about four first-round
            products; the two cost the same at three merging rounds and
            the Gram path wins from four on, as measured with
            ``benchmarks/bench_morphing.py``). The two compute the same
            cosine scores up to float rounding, so they give the same
            partition except where two scores are within float32
            resolution of each other (where any two implementations,
            the reference's included, may order them differently).

    Returns:
        (B, N) int64: the group id (0..G-1) of every original token, where
        G = N - realised merges, the same for every image. Ids are positions
        in the final order.

    Examples:
        >>> x = torch.randn(2, 196, 512)
        >>> groups = bipartite_partition(x, r=16, iters=4)
        >>> int(groups.max()) + 1
        132
    """
    if metric.dim() != 3:
        raise ValueError(f'metric must be (B, N, C), got {tuple(metric.shape)}')
    check_split(split)
    if method not in METHODS:
        raise ValueError(f'method must be one of {METHODS}, got {method!r}')
    rounds = _round_reductions(r, iters)
    batch, n, _ = metric.shape
    device = metric.device
    arange_n = torch.arange(n, device=device).expand(batch, n)
    if not any(rounds):
        return arange_n.clone()

    # merges per round after the caps; the rounds that merge (none: every
    # shuffle is trivial)
    capped = [r_i for r_i, _ in partition_plan(rounds, n, protect_first)]
    merging = [i for i, r_i in enumerate(capped) if r_i > 0] or [-1]
    if method == 'auto':
        method = 'gram' if len(merging) >= GRAM_MIN_ROUNDS else 'rounds'
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        feats = metric.detach().float()
        if method == 'gram':
            gram = feats @ feats.transpose(1, 2)  # (B, N, N)
            norms = gram.diagonal(dim1=1, dim2=2).clamp_min(1e-24).sqrt()
        else:
            # rounds before the last write the sums: never into the input
            feats = (feats.clone(memory_format=torch.contiguous_format)
                     if len(merging) > 1 else feats.contiguous())
            norms = feats.norm(dim=-1)
        order, slot_of_token = arange_n, arange_n
        for i, r_i in enumerate(capped):
            if split == 'random':
                order = order.gather(1, split_shuffle(
                    batch, order.shape[1], protect_first, generator, device))
            # nothing merged or shuffled yet: A / B are the even / odd slots
            in_slot_order = split == 'alternate' and i <= merging[0]
            update = i != merging[-1]
            if method == 'gram':
                order, slot_of_token = _gram_round(
                    gram, norms, order, slot_of_token, r_i, protect_first,
                    in_slot_order, update)
            else:
                order, slot_of_token = _match_round(
                    feats, norms, order, slot_of_token, r_i, protect_first,
                    in_slot_order, update)
        position = torch.empty_like(arange_n)
        position.scatter_(1, order, arange_n[:, :order.shape[1]])
        return position.gather(1, slot_of_token)


def partition_plan(rounds: Sequence[int], num_tokens: int,
                   protect_first: bool = True,
                   max_rounds: Optional[int] = None) -> List[Tuple[int, int]]:
    """The realised merges and group counts of a schedule, padded.

    Args:
        rounds: requested merges per round (a level's
            ``MorphLevel.per_round``).
        num_tokens: N.
        protect_first: whether position 0 never merges (for the caps).
        max_rounds: pad with no-op rounds ``(0, t)`` to this many (the
            level's largest round count), so that the plan's length does not
            depend on the drawn schedule.

    Returns:
        ``[(r_i, t_i), ...]``: round i merges r_i of its t_i current groups
        (r_i already capped at floor((t_i - protected) / 2)).
    """
    plan, t = [], num_tokens
    for r in rounds:
        r = min(max(0, int(r)), round_cap(t, protect_first))
        plan.append((r, t))
        t -= r
    max_rounds = len(plan) if max_rounds is None else int(max_rounds)
    if max_rounds < len(plan):
        raise ValueError(f'the schedule has {len(plan)} rounds but '
                         f'max_rounds={max_rounds}')
    return plan + [(0, t)] * (max_rounds - len(plan))


def random_split_perms(plan: Sequence[Tuple[int, int]], iters: int,
                       batch: int, protect_first: bool,
                       generator: Optional[torch.Generator],
                       device: torch.device) -> Tensor:
    """(K, B, N) int64: the per-round shuffles of ``split='random'``.

    Round i < ``iters`` shuffles the first t_i positions with the draw
    :func:`bipartite_partition` makes there (:func:`split_shuffle`); the
    other positions, and the padding rounds, stay in place.
    """
    n = plan[0][1]
    perms = torch.arange(n, device=device).repeat(len(plan), batch, 1)
    for i, (_, t) in enumerate(plan[:iters]):
        perms[i, :, :t] = split_shuffle(batch, t, protect_first, generator,
                                        device)
    return perms


def _static_round(sums: Tensor, norms: Tensor, order: Tensor,
                  slot_of_token: Tensor, r: Tensor, t: Tensor,
                  protect_first: bool, perm: Optional[Tensor]) -> tuple:
    """One matching round with static shapes (see
    :func:`static_partition`); nothing is modified in place.

    Args:
        sums: (B, N, C) float32 group feature sums, one slot per token.
        norms: (B, N) norms of ``sums``' rows.
        order: (B, N) a permutation of the slots: the t current groups in
            their order, then the merged-away slots.
        slot_of_token: (B, N) slot of every original token's group.
        r: () int64 merges of this round (capped; 0 = no-op).
        t: () int64 current groups.
        protect_first: position 0 never merges.
        perm: (B, N) shuffle of the positions (``split='random'``) or None.

    Returns:
        ``(sums, norms, order, slot_of_token)`` after the round.
    """
    batch, n, c = sums.shape
    device = sums.device
    if perm is not None:
        order = order.gather(1, perm)
    na = (n + 1) // 2
    slot_a, slot_b = order[:, 0::2], order[:, 1::2]  # (B, Na), (B, Nb)
    pos_a = torch.arange(0, n, 2, device=device)
    pos_b = torch.arange(1, n, 2, device=device)
    offset = torch.arange(0, batch * n, n, device=device).unsqueeze(1)
    idx = (torch.cat([slot_a, slot_b], dim=1) + offset).flatten()
    rows, row_norms = sums.view(batch * n, c), norms.view(batch * n)
    ab = rows.index_select(0, idx).view(batch, n, c)
    nab = row_norms.index_select(0, idx).view(batch, n).clamp_min(1e-12)
    scores = ab[:, :na] @ ab[:, na:].transpose(1, 2)  # (B, Na, Nb)
    scores = scores.div(nab[:, :na].unsqueeze(-1)).div(
        nab[:, na:].unsqueeze(1))
    scores = scores.masked_fill((pos_b >= t).view(1, 1, -1), -torch.inf)
    best, best_b = scores.max(dim=-1)  # (B, Na)
    dead_a = pos_a >= t
    if protect_first:
        dead_a = dead_a | (pos_a == 0)
    best = best.masked_fill(dead_a.unsqueeze(0), -torch.inf)
    ranked = best.argsort(dim=-1, descending=True, stable=True)
    merges = (torch.arange(na, device=device) < r).unsqueeze(0)  # (1, Na)
    # the merged rows are added in rank order, as the eager op does; the
    # other A rows add zeros (x + 0 == x)
    src_slot = slot_a.gather(1, ranked)
    dst_slot = slot_b.gather(1, best_b.gather(1, ranked))
    dst_rows = (dst_slot + offset).flatten()
    src_in_ab = (ranked + torch.arange(0, batch * n, n, device=device)
                 .unsqueeze(1)).flatten()
    moved = ab.view(batch * n, c).index_select(0, src_in_ab)
    moved = moved.masked_fill(~merges.reshape(-1, 1).repeat(batch, 1), 0.0)
    rows = rows.index_add(0, dst_rows, moved)
    row_norms = row_norms.index_copy(
        0, dst_rows, rows.index_select(0, dst_rows).norm(dim=-1))
    # tokens of a merged slot now belong to its partner's slot
    remap = torch.arange(n, device=device).repeat(batch, 1)
    remap = remap.scatter(1, src_slot,
                          torch.where(merges, dst_slot, src_slot))
    slot_of_token = remap.gather(1, slot_of_token)
    # new order: kept A groups in order, then the B groups, then the rest
    merged_a = torch.zeros_like(merges.expand(batch, -1)).scatter(
        1, ranked, merges.expand(batch, -1))
    alive = torch.cat([~(merged_a | (pos_a >= t)),
                       (pos_b < t).expand(batch, -1)], dim=1)  # (B, N)
    alive_i = alive.long()
    n_alive = alive_i.sum(1, keepdim=True)
    new_pos = torch.where(alive, alive_i.cumsum(1) - 1,
                          n_alive + (1 - alive_i).cumsum(1) - 1)
    new_order = torch.empty_like(order).scatter(
        1, new_pos, torch.cat([slot_a, slot_b], dim=1))
    order = torch.where(r > 0, new_order, order)
    return (rows.view(batch, n, c), row_norms.view(batch, n), order,
            slot_of_token)


def static_partition(metric: Tensor, plan: Tensor,
                     protect_first: bool = True,
                     perms: Optional[Tensor] = None) -> Tensor:
    """:func:`bipartite_partition` with shapes that depend only on (B, N, C)
    and the number of rounds K, never on the drawn schedule.

    The schedule comes in as a tensor (realised merges and current group
    counts per round, see :func:`partition_plan`); every round works on all
    N slots: positions at or after t are inactive (their scores are -inf),
    merges are the A positions whose rank is below r, merged groups move
    behind the current ones, and a round with r = 0 changes nothing but the
    shuffle of ``split='random'``. One function for every schedule, so that
    ``torch.compile`` compiles it once per shape (and a CUDA graph can
    replay it). Gives the same group ids as :func:`bipartite_partition`.

    Args:
        metric: (B, N, C) token features (no gradient flows).
        plan: (K, 2) int64 ``[(r_i, t_i)]`` from :func:`partition_plan`,
            on ``metric``'s device.
        protect_first: the token at position 0 never merges.
        perms: (K, B, N) int64 shuffles for ``split='random'``
            (:func:`random_split_perms`), or None for ``'alternate'``.

    Returns:
        (B, N) int64 group ids, positions in the final order.

    Examples:
        >>> x = torch.randn(2, 196, 512)
        >>> plan = torch.tensor(partition_plan([16] * 4, 196, max_rounds=6))
        >>> torch.equal(static_partition(x, plan),
        ...             bipartite_partition(x, 16, 4))
        True
    """
    batch, n, _ = metric.shape
    device = metric.device
    arange_n = torch.arange(n, device=device).expand(batch, n)
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        sums = metric.detach().float().contiguous()
        norms = sums.norm(dim=-1)
        order, slot_of_token = arange_n, arange_n
        for i in range(plan.shape[0]):
            sums, norms, order, slot_of_token = _static_round(
                sums, norms, order, slot_of_token, plan[i, 0], plan[i, 1],
                protect_first, None if perms is None else perms[i])
        position = torch.empty_like(arange_n).scatter(1, order, arange_n)
        return position.gather(1, slot_of_token)


def group_mean(x: Tensor,
               groups: Tensor,
               num_groups: Optional[int] = None) -> Tensor:
    """Replace every token by the plain mean of ``x`` over its group.

    Args:
        x: (B, N, D) features; may require gradient (the student side).
        groups: (B, N) int64 group ids in [0, G) from
            :func:`bipartite_partition`.
        num_groups: G when known (e.g. from the schedule), so only G rows
            per image are allocated; defaults to N (always enough).

    Returns:
        (B, N, D) tensor of ``x``'s dtype; the sums are accumulated in at
        least float32.

    Examples:
        >>> x = torch.tensor([[[1.], [3.], [5.]]])
        >>> group_mean(x, torch.tensor([[0, 0, 1]])).flatten().tolist()
        [2.0, 2.0, 5.0]
    """
    if x.dim() != 3 or groups.shape != x.shape[:2]:
        raise ValueError(f'x must be (B, N, D) and groups (B, N); got '
                         f'{tuple(x.shape)} and {tuple(groups.shape)}')
    batch, n, d = x.shape
    g = n if num_groups is None else int(num_groups)
    flat = (groups + torch.arange(0, batch * g, g, device=x.device)
            .unsqueeze(1)).flatten()  # (B*N,) row of each token's group
    # accumulate in at least float32 (float64 stays float64)
    xf = x.to(torch.promote_types(x.dtype, torch.float32)).reshape(
        batch * n, d)
    sums = xf.new_zeros(batch * g, d).index_add_(0, flat, xf)
    counts = xf.new_zeros(batch * g).index_add_(
        0, flat, xf.new_ones(batch * n))
    means = sums.div_(counts.clamp_min_(1.0).unsqueeze(-1))
    return means.index_select(0, flat).view(batch, n, d).to(x.dtype)


def group_sizes(groups: Tensor) -> Tensor:
    """(B, N) float32: the size of the group of every token."""
    counts = torch.zeros(groups.shape, device=groups.device).scatter_add(
        1, groups, torch.ones(groups.shape, device=groups.device))
    return counts.gather(1, groups)


def count_groups(groups: Tensor) -> int:
    """Number of groups G (the same for every image)."""
    return int(groups[0].max()) + 1 if groups.numel() else 0
