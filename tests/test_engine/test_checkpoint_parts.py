"""The parts SafeCheckpointHook is made of, one job each: MMEngine's
bookkeeping reused through a staged save (checkpoint *directories*
included, ``max_keep_ckpts=-1``), the rollback, the RNG states.

(Whole runs under faults: test_crash_safety.py, test_exact_resume.py.)"""
import logging
import os
import os.path as osp

import torch
from mmengine.logging import MessageHub

from mmdtm.engine.hooks import SafeCheckpointHook, checkpoint_hook
from mmdtm.engine.rng import gather_rng_states, get_rng_state, own_rng_state


class FakeRunner:
    """What the checkpoint hook uses of a runner. ``save_checkpoint``
    writes a directory for the steps in ``as_directory`` (as DeepSpeed
    does), a small file otherwise."""

    def __init__(self, work_dir: str, as_directory=()) -> None:
        self.work_dir = work_dir
        self.logger = logging.getLogger('test_checkpoint_parts')
        self.message_hub = MessageHub.get_instance(
            f'test_checkpoint_parts_{osp.basename(work_dir)}')
        self.as_directory = set(as_directory)

    def save_checkpoint(self, out_dir, filename, *args, **kwargs) -> None:
        path = osp.join(out_dir, filename)
        if int(filename.split('_')[1].split('.')[0]) in self.as_directory:
            os.makedirs(path)
            path = osp.join(path, 'shard_0.pt')
        torch.save({'meta': kwargs.get('meta')}, path)


def saved_hook(runner: FakeRunner, **kwargs) -> SafeCheckpointHook:
    hook = SafeCheckpointHook(interval=1, by_epoch=False, **kwargs)
    hook.before_train(runner)
    return hook


def test_outdated_checkpoint_directory_removed_after_the_new_save(
        tmp_path, monkeypatch):
    """MMEngine removes a checkpoint *directory* (rmtree); the override it
    replaced removed files only. The removal still comes last."""
    work = str(tmp_path)
    runner = FakeRunner(work, as_directory={1})
    hook = saved_hook(runner, max_keep_ckpts=1)
    hook.save_checkpoint_at(runner, 1, dict(iter=1))
    assert osp.isdir(osp.join(work, 'iter_1.pth'))  # renamed from .tmp
    seen = []
    original = checkpoint_hook.atomic_write_text

    def write(path, text, fsync=True):  # when last_checkpoint moves on
        seen.append((osp.isdir(osp.join(work, 'iter_1.pth')),
                     osp.isfile(osp.join(work, 'iter_2.pth'))))
        return original(path, text, fsync)

    monkeypatch.setattr(checkpoint_hook, 'atomic_write_text', write)
    hook.save_checkpoint_at(runner, 2, dict(iter=2))
    assert seen == [(True, True)]  # old kept until the new one is in place
    assert sorted(os.listdir(work)) == ['iter_2.pth', 'last_checkpoint']
    assert list(hook.keep_ckpt_ids) == [2]
    assert runner.message_hub.get_info('keep_ckpt_ids') == [2]
    assert runner.message_hub.get_info('last_ckpt') == \
        osp.join(work, 'iter_2.pth')


def test_keep_all_checkpoints_and_roll_back(tmp_path, monkeypatch):
    """``max_keep_ckpts=-1`` (MMEngine's default: keep all, no
    ``keep_ckpt_ids``) saves, and rolls back a failed save."""
    work = str(tmp_path)
    runner = FakeRunner(work)
    hook = saved_hook(runner, on_save_error='skip')
    for step in (1, 2):
        hook.save_checkpoint_at(runner, step, dict(iter=step))
    assert sorted(os.listdir(work)) == ['iter_1.pth', 'iter_2.pth',
                                        'last_checkpoint']

    def full_disk(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(runner, 'save_checkpoint', full_disk)
    hook.save_checkpoint_at(runner, 3, dict(iter=3))  # skip mode
    assert hook.last_ckpt == osp.join(work, 'iter_2.pth')
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read() == osp.join(work, 'iter_2.pth')
    assert sorted(os.listdir(work)) == ['iter_1.pth', 'iter_2.pth',
                                        'last_checkpoint']


def test_rng_states_of_every_rank():
    states = gather_rng_states()
    assert len(states) == 1  # one process
    assert torch.equal(own_rng_state(states)['torch'],
                       get_rng_state()['torch'])
    assert own_rng_state(None) is None
    assert own_rng_state(states * 2) is None  # saved by 2 ranks, 1 runs
