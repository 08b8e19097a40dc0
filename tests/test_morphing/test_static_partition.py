"""The static-shape partition (shapes independent of the drawn schedule)
against today's eager op, and its compiled path: one graph for every
schedule draw, under autocast too, and the eager fallback."""
import random
import warnings

import pytest
import torch
from torch._dynamo.utils import counters

from mmdtm.morphing import bipartite_partition as _bipartite_partition
from mmdtm.morphing import (compiled_morph, compiled_partition, group_mean,
                            partition_plan, sample_schedule, static_partition)
from mmdtm.morphing import compiled as compiled_mod
from mmdtm.morphing.partition import random_split_perms
from tests.conftest import STATIC_OP_COMPILES, needs_static_compile


def bipartite_partition(*args, **kwargs):
    """Today's eager op: per-round products, what the static op computes
    (the default ``method='auto'`` may use the Gram matrix instead)."""
    return _bipartite_partition(*args, method='rounds', **kwargs)


def _static(metric, rounds, max_rounds, protect_first, split, seed=5):
    plan = partition_plan(rounds, metric.shape[1], protect_first, max_rounds)
    perms = (random_split_perms(plan, len(rounds), metric.shape[0],
                                protect_first,
                                torch.Generator().manual_seed(seed),
                                metric.device)
             if split == 'random' else None)
    return static_partition(metric, torch.tensor(plan), protect_first, perms)


