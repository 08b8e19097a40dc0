import math

import pytest
import torch

from mmdtm.models import DTMLoss
from mmdtm.morphing import MorphLevel

# Four tokens: t0 ~ t1 (cos 0.995) and t2 ~ t3 (cos 0.981). With split
# 'alternate' and no protection, A = {t0, t2}, B = {t1, t3}; one merge (r=1)
# joins t0 into t1. Groups: {t0, t1}, {t2}, {t3}.
TARGET = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.2, 1.0]]])
PRED = torch.tensor([[[0.0, 0.0], [2.0, 2.0], [1.0, 0.0], [0.0, 3.0]]])
ONE_MERGE = [MorphLevel(merge=1, num_rounds=1, per_round=(1, ))]
IDENTITY = [MorphLevel(merge=0, num_rounds=1, per_round=(0, ))]

# morphed pairs (u, v) per token
U = [[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 3.0]]
V = [[1.0, 0.05], [1.0, 0.05], [0.0, 1.0], [0.2, 1.0]]
SIZES = [2, 2, 1, 1]


def smooth_l1(d, beta=2.0):
    return 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta


def per_token(dist):
    out = []
    for u, v in zip(U, V):
        if dist == 'smooth_l1':
            out.append(sum(smooth_l1(a - b) for a, b in zip(u, v)) / 2)
        elif dist == 'l1':
            out.append(sum(abs(a - b) for a, b in zip(u, v)) / 2)
        elif dist == 'l2':
            out.append(sum((a - b)**2 for a, b in zip(u, v)) / 2)
        else:
            dot = sum(a * b for a, b in zip(u, v))
            out.append(-dot / math.hypot(*u) / math.hypot(*v))
    return out


def loss(**kw):
    kw.setdefault('max_merge', [4])
    kw.setdefault('max_iters', [1])
    kw.setdefault('protect_first', False)
    return DTMLoss(**kw)


@pytest.mark.parametrize('dist', ['smooth_l1', 'l1', 'l2', 'cosine'])
def test_all_tokens_reduction(dist):
    d = per_token(dist)
    value, stats = loss(distance=dist).compute(PRED, TARGET,
                                               levels=ONE_MERGE)
    assert value.item() == pytest.approx(sum(d) / 4, rel=1e-5)
    assert stats['groups_l1'].item() == 3


@pytest.mark.parametrize('dist', ['smooth_l1', 'l1', 'l2', 'cosine'])
def test_groups_reduction(dist):
    d = per_token(dist)
    expected = (d[0] + d[2] + d[3]) / 3  # one term per morphed pair
    value, _ = loss(distance=dist, reduction='groups').compute(
        PRED, TARGET, levels=ONE_MERGE)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_masked_reduction_and_mask_shapes():
    d = per_token('smooth_l1')
    mask = torch.tensor([[1, 0, 0, 1]])
    lm = loss(reduction='masked')
    value, _ = lm.compute(PRED, TARGET, mask, levels=ONE_MERGE)
    assert value.item() == pytest.approx((d[0] + d[3]) / 2, rel=1e-5)
    value2d, _ = lm.compute(PRED, TARGET, mask.view(1, 2, 2),
                            levels=ONE_MERGE)
    assert value2d.item() == pytest.approx(value.item())
    with pytest.raises(ValueError, match='mask'):
        lm.compute(PRED, TARGET, levels=ONE_MERGE)


def test_smooth_l1_beta():
    value, _ = loss(beta=0.5).compute(PRED, TARGET, levels=IDENTITY)
    diffs = (PRED - TARGET).flatten().tolist()
    expected = sum(smooth_l1(x, 0.5) for x in diffs) / len(diffs)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_identity_is_tokenwise_distillation():
    value, stats = loss().compute(PRED, TARGET, levels=IDENTITY)
    expected = torch.nn.functional.smooth_l1_loss(PRED, TARGET, beta=2.0)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert stats['groups_l1'].item() == 4


def test_levels_weight_and_standardisation():
    d = per_token('l2')
    two = DTMLoss(max_merge=[4, 4], max_iters=[1, 1], protect_first=False,
                  distance='l2', loss_weight=0.5)
    value, stats = two.compute(PRED, TARGET, levels=ONE_MERGE + IDENTITY)
    ident = ((PRED - TARGET)**2).mean().item()
    assert value.item() == pytest.approx(0.5 * (sum(d) / 4 + ident) / 2,
                                         rel=1e-5)
    assert stats['groups_l1'].item() == 3 and stats['groups_l2'].item() == 4
    std = loss(distance='l2', standardize_target=True)
    value, _ = std.compute(PRED, TARGET, levels=IDENTITY)
    t = TARGET
    # the reference's --normalize_target: torch.var, i.e. unbiased
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, unbiased=True,
                                                keepdim=True) + 1e-6).sqrt()
    assert value.item() == pytest.approx(((PRED - t)**2).mean().item(),
                                         rel=1e-5)


def test_protect_first_changes_the_partition():
    value, stats = DTMLoss(max_merge=[4], max_iters=[1]).compute(
        PRED, TARGET, levels=ONE_MERGE)
    # token 0 is protected: t2 merges into t3 instead
    assert stats['groups_l1'].item() == 3
    assert value.item() != pytest.approx(sum(per_token('smooth_l1')) / 4)


