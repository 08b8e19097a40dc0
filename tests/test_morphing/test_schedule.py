import math
from collections import Counter

import pytest
import torch

from mmdtm.morphing import (bipartite_partition, count_groups, level_rounds,
                            realised_groups, sample_schedule, step_generator)
from mmdtm.morphing.schedule import check_levels


def test_merge_reading_exhaustive():
    """count='merge': r = ceil(m/k), floor when k*ceil(m/k) > n."""
    n = 196
    for m in range(n + 1):
        for k in range(1, 15):
            rounds = level_rounds(m, k, 'merge', guard_n=n)
            assert len(rounds) == k and len(set(rounds)) == 1
            r = rounds[0]
            if math.ceil(m / k) * k > n:
                assert r == m // k
            else:
                assert r == math.ceil(m / k)
                assert r * k >= m  # the realised count can overshoot m
            assert r * k <= n


def test_guard_first_vs_own():
    # level 2 has n_2 = 10: own guard floors, the reference's n_1 guard
    # (n_1 = 196) does not.
    assert level_rounds(10, 3, 'merge', guard_n=10) == (3, 3, 3)
    assert level_rounds(10, 3, 'merge', guard_n=196) == (4, 4, 4)


def test_remain_reading_exact_when_feasible():
    n = 196
    for m in range(0, n):
        for k in range(1, 15):
            rounds = level_rounds(m, k, 'remain', num_tokens=n)
            realised = n - realised_groups(n, rounds)
            # the most k rounds can merge (each at most halves, token 0 kept)
            t = n
            for _ in range(k):
                t -= (t - 1) // 2
            assert realised == min(m, n - t)
            assert sum(rounds) == realised  # no round asks beyond its cap


def test_remain_reading_matches_real_partition():
    metric = torch.randn(2, 196, 16, generator=torch.Generator()
                         .manual_seed(0))
    for m, k in [(0, 3), (37, 5), (150, 14), (195, 14), (100, 1)]:
        rounds = level_rounds(m, k, 'remain', num_tokens=196)
        groups = bipartite_partition(metric, rounds, k)
        assert count_groups(groups) == realised_groups(196, rounds)


@pytest.mark.parametrize('count', ['merge', 'remain'])
def test_sampling_distribution(count):
    g = torch.Generator().manual_seed(1)
    n, kmax, draws = 20, 4, 8000
    ms, ks = Counter(), Counter()
    for _ in range(draws):
        (level, ) = sample_schedule([n], [kmax], g, count=count,
                                    num_tokens=n, protect_first=False)
        ms[level.merge] += 1
        ks[level.num_rounds] += 1
        assert len(level.per_round) == level.num_rounds
    # m ~ U{0..n}, k ~ U{1..K}: every value, each within 25% of uniform
    assert sorted(ms) == list(range(n + 1))
    assert sorted(ks) == list(range(1, kmax + 1))
    for c in ms.values():
        assert abs(c - draws / (n + 1)) < 0.25 * draws / (n + 1)
    for c in ks.values():
        assert abs(c - draws / kmax) < 0.1 * draws / kmax


def test_identity_probability_of_default_schedule():
    """m = 0 (no grouping) happens with probability 1/(n+1) per level."""
    g = torch.Generator().manual_seed(2)
    zero = sum(sample_schedule([4], [2], g)[0].is_identity
               for _ in range(5000))
    assert abs(zero / 5000 - 1 / 5) < 0.03


def test_sampling_is_reproducible_and_rank_dependent():
    a = sample_schedule([196, 196], [14, 14], step_generator(0, 0, 5))
    b = sample_schedule([196, 196], [14, 14], step_generator(0, 0, 5))
    assert a == b
    draws_rank0 = [sample_schedule([196], [14], step_generator(0, 0, i))
                   for i in range(20)]
    draws_rank1 = [sample_schedule([196], [14], step_generator(0, 1, i))
                   for i in range(20)]
    assert draws_rank0 != draws_rank1


def test_check_levels_names_field():
    with pytest.raises(ValueError, match='max_iters'):
        check_levels([196, 196], [14])
    with pytest.raises(ValueError, match=r'max_iters\[1\]'):
        check_levels([196, 196], [14, 0])
    with pytest.raises(ValueError, match=r'max_merge\[0\]=200 exceeds'):
        check_levels([200], [14], num_tokens=196)
    with pytest.raises(ValueError, match='count'):
        check_levels([1], [1], count='tokens')
    with pytest.raises(ValueError, match='guard'):
        check_levels([1], [1], guard='none')
    with pytest.raises(ValueError, match='at least one level'):
        check_levels([], [])
