"""Non-finite losses and checkpoints of the wrong model."""
import os.path as osp

import pytest
import torch

from mmdtm.checkpoint import CheckpointMismatchError
from mmdtm.engine import NonFiniteLossHook, build_runner
from mmdtm.engine.hooks.strict_load_hook import check_state_dict

from ..conftest import make_image_folder, toy_config


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp('guard_data')),
                             num=4)


def runner_with_nan_at(work_dir, data, bad_iters, max_iters, **options):
    """A toy runner whose loss is NaN at the given (1-based) iterations."""
    runner = build_runner(toy_config(
        work_dir, data, max_iters=max_iters,
        **{'train_dataloader.batch_size': 2,
           'default_hooks.checkpoint.interval': 2, **options}))
    original, calls = runner.model.loss, [0]

    def loss(*args, **kwargs):
        calls[0] += 1
        out = original(*args, **kwargs)
        if calls[0] in bad_iters:
            out['loss'] = out['loss'] * float('nan')
        return out

    runner.model.loss = loss
    return runner


def test_nonfinite_loss_stops_naming_the_iteration(
        tmp_path, data, checkpoint_loading):
    runner = runner_with_nan_at(str(tmp_path), data, {5}, max_iters=6)
    with pytest.raises(FloatingPointError,
                       match=r'non-finite loss \(nan\) at iteration 5;.*'
                       r'iter_4\.pth, is intact'):
        runner.train()
    # the weights were not touched by the bad step and iter_4 is the latest
    ckpt = torch.load(osp.join(str(tmp_path), 'iter_4.pth'),
                      map_location='cpu')
    assert not osp.exists(osp.join(str(tmp_path), 'iter_6.pth'))
    for key, value in runner.model.state_dict().items():
        assert torch.isfinite(value.float()).all(), key
        if not key.endswith('schedule_state'):  # the forward ran: counter+1
            assert torch.equal(value, ckpt['state_dict'][key]), key
    with open(osp.join(str(tmp_path), 'last_checkpoint')) as f:
        assert f.read().strip().endswith('iter_4.pth')


def test_nonfinite_loss_skip_mode_counts(tmp_path, data, checkpoint_loading):
    runner = runner_with_nan_at(
        str(tmp_path), data, {2, 3}, max_iters=4,
        custom_hooks=[dict(type='NonFiniteLossHook', action='skip')])
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    assert runner.message_hub.get_info('nonfinite_skips') == 2
    state = runner.model.state_dict()
    assert all(torch.isfinite(v.float()).all() for v in state.values())
    assert any(not torch.equal(before[k], state[k]) for k in state)
    ckpt = torch.load(osp.join(str(tmp_path), 'iter_4.pth'),
                      map_location='cpu')
    assert ckpt['message_hub']['runtime_info']['nonfinite_skips'] == 2


def test_nonfinite_hook_rejects_bad_fields():
    with pytest.raises(ValueError, match='action'):
        NonFiniteLossHook(action='ignore')
    with pytest.raises(ValueError, match='max_skips'):
        NonFiniteLossHook(action='skip', max_skips=-1)


def test_load_from_a_checkpoint_of_another_model_fails(tmp_path, data):
    # a "wrong model": a checkpoint of the student alone (no DTM prefixes)
    runner = build_runner(toy_config(str(tmp_path / 'a'), data, 2))
    wrong = str(tmp_path / 'backbone_only.pth')
    torch.save({'state_dict': runner.model.backbone.state_dict()}, wrong)
    runner = build_runner(toy_config(
        str(tmp_path / 'b'), data, max_iters=2, load_from=wrong))
    with pytest.raises(CheckpointMismatchError) as err:
        runner.train()
    msg = str(err.value)
    assert wrong in msg
    assert 'missing keys' in msg and 'backbone.cls_token' in msg
    assert 'unexpected keys' in msg and "cls_token" in msg
    assert runner.iter == 0  # failed before any training step


def test_check_state_dict_lists_shapes_and_allows_patterns():
    model = {'a.weight': torch.zeros(2, 3), 'b.bias': torch.zeros(2)}
    with pytest.raises(CheckpointMismatchError,
                       match=r'a\.weight: checkpoint \(3, 3\) vs model'):
        check_state_dict(model, {'a.weight': torch.zeros(3, 3),
                                 'b.bias': torch.zeros(2)}, 'ckpt.pth')
    check_state_dict(model, {'a.weight': torch.zeros(2, 3), 'c': 1},
                     'ckpt.pth', allow_missing=[r'^b\.'],
                     allow_unexpected=['^c$'])


@pytest.mark.parametrize('options, error, match', [
    ({'model.target_generator.pretrained': '/nowhere/clip_b16.bin'},
     FileNotFoundError, '/nowhere/clip_b16.bin'),
    ({'model.head.loss.max_merge': [17, 16]}, ValueError,
     r'head\.loss\.max_merge\[0\]=17 exceeds'),
    ({'model.head.loss.distance': 'l3'}, ValueError, 'distance'),
])
def test_bad_config_fails_when_the_runner_is_built(tmp_path, data, options,
                                                   error, match):
    """Before any training step: building the Runner builds the model."""
    with pytest.raises(error, match=match):
        build_runner(toy_config(str(tmp_path), data, 2, **options))
    assert not (tmp_path / 'last_checkpoint').exists()
