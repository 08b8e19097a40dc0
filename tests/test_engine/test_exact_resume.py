"""Exact resume: 2n iterations == n iterations + resume for n more."""
import glob
import json
import os
import os.path as osp
import signal
import time

import pytest
import torch
from mmengine.hooks import Hook

from mmdtm.engine import build_runner

from ..conftest import make_image_folder, toy_config


def logged_losses(work_dir):
    """{iteration: loss} from every run's scalars.json in ``work_dir``."""
    out = {}
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                          'scalars.json'))):
        with open(path) as f:
            for line in f:
                entry = json.loads(line)
                if 'loss' in entry:
                    out[entry['step']] = entry['loss']
    return out


def resume_cfg(work_dir, data, max_iters, **extra):
    """The toy config with every source of randomness switched on."""
    return toy_config(
        work_dir, data, max_iters=max_iters,
        **{'train_dataloader.batch_size': 2,
           'model.backbone.drop_path_rate': 0.1,  # torch RNG in the model
           'randomness': dict(seed=3, deterministic=True),
           'default_hooks.checkpoint.interval': 2,
           'default_hooks.checkpoint.max_keep_ckpts': 2,
           # one schedule for the whole run, so that both runs share it
           'param_scheduler': [
               dict(type='LinearLR', start_factor=0.2, by_epoch=False,
                    begin=0, end=3),
               dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False,
                    begin=3, end=8)],
           **extra})


def without_sample_seeding():
    """The toy pipeline minus SeedPerSample: augmentation then draws from
    the main process's global RNG, which only the checkpoint restores."""
    from mmengine.config import Config

    from ..conftest import TOY_CFG
    pipeline = Config.fromfile(TOY_CFG).train_dataloader.dataset.pipeline
    return [t for t in pipeline if t['type'] != 'SeedPerSample']


