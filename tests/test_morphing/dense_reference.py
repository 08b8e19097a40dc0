"""An independent, deliberately naive formulation of DTM's matching.

Per image, in float64, with explicit (t, N) membership ("source") matrices as
docs/method.md describes: a group's feature is recomputed from scratch as the
plain mean of its original tokens every round. Used only by the tests.
"""
import torch


def dense_partition(metric, rounds, protect_first=True, orders=None,
                    return_margin=False):
    """Groups (B, N) from per-round reductions ``rounds``.

    ``orders``: optional per-round list of (B, t) permutations applied to the
    current order before the even/odd split (to check ``split='random'``).
    ``return_margin``: also return the smallest score gap at any decision
    (an A token's best vs second-best partner; the r-th vs (r+1)-th score):
    below float32 resolution, a float32 implementation may legitimately
    decide a near-tie the other way.
    """
    margin = float('inf')
    batch, n, _ = metric.shape
    out = torch.empty(batch, n, dtype=torch.long)
    for bi in range(batch):
        x = metric[bi].double()
        src = torch.eye(n, dtype=torch.float64)  # (t, N) membership
        for ri, r in enumerate(rounds):
            if orders is not None:
                src = src[orders[ri][bi]]
            t = src.shape[0]
            r = min(r, (t - int(protect_first)) // 2)
            if r <= 0:
                continue
            feat = (src @ x) / src.sum(1, keepdim=True)
            unit = feat / feat.norm(dim=1, keepdim=True)
            a_pos = list(range(0, t, 2))
            b_pos = list(range(1, t, 2))
            best, partner = [], []
            for ia, pa in enumerate(a_pos):
                s = [float(unit[pa] @ unit[pb]) for pb in b_pos]
                if protect_first and ia == 0:
                    s = [float('-inf')] * len(s)
                j = max(range(len(s)), key=lambda q: (s[q], -q))
                best.append(s[j])
                partner.append(j)
            for ia, pa in enumerate(a_pos):
                if protect_first and ia == 0:
                    continue
                s = sorted((float(unit[pa] @ unit[pb]) for pb in b_pos),
                           reverse=True)
                if len(s) > 1:
                    margin = min(margin, s[0] - s[1])
            ranked = sorted(range(len(a_pos)), key=lambda q: -best[q])
            if r < len(ranked) and best[ranked[r]] != float('-inf'):
                margin = min(margin, best[ranked[r - 1]] - best[ranked[r]])
            merged = set(ranked[:r])
            rows = [src[a_pos[q]] for q in range(len(a_pos)) if q not in merged]
            b_rows = [src[pb].clone() for pb in b_pos]
            for q in merged:
                b_rows[partner[q]] += src[a_pos[q]]
            src = torch.stack(rows + b_rows)
        out[bi] = src.argmax(0)
    return (out, margin) if return_margin else out


def dense_group_mean(x, groups):
    """Group means through a (B, N, N) one-hot matmul."""
    n = x.shape[1]
    onehot = torch.nn.functional.one_hot(groups, n).to(x.dtype)  # (B, N, G)
    sums = onehot.transpose(1, 2) @ x
    counts = onehot.sum(1).clamp_min(1).unsqueeze(-1)
    return onehot @ (sums / counts)
