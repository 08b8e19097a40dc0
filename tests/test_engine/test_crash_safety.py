"""SIGKILL during a checkpoint save: resume from the last complete one."""
import os
import os.path as osp
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from mmdtm.engine import build_runner

from ..conftest import REPO, TOY_CFG, make_image_folder, toy_config

# Run tools/train.py, but make the checkpoint write of iteration 4 stop half
# way (the bytes of iter_4.pth.tmp are half on disk), tell the test, and
# hang there until the test kills the process.
DRIVER = textwrap.dedent('''
    import os, runpy, sys, time
    from mmengine.fileio.backends import local_backend
    marker = os.environ['MMDTM_TEST_MARKER']
    original = local_backend.LocalBackend.put

    def put(self, obj, filepath):
        if 'iter_4' in str(filepath):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
                f.flush()
            open(marker, 'w').close()
            time.sleep(600)
        return original(self, obj, filepath)

    local_backend.LocalBackend.put = put
    sys.argv = ['tools/train.py'] + sys.argv[1:]
    runpy.run_path(os.path.join(os.environ['MMDTM_REPO'], 'tools', 'train.py'),
                   run_name='__main__')
''')

OPTIONS = {
    'train_dataloader.batch_size': 2,
    'randomness.seed': 5,
    'randomness.deterministic': True,
    'default_hooks.checkpoint.interval': 2,
    'default_hooks.checkpoint.max_keep_ckpts': 1,  # MMEngine would delete
    'default_hooks.logger.interval': 1,             # iter_2 before saving 4
    'param_scheduler.0.end': 2,
    'param_scheduler.1.begin': 2,
    'param_scheduler.1.end': 6,
}


def cli_options(data, max_iters):
    opts = {**OPTIONS, 'train_dataloader.dataset.data_root': data,
            'train_cfg.max_iters': max_iters}
    return [f'{k}={v}' for k, v in opts.items()]


def test_sigkill_during_checkpoint_save_then_resume(tmp_path):
    data = make_image_folder(str(tmp_path / 'data'), num=6)
    work = str(tmp_path / 'killed')
    marker = str(tmp_path / 'saving')
    driver = tmp_path / 'driver.py'
    driver.write_text(DRIVER)
    env = dict(os.environ, MMDTM_TEST_MARKER=marker, MMDTM_REPO=REPO,
               PYTHONPATH=os.pathsep.join(
                   [REPO] + [p for p in sys.path if 'mmcvlite' in p]),
               # the same float reduction order as this process's runs
               OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.Popen(
        [sys.executable, str(driver), TOY_CFG, '--work-dir', work,
         '--cfg-options', *cli_options(data, 6)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 600  # a hang guard only
        while not osp.exists(marker):
            if proc.poll() is not None:
                pytest.fail('training exited before the save of iteration '
                            '4: ' + proc.stderr.read().decode()[-3000:])
            assert time.time() < deadline, 'timed out waiting for the save'
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    files = sorted(os.listdir(work))
    assert 'iter_4.pth.tmp' in files  # the partial write, under its tmp name
    assert 'iter_4.pth' not in files
    assert 'iter_2.pth' in files      # not deleted before the new one was
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work, 'iter_2.pth')

    def cfg(work_dir, **extra):
        opts = {k: v for k, v in OPTIONS.items()
                if not k.startswith('param_scheduler')}
        c = toy_config(work_dir, data, max_iters=6, **opts, **extra)
        c.param_scheduler[0].end = c.param_scheduler[1].begin = 2
        return c

    resumed = build_runner(cfg(work, resume=True))  # --resume auto
    resumed.train()
    assert not osp.exists(osp.join(work, 'iter_4.pth.tmp'))  # cleaned up
    assert osp.isfile(osp.join(work, 'iter_6.pth'))

    # and the crash cost nothing: same weights as a run never interrupted
    clean = build_runner(cfg(str(tmp_path / 'clean')))
    clean.train()
    for key, value in clean.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
