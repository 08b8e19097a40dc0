import pytest
import torch

from mmdtm.morphing import (bipartite_partition, count_groups, group_mean,
                            group_sizes, realised_groups)

from .dense_reference import dense_group_mean, dense_partition


def _metric(seed, b=3, n=24, c=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, c, generator=g)


@pytest.mark.parametrize('method', ['rounds', 'gram'])
@pytest.mark.parametrize('protect_first', [True, False])
@pytest.mark.parametrize('r,iters', [(1, 1), (3, 2), (5, 4), (11, 1),
                                     (4, 7), (20, 3)])
@pytest.mark.parametrize('seed', range(4))
def test_partition_matches_dense_reference(protect_first, r, iters, seed,
                                           method):
    metric = _metric(seed)
    ours = bipartite_partition(metric, r, iters, protect_first=protect_first,
                               method=method)
    ref, margin = dense_partition(metric, [r] * iters,
                                  protect_first=protect_first,
                                  return_margin=True)
    # every decision of these inputs is far from a float32 near-tie
    assert margin > 1e-5
    assert torch.equal(ours, ref)
    expected = realised_groups(metric.shape[1], [r] * iters, protect_first)
    assert count_groups(ours) == expected
    # ids are dense 0..G-1 in every image
    for row in ours:
        assert torch.equal(row.unique(), torch.arange(expected))


def test_partition_full_size_against_dense():
    metric = _metric(7, b=2, n=196, c=32)
    ours = bipartite_partition(metric, 14, 7)
    ref, margin = dense_partition(metric, [14] * 7, return_margin=True)
    assert margin > 1e-5  # no float32 near-tie in this input
    assert torch.equal(ours, ref)
    assert count_groups(ours) == 196 - 98


def test_per_round_reductions_sequence():
    metric = _metric(3, n=30)
    rounds = [5, 3, 0, 2]
    ours = bipartite_partition(metric, rounds, len(rounds))
    assert torch.equal(ours, dense_partition(metric, rounds))
    with pytest.raises(ValueError, match='iters'):
        bipartite_partition(metric, rounds, 3)


@pytest.mark.parametrize('r,iters', [(0, 5), (4, 0)])
def test_identity(r, iters):
    metric = _metric(0)
    out = bipartite_partition(metric, r, iters)
    assert torch.equal(out, torch.arange(24).expand(3, 24))


def test_protect_first_keeps_token_zero_alone():
    metric = torch.ones(2, 10, 4)  # everything identical: all want to merge
    out = bipartite_partition(metric, 100, 5, protect_first=True)
    assert (group_sizes(out)[:, 0] == 1).all()
    assert count_groups(out) == 2  # token 0 and one group of the other 9
    out = bipartite_partition(metric, 100, 5, protect_first=False)
    assert count_groups(out) == 1


def test_cap_and_stable_ties():
    # All scores tie: the stable sort merges the first r A tokens.
    metric = torch.ones(1, 8, 3)
    out = bipartite_partition(metric, 2, 1, protect_first=False)
    # A = 0,2,4,6 ; B = 1,3,5,7 ; every A picks B index 0 (token 1).
    # A tokens 0 and 2 merge into token 1; kept 4, 6 come first.
    assert out.tolist() == [[2, 2, 2, 3, 0, 4, 1, 5]]