def run_2n_and_n_plus_n(tmp_path, data, total, **extra):
    """Train ``total`` iterations in one go and in two halves; return the
    runners (uninterrupted, resumed) and the interrupted run's work dir."""
    full = build_runner(resume_cfg(str(tmp_path / 'full'), data, total,
                                      **extra))
    full.train()
    part = build_runner(resume_cfg(str(tmp_path / 'part'), data,
                                      total // 2, **extra))
    part.train()
    assert osp.isfile(osp.join(part.work_dir, f'iter_{total // 2}.pth'))
    resumed = build_runner(resume_cfg(str(tmp_path / 'part'), data, total,
                                         resume=True, **extra))
    resumed.train()
    return full, resumed


@pytest.mark.parametrize('case', ['rng_states_workers0',
                                  'sample_seeds_workers2'])
def test_n_plus_n_equals_2n_bit_for_bit(tmp_path, case, checkpoint_loading):
    """Main-process augmentation restored from the checkpoint's RNG states
    (no SeedPerSample, num_workers=0), and augmentation in 2 worker
    processes seeded per sample (SeedPerSample); drop path in the model
    draws from the restored torch RNG in both."""
    # 5 images, batch 2: 3 batches per epoch (the last one short), so the
    # resume point (iteration 4) lies in the middle of the second epoch.
    data = make_image_folder(str(tmp_path / 'data'), num=5)
    extra = ({'train_dataloader.dataset.pipeline': without_sample_seeding()}
             if case == 'rng_states_workers0' else
             {'train_dataloader.num_workers': 2})
    full, resumed = run_2n_and_n_plus_n(tmp_path, data, 8, **extra)

    full_state = full.model.state_dict()
    resumed_state = resumed.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key, value in full_state.items():
        assert torch.equal(value, resumed_state[key]), key
    assert int(resumed_state['head.loss_module.schedule_state'][1]) == 8

    full_losses = logged_losses(full.work_dir)
    part_losses = logged_losses(resumed.work_dir)
    assert sorted(full_losses) == list(range(1, 9))
    assert part_losses == full_losses  # bit-identical floats, all 8 steps

    # optimizer and scheduler states end identical too
    a = torch.load(osp.join(full.work_dir, 'iter_8.pth'), map_location='cpu')
    b = torch.load(osp.join(resumed.work_dir, 'iter_8.pth'),
                   map_location='cpu')
    for sa, sb in zip(a['optimizer']['state'].values(),
                      b['optimizer']['state'].values()):
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key
    assert a['param_schedulers'] == b['param_schedulers']
    assert len(a['rng_states']) == 1  # one process


def test_resume_without_rng_restore_differs(tmp_path):
    """The test above can fail: without the saved RNG states (plain
    MMEngine CheckpointHook) and without SeedPerSample, the resumed run
    draws other crops and masks."""
    data = make_image_folder(str(tmp_path / 'data'), num=5)
    full, resumed = run_2n_and_n_plus_n(
        tmp_path, data, 4,
        **{'default_hooks.checkpoint.type': 'CheckpointHook',
           'train_dataloader.dataset.pipeline': without_sample_seeding()})
    full_losses = logged_losses(full.work_dir)
    part_losses = logged_losses(resumed.work_dir)
    assert [full_losses[i] for i in (1, 2)] == [
        part_losses[i] for i in (1, 2)]
    assert full_losses[3] != part_losses[3]


def test_epoch_based_resume_is_exact(tmp_path):
    """The ImageNet configs' mode: EpochBasedTrainLoop, a checkpoint per
    epoch, data workers; 1 epoch + resume for 1 more == 2 epochs (drop path
    draws from the main process's torch RNG, restored from the checkpoint;
    augmentation from SeedPerSample in the workers)."""
    data = make_image_folder(str(tmp_path / 'data'), num=5)

    def cfg(work_dir, epochs, **extra):
        return resume_cfg(
            work_dir, data, 6,
            **{'train_cfg': dict(_delete_=True, type='EpochBasedTrainLoop',
                                 max_epochs=epochs),
               'default_hooks.checkpoint': dict(
                   type='SafeCheckpointHook', interval=1, by_epoch=True),
               'param_scheduler': [dict(type='LinearLR', start_factor=0.2,
                                        by_epoch=False, begin=0, end=6)],
               'train_dataloader.num_workers': 2,
               **extra})

    full = build_runner(cfg(str(tmp_path / 'full'), 2))
    full.train()
    build_runner(cfg(str(tmp_path / 'part'), 1)).train()
    resumed = build_runner(cfg(str(tmp_path / 'part'), 2, resume=True))
    resumed.train()
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert logged_losses(full.work_dir) == logged_losses(resumed.work_dir)


class KillDataWorker(Hook):
    """SIGKILL one data-loader worker process before iteration ``at``, and
    wait there for PyTorch's SIGCHLD handler to raise."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter != self.at:
            return
        iterator = runner.train_loop.dataloader_iterator._iterator
        os.kill(iterator._workers[0].pid, signal.SIGKILL)
        deadline = time.monotonic() + 600  # a hang guard, not a timing
        while time.monotonic() < deadline:
            time.sleep(0.01)  # the handler raises in here
        raise AssertionError('no error 600 s after a data worker was killed')


def test_killed_data_worker_stops_the_run_then_resume_is_exact(tmp_path):
    """A data-loader worker (num_workers=2) killed in the middle of an
    epoch: PyTorch's error stops the run, and ``--resume`` from the last
    checkpoint ends exactly like a run never interrupted."""
    # 8 images, batch 2: 4 batches per epoch; the worker dies after the
    # checkpoint of iteration 2, in the middle of the first epoch
    data = make_image_folder(str(tmp_path / 'data'), num=8)
    extra = {'train_dataloader.num_workers': 2}
    full = build_runner(resume_cfg(str(tmp_path / 'full'), data, 4,
                                      **extra))
    full.train()

    work = str(tmp_path / 'killed')
    killed = build_runner(resume_cfg(work, data, 4, **extra))
    killed.register_hook(KillDataWorker(at=2))
    with pytest.raises(RuntimeError, match=r'DataLoader worker \(pid'):
        killed.train()
    assert osp.isfile(osp.join(work, 'iter_2.pth'))
    assert not osp.isfile(osp.join(work, 'iter_4.pth'))
    del killed

    resumed = build_runner(resume_cfg(work, data, 4, resume=True,
                                         **extra))
    resumed.train()
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert logged_losses(full.work_dir) == logged_losses(work)
