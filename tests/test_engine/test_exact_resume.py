"""Exact resume: 2n iterations == n iterations + resume for n more."""
import glob
import json
import os.path as osp

import torch
from mmengine.runner import Runner

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


def test_n_plus_n_equals_2n_bit_for_bit(tmp_path):
    # 5 images, batch 2: 3 batches per epoch (the last one short), so the
    # resume point (iteration 4) lies in the middle of the second epoch.
    data = make_image_folder(str(tmp_path / 'data'), num=5)
    full = Runner.from_cfg(resume_cfg(str(tmp_path / 'full'), data, 8))
    full.train()

    part = Runner.from_cfg(resume_cfg(str(tmp_path / 'part'), data, 4))
    part.train()
    assert osp.isfile(osp.join(part.work_dir, 'iter_4.pth'))
    resumed = Runner.from_cfg(resume_cfg(str(tmp_path / 'part'), data, 8,
                                         resume=True))
    resumed.train()

    full_state = full.model.state_dict()
    resumed_state = resumed.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key, value in full_state.items():
        assert torch.equal(value, resumed_state[key]), key
    assert int(resumed_state['head.loss_module.schedule_state'][1]) == 8

    full_losses = logged_losses(full.work_dir)
    part_losses = logged_losses(part.work_dir)
    assert sorted(full_losses) == list(range(1, 9))
    assert part_losses == full_losses  # bit-identical floats, all 8 steps

    # optimizer and scheduler states end identical too
    a = torch.load(osp.join(full.work_dir, 'iter_8.pth'), map_location='cpu')
    b = torch.load(osp.join(part.work_dir, 'iter_8.pth'), map_location='cpu')
    for sa, sb in zip(a['optimizer']['state'].values(),
                      b['optimizer']['state'].values()):
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key
    assert a['param_schedulers'] == b['param_schedulers']
    assert len(a['rng_states']) == 1  # one process


def test_resume_without_rng_restore_differs(tmp_path):
    """The test above can fail: without the saved RNG states (plain
    MMEngine CheckpointHook) the resumed run draws other crops and masks."""
    data = make_image_folder(str(tmp_path / 'data'), num=5)
    plain = {'default_hooks.checkpoint.type': 'CheckpointHook'}
    full = Runner.from_cfg(resume_cfg(str(tmp_path / 'full'), data, 6,
                                      **plain))
    full.train()
    Runner.from_cfg(resume_cfg(str(tmp_path / 'part'), data, 4,
                               **plain)).train()
    resumed = Runner.from_cfg(resume_cfg(str(tmp_path / 'part'), data, 6,
                                         resume=True, **plain))
    resumed.train()
    full_losses = logged_losses(full.work_dir)
    part_losses = logged_losses(resumed.work_dir)
    assert [full_losses[i] for i in (1, 2, 3, 4)] == [
        part_losses[i] for i in (1, 2, 3, 4)]
    assert full_losses[5] != part_losses[5]
