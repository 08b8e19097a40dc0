"""MMEngine checkpoints load, resume and stay safe under torch >= 2.6."""
import io
import os.path as osp
import pickle

import numpy as np
import pytest
import torch

from mmdtm.engine import build_runner

from tests.conftest import make_image_folder, toy_config


def test_runner_checkpoint_loads_and_resumes(tmp_path):
    data = make_image_folder(str(tmp_path / 'data'), num=4)
    work = str(tmp_path / 'work')
    opts = {'train_dataloader.batch_size': 2,
            'default_hooks.checkpoint.interval': 2}
    build_runner(toy_config(work, data, max_iters=2, **opts)).train()
    ckpt_path = osp.join(work, 'iter_2.pth')
    # plain torch.load with the torch >= 2.6 default (weights_only=True)
    ckpt = torch.load(ckpt_path, map_location='cpu')
    assert ckpt['meta']['iter'] == 2
    hub = ckpt['message_hub']['log_scalars']
    assert np.isfinite(hub['train/loss'].mean())

    cfg = toy_config(work, data, max_iters=4, **opts)
    cfg.resume, cfg.load_from = True, ckpt_path
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 4
    assert osp.exists(osp.join(work, 'iter_4.pth'))


class _Evil:
    """Pickles as getattr(np.ndarray, 'tofile'): an attribute MMEngine never
    writes, and a door to arbitrary file writes if getattr were allowed."""

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


def test_only_history_buffer_attributes_are_reachable(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'x': _Evil()}, path, pickle_protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    # unrelated globals stay refused, too
    buf = io.BytesIO()
    torch.save({'x': osp.join}, buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(buf)
