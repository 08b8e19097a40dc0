"""Pre-emption of an epoch-based run (the ImageNet schedules' mode): the
checkpoint of the iteration where the signal arrived, in the middle of an
epoch, resumes bit for bit with ResumableEpochBasedTrainLoop."""
import os
import os.path as osp
import shutil
import signal

import pytest
import torch
from mmengine.hooks import Hook

from mmdtm.engine import Preempted, PreemptionHook, build_runner

from ..conftest import make_image_folder
from .test_exact_resume import (logged_losses, resume_cfg,
                                without_sample_seeding)


class SignalAt(Hook):
    """Send SIGTERM to this process before iteration ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


class RecordBatchIdx(Hook):
    """Record ``(iteration, batch_idx)`` as the hooks see them."""

    def __init__(self) -> None:
        self.seen = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.seen.append((runner.iter, batch_idx))


def epoch_cfg(work_dir, data, loop, **extra):
    """2 epochs of 3 batches (5 images, batch 2, the last batch short),
    augmentation and drop path from the main process's RNG (restored from
    the checkpoint), an iteration-based and an epoch-based scheduler, a
    checkpoint per epoch."""
    return resume_cfg(
        work_dir, data, 6,
        **{'train_cfg': dict(_delete_=True, type=loop, max_epochs=2),
           'default_hooks.checkpoint': dict(
               type='SafeCheckpointHook', interval=1, by_epoch=True),
           'param_scheduler': [
               dict(type='LinearLR', start_factor=0.2, by_epoch=False,
                    begin=0, end=6),
               dict(type='MultiStepLR', milestones=[1], gamma=0.5,
                    by_epoch=True)],
           'train_dataloader.dataset.pipeline': without_sample_seeding(),
           **extra})


def train(cfg, *hooks):
    runner = build_runner(cfg)
    for hook in hooks:
        runner.register_hook(hook)
    runner.train()
    return runner


def preempt(cfg, at):
    """Train until SIGTERM before iteration ``at`` stops the run."""
    runner = build_runner(cfg)
    runner.register_hook(SignalAt(at))
    try:
        with pytest.raises(Preempted):
            runner.train()
    finally:
        for hook in runner.hooks:
            if isinstance(hook, PreemptionHook):
                hook.restore_signals()
    return runner


def same_end(full, resumed):
    """Weights, optimizer and scheduler state (the final epoch_2.pth) and
    logged losses of two runs are bit-identical."""
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    full_losses = logged_losses(full.work_dir)
    assert sorted(full_losses) == list(range(1, 7))
    assert logged_losses(resumed.work_dir) == full_losses  # all 6 floats
    a = torch.load(osp.join(full.work_dir, 'epoch_2.pth'), map_location='cpu')
    b = torch.load(osp.join(resumed.work_dir, 'epoch_2.pth'),
                   map_location='cpu')
    assert a['optimizer']['param_groups'] == b['optimizer']['param_groups']
    for sa, sb in zip(a['optimizer']['state'].values(),
                      b['optimizer']['state'].values()):
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key
    assert a['param_schedulers'] == b['param_schedulers']
    assert (b['meta']['epoch'], b['meta']['iter']) == (2, 6)


def test_preempted_epoch_based_run_resumes_bit_for_bit(tmp_path,
                                                       checkpoint_loading):
    """SIGTERM before iteration 4 (index 3: epoch 1, batch 0): iter_4.pth
    (meta epoch 1, iter 4) is written; ``resume=True`` continues epoch 1 at
    batch 1 (the hooks' ``batch_idx`` too) and ends with the weights,
    optimizer and scheduler state and logged losses of the uninterrupted
    run. The control resumes a copy of the same checkpoint with MMEngine's
    EpochBasedTrainLoop, which trains epoch 1's first batch again and ends
    elsewhere: the test fails without the new loop. Then SIGTERM before
    the epoch's last iteration (iter_3.pth, meta epoch 0, iter 3): the
    resumed run has no batch left in epoch 0 but runs its end
    (epoch-based scheduler step, epoch_1.pth) and ends as the
    uninterrupted run."""
    data = make_image_folder(str(tmp_path / 'data'), num=5)
    loop = 'ResumableEpochBasedTrainLoop'
    full_idx = RecordBatchIdx()
    full = train(epoch_cfg(str(tmp_path / 'full'), data, loop), full_idx)
    assert full_idx.seen == [(0, 0), (1, 1), (2, 2), (3, 0), (4, 1), (5, 2)]

    work = str(tmp_path / 'mid')
    preempt(epoch_cfg(work, data, loop), at=3)
    assert sorted(f for f in os.listdir(work)
                  if f.endswith('.pth')) == ['epoch_1.pth', 'iter_4.pth']
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work, 'iter_4.pth')
    meta = torch.load(osp.join(work, 'iter_4.pth'), map_location='cpu')['meta']
    assert (meta['epoch'], meta['iter']) == (1, 4)
    control = str(tmp_path / 'control')
    shutil.copytree(work, control)
    with open(osp.join(control, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(control, 'iter_4.pth'))

    resumed_idx = RecordBatchIdx()
    resumed = train(epoch_cfg(work, data, loop, resume=True), resumed_idx)
    assert resumed_idx.seen == full_idx.seen[4:]
    same_end(full, resumed)

    plain_idx = RecordBatchIdx()
    plain = train(epoch_cfg(control, data, 'EpochBasedTrainLoop',
                            resume=True), plain_idx)
    assert plain_idx.seen[0] == (4, 0)  # batch 0 of epoch 1 again
    with pytest.raises(AssertionError):
        same_end(full, plain)

    work = str(tmp_path / 'end')
    preempt(epoch_cfg(work, data, loop), at=2)
    assert sorted(f for f in os.listdir(work)
                  if f.endswith('.pth')) == ['iter_3.pth']
    resumed = train(epoch_cfg(work, data, loop, resume=True))
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
    same_end(full, resumed)


def test_plain_epoch_loop_preempts_without_checkpoint(tmp_path):
    """MMEngine's EpochBasedTrainLoop cannot resume mid-epoch: pre-emption
    stops the run with no new checkpoint and says which loop to use;
    ``save_now`` refuses, naming the loop."""
    data = make_image_folder(str(tmp_path / 'data'), num=5)
    work = str(tmp_path / 'plain')
    runner = preempt(epoch_cfg(work, data, 'EpochBasedTrainLoop'), at=4)
    assert sorted(f for f in os.listdir(work)
                  if f.endswith('.pth')) == ['epoch_1.pth']
    log = ''.join(open(osp.join(root, f)).read()
                  for root, _, names in os.walk(work) for f in names
                  if f.endswith('.log'))
    assert ('pre-empted (SIGTERM) after iteration 5: EpochBasedTrainLoop '
            'resumes at epoch starts: no checkpoint written in the middle '
            'of the epoch (ResumableEpochBasedTrainLoop would resume '
            f'there); the last one is {osp.join(work, "epoch_1.pth")}'
            in log)
    saver = runner.hooks[[type(h).__name__ for h in runner.hooks].index(
        'SafeCheckpointHook')]
    with pytest.raises(ValueError, match="EpochBasedTrainLoop resumes at "
                       "epoch starts.*type='ResumableEpochBasedTrainLoop'"):
        saver.save_now(runner)


def test_a_sampler_that_cannot_skip_resumes_at_the_same_batch(tmp_path):
    """With MMEngine's DefaultSampler (no ``skip``) the resumed epoch loads
    and discards its first batches, with a warning, and goes on at the
    right batch (exact only where loading draws no RNG: see
    docs/reliability.md)."""
    data = make_image_folder(str(tmp_path / 'data'), num=5)
    work = str(tmp_path / 'work')
    sampler = {'train_dataloader.sampler': dict(
        _delete_=True, type='DefaultSampler', shuffle=True)}
    loop = 'ResumableEpochBasedTrainLoop'
    preempt(epoch_cfg(work, data, loop, **sampler), at=3)
    seen = RecordBatchIdx()
    train(epoch_cfg(work, data, loop, resume=True, **sampler), seen)
    assert seen.seen == [(4, 1), (5, 2)]
    log = ''.join(open(osp.join(root, f)).read()
                  for root, _, names in os.walk(work) for f in names
                  if f.endswith('.log'))
    assert ('DefaultSampler cannot skip: loading and discarding 1 batches '
            'to resume at iteration 4' in log)