def test_gradient_reaches_pred_not_target():
    pred = torch.randn(2, 16, 8, requires_grad=True)
    target = torch.randn(2, 16, 8, requires_grad=True)
    module = DTMLoss(max_merge=[16, 16], max_iters=[4, 4], seed=0)
    module(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert target.grad is None


def test_schedule_is_drawn_per_call_and_resumable():
    pred, target = torch.randn(2, 16, 8), torch.randn(2, 16, 8)
    a = DTMLoss(max_merge=[16, 16], max_iters=[4, 4], seed=3)
    values = [a(pred, target).item() for _ in range(6)]
    assert len(set(values)) > 1  # different schedules per step
    b = DTMLoss(max_merge=[16, 16], max_iters=[4, 4], seed=99)
    for _ in range(2):
        b(pred, target)
    state = a.state_dict()
    assert int(state['schedule_state'][1]) == 6
    c = DTMLoss(max_merge=[16, 16], max_iters=[4, 4], seed=3)
    for _ in range(3):
        c(pred, target)
    # a fresh module restored to the state after 3 calls continues like a
    b.load_state_dict(c.state_dict())
    assert [b(pred, target).item() for _ in range(3)] == values[3:]


@pytest.mark.parametrize('kwargs,field', [
    (dict(max_merge=[196, 196], max_iters=[14]), 'max_iters'),
    (dict(max_merge=[196], max_iters=[0]), r'max_iters\[0\]'),
    (dict(max_merge=[196, 196], max_iters=[14, 14], num_levels=3),
     'num_levels'),
    (dict(distance='huber'), 'distance'),
    (dict(reduction='sum'), 'reduction'),
    (dict(split='odd'), 'split'),
    (dict(count='tokens'), 'count'),
    (dict(beta=0), 'beta'),
    (dict(compile='always'), 'compile'),
    (dict(method='dense'), 'method'),
])
def test_invalid_config_names_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DTMLoss(**kwargs)


def test_method_selects_the_eager_partition(round_calls):
    """DTMLoss(method=...) reaches bipartite_partition: 'gram' runs the
    Gram rounds, 'rounds' the per-round products, with the same losses
    (no near-ties in this input)."""
    g = torch.Generator().manual_seed(3)
    pred, target = (torch.randn(2, 40, 16, generator=g),
                    torch.randn(2, 40, 16, generator=g))
    used, values = {}, {}
    for method in ('rounds', 'gram'):
        round_calls.update(rounds=0, gram=0)
        loss = DTMLoss(max_merge=[40, 40], max_iters=[8, 8], seed=1,
                       compile=False, method=method)
        values[method] = [loss(pred, target) for _ in range(4)]
        used[method] = dict(round_calls)
    assert used['rounds']['gram'] == 0 < used['rounds']['rounds']
    assert used['gram']['rounds'] == 0 < used['gram']['gram']
    torch.testing.assert_close(values['gram'], values['rounds'])


def test_too_many_merges_for_tokens():
    with pytest.raises(ValueError, match=r'max_merge\[0\]=196 exceeds'):
        DTMLoss()(torch.randn(1, 16, 4), torch.randn(1, 16, 4))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_float32_loss(dtype):
    pred = torch.randn(2, 16, 8).to(dtype).requires_grad_()
    target = torch.randn(2, 16, 8).to(dtype)
    value = DTMLoss(max_merge=[16], max_iters=[4], seed=1)(pred, target)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert pred.grad.dtype == dtype


@pytest.mark.parametrize('split', ['alternate', 'random'])
def test_compiled_partition_gives_the_same_losses(split, monkeypatch):
    """compile=True (dynamo graph capture; the eager backend keeps the test
    cheap, the inductor path is tested in test_morphing) draws the same
    schedules and gives the same losses and gradients as the eager op."""
    from torch._dynamo.utils import counters

    from mmdtm.morphing import compiled
    torch._dynamo.reset()
    counters.clear()
    compiled.reset()
    monkeypatch.setattr(compiled, 'BACKEND', 'eager')
    g = torch.Generator().manual_seed(4)
    pred, target = torch.randn(2, 20, 6, generator=g), torch.randn(
        2, 20, 6, generator=g)
    results = []
    for flag in (False, True):
        # the eager twin of the static op computes per-round products
        module = DTMLoss(max_merge=[20, 10], max_iters=[4, 3], seed=5,
                         split=split, compile=flag, method='rounds')
        assert module.uses_compile(pred.device) is flag
        values, grads = [], []
        for _ in range(6):
            x = pred.clone().requires_grad_()
            values.append(module(x, target))
            values[-1].backward()
            grads.append(x.grad)
        results.append((values, grads))
    for a, b in zip(*results):
        for u, v in zip(a, b):
            assert torch.equal(u, v)
    assert counters['stats']['unique_graphs'] <= 2  # one per level
    torch._dynamo.reset()
    compiled.reset()


def test_compile_auto_is_on_for_cuda_only():
    module = DTMLoss(max_merge=[4], max_iters=[1], seed=0)
    assert module.compile == 'auto'
    assert not module.uses_compile(torch.device('cpu'))
    assert module.uses_compile(torch.device('cuda'))
    assert not DTMLoss(max_merge=[4], max_iters=[1], seed=0,
                       compile=False).uses_compile(torch.device('cuda'))
