"""Checkpoints under faults: SIGKILL during a save, a full disk, a
truncated or corrupt latest checkpoint."""
import errno
import glob
import os
import os.path as osp
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest
import torch
from mmengine.fileio import LocalBackend

from mmdtm.checkpoint import (NoValidCheckpointError, checkpoint_problem,
                              newest_valid_checkpoint, resume_candidates)
from mmdtm.engine import CheckpointSaveError, SafeCheckpointHook, build_runner

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


def small_cfg(work_dir, data, max_iters, **extra):
    """The toy config, batch 2, a checkpoint every 2 iterations."""
    opts = {k: v for k, v in OPTIONS.items()
            if not k.startswith('param_scheduler')}
    opts['default_hooks.checkpoint.max_keep_ckpts'] = 2
    opts.update(extra)
    return toy_config(work_dir, data, max_iters=max_iters, **opts)


def run_log(work_dir):
    """The text of every run log in ``work_dir``."""
    return ''.join(open(p).read() for p in glob.glob(
        osp.join(work_dir, '*', '*.log')))


def fail_half_way(monkeypatch, name):
    """Make the write of checkpoint ``name`` stop half way with ENOSPC."""
    original = LocalBackend.put

    def put(self, obj, filepath):
        if name in str(filepath):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                          str(filepath))
        return original(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', put)


def test_full_disk_during_save_stops_and_keeps_the_last_checkpoint(
        tmp_path, monkeypatch, checkpoint_loading):
    data = make_image_folder(str(tmp_path / 'data'), num=4)
    work = str(tmp_path / 'work')
    fail_half_way(monkeypatch, 'iter_4')
    runner = build_runner(small_cfg(
        work, data, 4, **{'default_hooks.checkpoint.max_keep_ckpts': 1}))
    with pytest.raises(CheckpointSaveError) as info:
        runner.train()
    message = str(info.value)
    iter_2 = osp.join(work, 'iter_2.pth')
    assert f'in directory {work}:' in message        # the directory
    assert 'No space left on device' in message
    assert re.search(r'[\d.]+ [KMGT]?i?B free there', message)
    size = osp.getsize(iter_2) / 2**20
    assert f'needs about {size:.1f} MiB (the size of iter_2.pth)' in message
    assert f'the previous checkpoint {iter_2} and last_checkpoint are ' \
        f'intact' in message
    assert sorted(f for f in os.listdir(work) if 'checkpoint' in f or
                  '.pth' in f) == ['iter_2.pth', 'last_checkpoint']
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == iter_2
    assert checkpoint_problem(iter_2) is None
    assert torch.load(iter_2, map_location='cpu')['meta']['iter'] == 2


def test_full_disk_skip_mode_warns_and_trains_on(
        tmp_path, monkeypatch, checkpoint_loading):
    data = make_image_folder(str(tmp_path / 'data'), num=4)
    work = str(tmp_path / 'work')
    fail_half_way(monkeypatch, 'iter_4')
    runner = build_runner(small_cfg(
        work, data, 6, **{'default_hooks.checkpoint.on_save_error': 'skip'}))
    runner.train()
    assert runner.iter == 6
    assert 'Skipping this checkpoint and training on' in run_log(work)
    assert sorted(f for f in os.listdir(work) if f.endswith(('.pth', '.tmp'))
                  ) == ['iter_2.pth', 'iter_6.pth']
    ckpt = torch.load(osp.join(work, 'iter_6.pth'), map_location='cpu')
    assert ckpt['message_hub']['runtime_info']['keep_ckpt_ids'] == [2, 6]
    with pytest.raises(ValueError, match='on_save_error'):
        SafeCheckpointHook(on_save_error='ignore')


def flip_a_byte_in_the_largest_tensor(src, dst):
    """Copy ``src`` to ``dst`` with one byte of the largest stored tensor
    inverted (the zip structure stays valid)."""
    shutil.copyfile(src, dst)
    with zipfile.ZipFile(dst) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    with open(dst, 'r+b') as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack('<HH', f.read(4))
        pos = info.header_offset + 30 + name_len + extra_len + \
            info.file_size // 2
        f.seek(pos)
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0xFF]))
    return info.filename


