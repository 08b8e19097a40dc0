"""MMEngine checkpoints load, resume and stay safe under torch >= 2.6:
resuming needs nothing process-wide (IsolatedRunner scopes the allow-list
to its own load), a plain ``torch.load`` needs the explicit
``mmdtm.setup_checkpoint_loading()``, and ``import mmdtm`` alone changes
neither torch's allow-list nor MMEngine's checkpoint loaders."""
import argparse
import io
import os
import os.path as osp
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from mmdtm import setup_checkpoint_loading
from mmdtm.engine import build_runner

from tests.conftest import REPO, make_image_folder, toy_config


def test_runner_checkpoint_loads_and_resumes(tmp_path):
    data = make_image_folder(str(tmp_path / 'data'), num=4)
    work = str(tmp_path / 'work')
    opts = {'train_dataloader.batch_size': 2,
            'default_hooks.checkpoint.interval': 2}
    build_runner(toy_config(work, data, max_iters=2, **opts)).train()
    ckpt_path = osp.join(work, 'iter_2.pth')
    # resume without any process-wide allow-list
    cfg = toy_config(work, data, max_iters=4, **opts)
    cfg.resume, cfg.load_from = True, ckpt_path
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 4
    assert osp.exists(osp.join(work, 'iter_4.pth'))

    # plain torch.load with the torch >= 2.6 default (weights_only=True),
    # after the explicit set-up that mmdtm's tools make
    assert setup_checkpoint_loading()
    ckpt = torch.load(ckpt_path, map_location='cpu')
    assert ckpt['meta']['iter'] == 2
    hub = ckpt['message_hub']['log_scalars']
    assert np.isfinite(hub['train/loss'].mean())


class _Evil:
    """Pickles as getattr(np.ndarray, 'tofile'): an attribute MMEngine never
    writes, and a door to arbitrary file writes if getattr were allowed."""

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


def test_only_history_buffer_attributes_are_reachable(tmp_path,
                                                      checkpoint_loading):
    path = tmp_path / 'evil.pth'
    torch.save({'x': _Evil()}, path, pickle_protocol=2)
    # weights_only=True: the default since torch 2.6, explicit for older ones
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    # unrelated globals stay refused, too
    buf = io.BytesIO()
    torch.save({'x': osp.join}, buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(buf, weights_only=True)


def test_import_changes_nothing_until_the_explicit_call(tmp_path):
    """In a fresh process: ``import mmdtm`` leaves torch's allow-list and
    MMEngine's http(s) loader alone and only adds ``'mmdtm'`` to
    ``MODULE2PACKAGE``; ``setup_checkpoint_loading()`` then makes exactly
    the two documented changes."""
    script = textwrap.dedent('''\
        import torch
        from mmengine.config.utils import MODULE2PACKAGE
        from mmengine.runner import CheckpointLoader
        ser = torch.serialization
        api = hasattr(ser, 'get_safe_globals')
        table = dict(MODULE2PACKAGE)

        def foreign(entry):  # not torch's own (torch adds some lazily)
            obj = entry[0] if isinstance(entry, tuple) else entry
            return not getattr(obj, '__module__', '').startswith('torch')

        def state():
            try:
                CheckpointLoader.load_checkpoint('http://127.0.0.1:9/x.pth')
            except Exception as exc:  # refused: port 9
                error = type(exc).__name__
            safe = ([e for e in ser.get_safe_globals() if foreign(e)]
                    if api else None)
            return safe, error

        before = state()
        import mmdtm
        assert state() == before, (state(), before)
        added = {k: v for k, v in MODULE2PACKAGE.items() if k not in table}
        assert added == {'mmdtm': 'mmdtm'}, added
        changes = mmdtm.setup_checkpoint_loading()
        safe, error = state()
        print('before', before[1], 'after', error, len(changes))
        if api:
            from mmengine.logging.history_buffer import HistoryBuffer
            assert HistoryBuffer in safe and HistoryBuffer not in before[0]
        ''')
    env = dict(os.environ, PYTHONPATH=REPO, TORCH_HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, '-c', script], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    changes = 1 + hasattr(torch.serialization, 'add_safe_globals')
    want = f'before URLError after CheckpointDownloadError {changes}'
    assert want in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_restricted_unpickler_without_the_allow_list_api(tmp_path,
                                                         monkeypatch):
    """A torch without ``safe_globals`` (< 2.5; simulated here by hiding
    the API from the probe): ``load_checkpoint_file`` reads tensors,
    MMEngine's classes and ``argparse.Namespace`` through mmdtm's
    restricted unpickler, logs one line, and refuses everything else."""
    import mmengine.logging
    from mmengine.logging.history_buffer import HistoryBuffer

    from mmdtm.checkpoint import (CheckpointMismatchError, compat,
                                  load_checkpoint_file)
    monkeypatch.setattr(compat, 'has_allow_list_api', lambda: False)
    monkeypatch.setattr('mmdtm.degrade._TOLD', set())
    lines = []
    monkeypatch.setattr(mmengine.logging, 'print_log',
                        lambda msg, **kw: lines.append(msg))
    hub = HistoryBuffer()
    hub.update(2.0)
    good = str(tmp_path / 'good.pth')
    torch.save({'state_dict': {'w': torch.ones(2)}, 'hub': hub,
                'args': argparse.Namespace(lr=0.5), 'arr': np.arange(3)},
               good)
    for _ in range(2):
        ckpt = load_checkpoint_file(good)
        assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))
        assert ckpt['hub'].mean() == 2.0 and ckpt['args'].lr == 0.5
        assert ckpt['arr'].tolist() == [0, 1, 2]
    assert len([m for m in lines if 'restricted unpickler' in m]) == 1
    for name, obj in (('evil', _Evil()), ('join', osp.join)):
        path = str(tmp_path / f'{name}.pth')
        torch.save({'x': obj}, path, pickle_protocol=2)
        with pytest.raises(CheckpointMismatchError, match='trusted'):
            load_checkpoint_file(path)


def test_scoped_allow_list_keeps_the_process_wide_one(checkpoint_loading):
    """torch's ``safe_globals`` context removes its entries on exit: the
    scoped allow-list (IsolatedRunner.load_or_resume, load_checkpoint_file)
    must not take away what ``setup_checkpoint_loading`` registered."""
    from mmengine.logging.history_buffer import HistoryBuffer

    from mmdtm.checkpoint import checkpoint_safe_globals
    from mmdtm.checkpoint.compat import has_allow_list_api
    if not has_allow_list_api():
        pytest.skip(f'torch {torch.__version__} has no safe_globals')
    with checkpoint_safe_globals([argparse.Namespace]) as allowed:
        assert allowed
        assert argparse.Namespace in torch.serialization.get_safe_globals()
    safe = torch.serialization.get_safe_globals()
    assert HistoryBuffer in safe and argparse.Namespace not in safe
