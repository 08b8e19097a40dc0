"""The toy DTM config trains with MMEngine's Runner on a tiny image folder."""
import json
import os.path as osp

import torch

from mmdtm.engine import build_runner

from ..conftest import make_image_folder, toy_config


# No random crops or colour jitter: every pass sees the same images.
FIXED_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64)),
    dict(type='BlockMaskGenerator', input_size=(4, 4), num_masking_patches=6,
         max_num_patches=6, min_num_patches=2),
    dict(type='PackInputs'),
]


def _losses(work_dir):
    logs = []
    for path in sorted(__import__('glob').glob(
            osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            logs += [json.loads(line) for line in f]
    return [entry['loss'] for entry in logs if 'loss' in entry]


def test_toy_training_runs_and_loss_decreases(tmp_path, checkpoint_loading):
    data = make_image_folder(str(tmp_path / 'data'), num=4)
    cfg = toy_config(
        str(tmp_path / 'work'), data, max_iters=60,
        **{'train_dataloader.batch_size': 4,
           # overfit: fixed crops, no colour jitter, constant lr
           'train_dataloader.dataset.pipeline': FIXED_PIPELINE,
           'optim_wrapper.optimizer.lr': 3e-3,
           'param_scheduler': [],
           'default_hooks.checkpoint.interval': 30})
    runner = build_runner(cfg)
    runner.train()
    losses = _losses(cfg.work_dir)
    assert len(losses) == 60
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    ckpt = torch.load(osp.join(cfg.work_dir, 'iter_60.pth'),
                      map_location='cpu')  # weights_only=True (torch>=2.6)
    keys = ckpt['state_dict'].keys()
    assert any(k.startswith('backbone.') for k in keys)
    assert not any(k.startswith('target_generator') for k in keys)
    assert 'head.loss_module.schedule_state' in keys
    assert int(ckpt['state_dict']['head.loss_module.schedule_state'][1]) == 60


def test_gradient_accumulation_matches_a_full_batch(tmp_path):
    """accumulative_counts=2 over half batches gives the same update as one
    full batch (the reference's accumulation is broken; ours is MMEngine's).
    Morphing is switched off (r = 0) so that both see the same targets."""
    data = make_image_folder(str(tmp_path / 'data'), num=4)
    common = {
        'train_dataloader.dataset.pipeline': FIXED_PIPELINE,
        'train_dataloader.sampler.shuffle': False,
        'model.head.loss.max_merge': [0, 0],
        'optim_wrapper.optimizer': dict(_delete_=True, type='SGD', lr=0.1),
        'optim_wrapper.clip_grad': None,
        'param_scheduler': [],
        'randomness': dict(seed=7, deterministic=True),
        'default_hooks.checkpoint.interval': 1000,
    }
    full = build_runner(toy_config(
        str(tmp_path / 'full'), data, max_iters=1,
        **{**common, 'train_dataloader.batch_size': 4}))
    full.train()
    acc = build_runner(toy_config(
        str(tmp_path / 'acc'), data, max_iters=2,
        **{**common, 'train_dataloader.batch_size': 2,
           'optim_wrapper.accumulative_counts': 2}))
    acc.train()
    # the masks come from the data pipeline with the same seed and order
    for (name, p_full), (_, p_acc) in zip(
            full.model.named_parameters(), acc.model.named_parameters()):
        torch.testing.assert_close(p_full, p_acc, rtol=1e-4, atol=1e-6,
                                   msg=name)