def test_resume_skips_a_truncated_or_corrupt_latest_checkpoint(
        tmp_path, checkpoint_loading):
    data = make_image_folder(str(tmp_path / 'data'), num=4)
    work = str(tmp_path / 'work')
    build_runner(small_cfg(work, data, 4)).train()
    iter_2, iter_4 = (osp.join(work, f'iter_{i}.pth') for i in (2, 4))
    reference = torch.load(iter_4, map_location='cpu')['state_dict']

    # the checks themselves: a truncated copy, a copy with a flipped byte
    flipped = str(tmp_path / 'flipped.pth')
    member = flip_a_byte_in_the_largest_tensor(iter_4, flipped)
    assert checkpoint_problem(flipped) == \
        f'corrupt: CRC mismatch in member {member!r}'
    truncated = str(tmp_path / 'truncated.pth')
    with open(iter_4, 'rb') as f, open(truncated, 'wb') as g:
        g.write(f.read()[:osp.getsize(iter_4) // 2])
    assert checkpoint_problem(truncated).startswith('truncated')
    assert checkpoint_problem(iter_4) is None
    assert checkpoint_problem(str(tmp_path / 'none.pth')) == 'no such file'

    # newest first: last_checkpoint's file, then the others by step
    assert resume_candidates(work) == [iter_4, iter_2]
    shutil.copyfile(flipped, iter_4)
    path, rejected = newest_valid_checkpoint(resume_candidates(work))
    assert path == iter_2 and rejected == [
        (iter_4, f'corrupt: CRC mismatch in member {member!r}')]

    # --resume auto with a truncated latest checkpoint: reported, and the
    # run goes on from iter_2 to the very weights of the original iter_4
    shutil.copyfile(truncated, iter_4)
    resumed = build_runner(small_cfg(work, data, 4, resume=True))
    resumed.train()
    log = run_log(work)
    assert f'resume: skipping {iter_4}: truncated' in log
    assert f'resume: {iter_2} is the newest complete checkpoint' in log
    for key, value in reference.items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key

    # every checkpoint broken: an error, never a silent start from scratch
    shutil.copyfile(truncated, iter_4)
    shutil.copyfile(flipped, iter_2)
    runner = build_runner(small_cfg(work, data, 4, resume=True))
    with pytest.raises(NoValidCheckpointError,
                       match='no complete checkpoint to resume from'):
        runner.train()
    runner = build_runner(small_cfg(work, data, 4, resume=True,
                                       load_from=iter_2))  # --resume PATH
    with pytest.raises(NoValidCheckpointError,
                       match=f'cannot resume from {iter_2}: corrupt'):
        runner.train()


def test_failed_last_checkpoint_write_undoes_the_save(tmp_path, monkeypatch):
    """The checkpoint file is renamed into place, then writing
    last_checkpoint fails: the new file is removed again, so that the work
    dir is as before the save (skip mode: training goes on)."""
    from mmdtm.engine.hooks import checkpoint_hook
    data = make_image_folder(str(tmp_path / 'data'), num=4)
    work = str(tmp_path / 'work')
    original = checkpoint_hook.atomic_write_text

    def write(path, text, fsync=True):
        if text.endswith('iter_4.pth'):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), path)
        return original(path, text, fsync)

    monkeypatch.setattr(checkpoint_hook, 'atomic_write_text', write)
    runner = build_runner(small_cfg(
        work, data, 4, **{'default_hooks.checkpoint.on_save_error': 'skip'}))
    runner.train()
    assert 'Disk quota exceeded' in run_log(work)
    assert sorted(f for f in os.listdir(work) if 'pth' in f) == ['iter_2.pth']
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work, 'iter_2.pth')