@pytest.mark.parametrize('split', ['alternate', 'random'])
@pytest.mark.parametrize('protect_first', [True, False])
def test_static_matches_eager_for_many_schedules(protect_first, split):
    rng = random.Random(2 * int(protect_first) + (split == 'random'))
    checked = 0
    for trial in range(60):
        b, n, c = rng.randint(1, 3), rng.randint(3, 40), rng.randint(1, 6)
        metric = torch.randn(b, n, c,
                             generator=torch.Generator().manual_seed(trial))
        k = rng.randint(1, 6)
        rounds = [rng.randint(0, n // 2) for _ in range(k)]
        if not any(rounds):
            continue
        ref = bipartite_partition(metric, rounds, k,
                                  protect_first=protect_first, split=split,
                                  generator=torch.Generator().manual_seed(5))
        out = _static(metric, rounds, k + rng.randint(0, 3), protect_first,
                      split)
        assert torch.equal(out, ref), (trial, rounds)
        checked += 1
    assert checked > 50


def test_static_keeps_ties_and_full_size():
    # every score ties: the same stable choices as the eager op
    ones = torch.ones(1, 8, 3)
    assert _static(ones, [2], 3, False, 'alternate').tolist() == \
        [[2, 2, 2, 3, 0, 4, 1, 5]]
    ones = torch.ones(2, 10, 4)
    assert torch.equal(_static(ones, [100] * 5, 6, True, 'alternate'),
                       bipartite_partition(ones, 100, 5))
    metric = torch.randn(2, 196, 32,
                         generator=torch.Generator().manual_seed(7))
    assert torch.equal(_static(metric, [7] * 14, 14, True, 'alternate'),
                       bipartite_partition(metric, 7, 14))


def test_static_partition_of_a_slice():
    """The patch tokens after a class token (a strided view, as EVA's
    teacher features reach the loss) work in the static op too."""
    tokens = torch.randn(2, 31, 16, generator=torch.Generator().manual_seed(8))
    metric = tokens[:, 1:]
    assert not metric.is_contiguous()
    ref = bipartite_partition(metric.contiguous(), [6, 6], 2)
    assert torch.equal(_static(metric, [6, 6], 3, True, 'alternate'), ref)
    assert torch.equal(_static(metric.contiguous(), [6, 6], 3, True,
                               'alternate'), ref)


def test_partition_plan():
    assert partition_plan([5, 5, 5], 10, True, 5) == [
        (4, 10), (2, 6), (1, 4), (0, 3), (0, 3)]
    assert partition_plan([0, 2], 10, False) == [(0, 10), (2, 10)]
    with pytest.raises(ValueError, match='max_rounds'):
        partition_plan([1, 1, 1], 10, True, 2)


@pytest.fixture
def dynamo_clean(monkeypatch):
    """A fresh dynamo cache and counters, before and after."""
    torch._dynamo.reset()
    counters.clear()
    compiled_mod.reset()
    yield monkeypatch
    torch._dynamo.reset()
    counters.clear()
    compiled_mod.reset()


@needs_static_compile
def test_one_graph_for_fifty_schedule_draws(dynamo_clean):
    # graph capture and guards are dynamo's, whatever the backend: the eager
    # backend checks them without paying for code generation
    dynamo_clean.setattr(compiled_mod, 'BACKEND', 'eager')
    metric = torch.randn(2, 24, 8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    draws = 0
    for split, protect in (('alternate', True), ('random', False)):
        with torch._dynamo.config.patch(error_on_recompile=True):
            for step in range(50):
                level = sample_schedule([24], [5], g, num_tokens=24,
                                        protect_first=protect)[0]
                kwargs = dict(protect_first=protect, split=split)
                out = compiled_partition(
                    metric, level.per_round, level.num_rounds, 5, **kwargs,
                    generator=torch.Generator().manual_seed(step))
                ref = bipartite_partition(
                    metric, level.per_round, level.num_rounds, **kwargs,
                    generator=torch.Generator().manual_seed(step))
                assert torch.equal(out, ref), level
                draws += not level.is_identity
            torch._dynamo.reset()  # the other split starts afresh
    assert draws > 80
    assert counters['stats']['unique_graphs'] == 2  # one per split
    assert not compiled_mod._FAILED


@needs_static_compile
def test_inductor_compiled_level_under_autocast(dynamo_clean):
    """A whole level (partition + group means, forward and backward)
    through inductor, under bf16 autocast: the eager op's groups, the same
    means and gradients, one graph for three schedules."""
    g = torch.Generator().manual_seed(1)
    target = torch.randn(2, 16, 8, generator=g)
    pred = torch.randn(2, 16, 6, generator=g)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        for rounds in ([3, 2], [5], [0, 4]):
            x = pred.clone().requires_grad_()
            groups, u, v = compiled_morph(x, target, rounds, len(rounds), 2)
            ref = bipartite_partition(target, rounds, len(rounds))
            assert torch.equal(groups, ref)
            torch.testing.assert_close(v, group_mean(target, ref))
            u.square().sum().backward()
            x_ref = pred.clone().requires_grad_()
            group_mean(x_ref, ref).square().sum().backward()
            torch.testing.assert_close(x.grad, x_ref.grad)
    assert counters['stats']['unique_graphs'] == 1
    assert not compiled_mod._FAILED


@pytest.mark.skipif(STATIC_OP_COMPILES,
                    reason='this torch compiles the static op')
def test_old_torch_compiles_nothing_and_warns_once(dynamo_clean):
    """On a torch whose dynamo cannot trace the op (the old stack), the
    real compiled call degrades: one warning, the eager op's groups, and
    every later call eager without another warning."""
    dynamo_clean.setattr(compiled_mod, 'BACKEND', 'eager')
    metric = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        for rounds in ([3, 2], [5]):
            out = compiled_partition(metric, rounds, len(rounds), 2)
            assert torch.equal(out, bipartite_partition(metric, rounds,
                                                        len(rounds)))
    fallbacks = [w for w in seen if 'running it eagerly' in str(w.message)]
    assert len(fallbacks) == 1
    assert 'cpu' in compiled_mod._FAILED


def test_falls_back_to_eager(dynamo_clean):
    def broken(fn, mode):
        def run(*args):
            raise RuntimeError('no compiler here')
        return run

    dynamo_clean.setattr(compiled_mod, '_compiled', broken)
    metric = torch.randn(2, 20, 4, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match='no compiler here'):
        out = compiled_partition(metric, [3, 3], 2, 3)
    assert torch.equal(out, bipartite_partition(metric, 3, 2))
    assert 'cpu' in compiled_mod._FAILED
    # no second warning; still right
    out = compiled_partition(metric, [4], 1, 3)
    assert torch.equal(out, bipartite_partition(metric, 4, 1))


def _works_once_then(error):
    """A ``_compiled`` whose first call runs the real op and whose later
    calls raise ``error`` (an error at step 10,000)."""
    calls = []

    def compiled(fn, mode):
        def run(*args):
            calls.append(fn.__name__)
            if len(calls) > 1:
                raise error
            return fn(*args)
        return run
    return compiled


@pytest.mark.parametrize('error', [RuntimeError('shape bug at step 10000'),
                                   torch.cuda.OutOfMemoryError('no memory')])
def test_errors_after_a_compiled_success_propagate(dynamo_clean, error):
    dynamo_clean.setattr(compiled_mod, '_compiled', _works_once_then(error))
    metric = torch.randn(2, 20, 4, generator=torch.Generator().manual_seed(2))
    out = compiled_partition(metric, [3, 3], 2, 3)
    assert torch.equal(out, bipartite_partition(metric, 3, 2))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no fallback warning either
        with pytest.raises(type(error), match=str(error)):
            compiled_morph(metric, metric, [3, 3], 2, 3)
    assert not compiled_mod._FAILED


def test_first_call_errors_of_the_op_itself_propagate(dynamo_clean):
    """A failing first compiled call falls back only where the eager op
    runs: the op's own error, and an out-of-memory error, propagate."""
    def broken(fn, mode):
        def run(*args):
            raise RuntimeError('compiled: failed')
        return run

    def shape_bug(*args):
        raise IndexError('eager: index out of range')

    dynamo_clean.setattr(compiled_mod, '_compiled', broken)
    dynamo_clean.setattr(compiled_mod, 'static_partition', shape_bug)
    metric = torch.randn(2, 20, 4, generator=torch.Generator().manual_seed(2))
    with pytest.raises(IndexError, match='eager: index out of range'):
        compiled_partition(metric, [3, 3], 2, 3)
    assert not compiled_mod._FAILED

    def out_of_memory(fn, mode):
        def run(*args):
            raise torch.cuda.OutOfMemoryError('no memory')
        return run

    dynamo_clean.setattr(compiled_mod, '_compiled', out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        compiled_morph(metric, metric, [3, 3], 2, 3)
    assert not compiled_mod._FAILED


@pytest.mark.parametrize('op', [compiled_partition, compiled_morph])
def test_compiled_ops_check_split(op):
    metric = torch.randn(2, 20, 4)
    args = (metric, ) if op is compiled_partition else (metric, metric)
    with pytest.raises(ValueError, match="split must be one of .*'randon'"):
        op(*args, [3, 3], 2, 3, split='randon')
    with pytest.raises(ValueError, match="split must be one of .*'randon'"):
        bipartite_partition(metric, 3, 2, split='randon')