def test_random_split_uses_generator_and_matches_dense():
    metric = _metric(1, b=2, n=20)
    g1 = torch.Generator().manual_seed(5)
    g2 = torch.Generator().manual_seed(5)
    out1 = bipartite_partition(metric, 3, 3, split='random', generator=g1)
    out2 = bipartite_partition(metric, 3, 3, split='random', generator=g2)
    assert torch.equal(out1, out2)
    # Rebuild the same permutations and check against the dense reference.
    g3 = torch.Generator().manual_seed(5)
    orders, t = [], 20
    for _ in range(3):
        keys = torch.rand(2, t - 1, generator=g3)
        perm = torch.cat([torch.zeros(2, 1, dtype=torch.long),
                          keys.argsort(-1) + 1], 1)
        orders.append(perm)
        t -= min(3, (t - 1) // 2)
    ref = dense_partition(metric, [3, 3, 3], orders=orders)
    # Group ids are positions in the final (shuffled) order: compare the
    # partitions as sets of members.
    for a, b in zip(out1, ref):
        assert _as_sets(a) == _as_sets(b)
    alt = bipartite_partition(metric, 3, 3)
    assert any(_as_sets(a) != _as_sets(b) for a, b in zip(out1, alt))
    assert count_groups(out1) == count_groups(alt)
    # token 0 stays alone when protected, even under the random split
    assert (group_sizes(out1)[:, 0] == 1).all()


def _as_sets(row):
    return {frozenset((row == g).nonzero().flatten().tolist())
            for g in row.unique().tolist()}


def test_group_mean_against_dense_and_gradient():
    metric = _metric(4, b=2, n=40)
    groups = bipartite_partition(metric, 6, 3)
    x = torch.randn(2, 40, 5, dtype=torch.float64, requires_grad=True,
                    generator=torch.Generator().manual_seed(0))
    ours = group_mean(x, groups)
    ref = dense_group_mean(x, groups)
    torch.testing.assert_close(ours, ref)
    (ours ** 2).sum().backward()
    g_ours = x.grad.clone()
    x.grad = None
    (ref ** 2).sum().backward()
    torch.testing.assert_close(g_ours, x.grad)


def test_group_mean_gradcheck():
    groups = torch.tensor([[0, 0, 1, 2, 1], [1, 0, 0, 0, 1]])
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True,
                    generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(lambda t: group_mean(t, groups), (x, ))


def test_partition_under_autocast_matches_float32():
    metric = _metric(10, b=2, n=64, c=16)
    ref = bipartite_partition(metric, 8, 3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = bipartite_partition(metric, 8, 3)
    assert torch.equal(out, ref)


def test_group_mean_with_known_number_of_groups():
    metric = _metric(11, b=2, n=30)
    groups = bipartite_partition(metric, 4, 3)
    x = torch.randn(2, 30, 6, dtype=torch.float64, requires_grad=True)
    full = group_mean(x, groups)
    compact = group_mean(x, groups, num_groups=count_groups(groups))
    torch.testing.assert_close(compact, full)
    assert torch.autograd.gradcheck(
        lambda t: group_mean(t, groups, num_groups=count_groups(groups)),
        (x, ))


@pytest.mark.parametrize('protect_first', [True, False])
@pytest.mark.parametrize('split', ['alternate', 'random'])
@pytest.mark.parametrize('seed', range(3))
def test_gram_method_matches_rounds_and_dense(protect_first, split, seed):
    """method='gram' (one Gram matrix, per-round block gathers and merged
    row / column updates) gives the same partition as the per-round
    products, away from float32 near-ties."""
    metric = _metric(seed, b=3, n=40, c=16)
    rounds = [6, 0, 5, 4, 3, 8]
    out = {m: bipartite_partition(
        metric, rounds, len(rounds), protect_first=protect_first,
        split=split, generator=torch.Generator().manual_seed(seed),
        method=m) for m in ('rounds', 'gram')}
    assert torch.equal(out['gram'], out['rounds'])
    if split == 'alternate':
        ref, margin = dense_partition(metric, rounds,
                                      protect_first=protect_first,
                                      return_margin=True)
        assert margin > 1e-5
        assert torch.equal(out['gram'], ref)


def test_gram_method_full_size_and_bad_name():
    metric = _metric(7, b=2, n=196, c=32)
    assert torch.equal(bipartite_partition(metric, 7, 14, method='gram'),
                       bipartite_partition(metric, 7, 14))
    with pytest.raises(ValueError, match='method'):
        bipartite_partition(metric, 7, 14, method='dense')


@pytest.mark.parametrize('rounds,protect_first,expected', [
    ([98], True, 'rounds'), ([49, 49], True, 'rounds'),
    ([14] * 7, True, 'gram'), ([7] * 14, False, 'gram'),
    ([0, 5, 0, 5, 5], True, 'rounds'),  # three rounds merge
    ([5, 0, 5, 0, 5, 5], True, 'gram'),
    # the cap leaves 196 -> 98 -> 49 -> 24 -> 12: four merging rounds
    ([200] * 4, False, 'gram'),
    # 4 tokens, token 0 protected: round 1 merges 1, then 3 -> cap 1, then
    # 2 -> cap 0: two merging rounds
    ([1, 1, 1], True, 'rounds')])
def test_auto_method_uses_the_gram_matrix_from_four_merging_rounds(
        rounds, protect_first, expected, round_calls):
    """method='auto' (the default) counts the rounds that merge after the
    caps: four or more take the Gram path, fewer the per-round products;
    either way the same partition as the named method."""
    n = 4 if rounds == [1, 1, 1] else 196
    metric = _metric(12, b=2, n=n, c=24)
    out = bipartite_partition(metric, rounds, len(rounds),
                              protect_first=protect_first)
    assert round_calls[expected] == len(rounds)
    assert round_calls['gram' if expected == 'rounds' else 'rounds'] == 0
    assert torch.equal(out, bipartite_partition(
        metric, rounds, len(rounds), protect_first=protect_first,
        method=expected))


@pytest.mark.parametrize('method', ['auto', 'rounds', 'gram'])
@pytest.mark.parametrize('rounds', [[12], [6, 6], [3] * 5])
def test_partition_never_writes_its_input(method, rounds):
    """The rounds write group sums in place: never into the caller's
    float32 tensor (a single merging round writes nothing at all)."""
    metric = _metric(13, b=2, n=30, c=16)
    before = metric.clone()
    bipartite_partition(metric, rounds, len(rounds), method=method)
    assert torch.equal(metric, before)


@pytest.mark.parametrize('method', ['auto', 'rounds', 'gram'])
@pytest.mark.parametrize('rounds', [[12], [6, 6], [3] * 5])
def test_partition_of_non_contiguous_features(method, rounds):
    """Strided inputs (a slice, e.g. the patch tokens after a class token,
    and a dense tensor with permuted strides) give the contiguous input's
    ids."""
    metric = _metric(14, b=2, n=30, c=16)
    ref = bipartite_partition(metric, rounds, len(rounds), method=method)
    with_cls = torch.cat([metric[:, :1], metric], dim=1)[:, 1:]
    permuted = metric.transpose(0, 1).contiguous().transpose(0, 1)
    for strided in (with_cls, permuted):
        assert not strided.is_contiguous()
        assert torch.equal(bipartite_partition(strided, rounds, len(rounds),
                                               method=method), ref)
