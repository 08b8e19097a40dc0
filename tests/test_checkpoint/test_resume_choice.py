"""One answer to "what would ``--resume auto`` load, and what after it?":
every place that asks (the checkpoint hook, a torchrun restart, the
lost-ranks report, StrictLoadHook's message) gets the same list.

Each case below is a work dir on which two of those places disagreed before
they all asked :func:`mmdtm.checkpoint.resume_candidates`."""
import copy
import os
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config

from mmdtm.checkpoint import (NoValidCheckpointError, checkpoint_layout,
                              choose_resume, config_resume_candidates,
                              resume_candidates)
from mmdtm.engine.hooks import SafeCheckpointHook, StrictLoadHook
from mmdtm.engine.launch import prepare_restart
from mmdtm.engine.lost_ranks import _last_checkpoint


def save(path: str, step: int = 0) -> str:
    torch.save({'state_dict': {}, 'meta': {'step': step}}, path)
    return path


def config(work: str, **hook) -> Config:
    return Config(dict(work_dir=work, default_hooks=dict(
        checkpoint=dict(type='SafeCheckpointHook', **hook))))


def answers(cfg: Config, monkeypatch) -> dict:
    """What each place says ``--resume auto`` loads first."""
    work = cfg.work_dir
    runner = SimpleNamespace(cfg=cfg, work_dir=work, _load_from=None,
                             _resume=True)
    hook = SafeCheckpointHook(**{k: v for k, v in
                                 cfg.default_hooks.checkpoint.items()
                                 if k != 'type'})
    _, ckpt_dir, _ = checkpoint_layout(cfg)
    monkeypatch.setenv('TORCHELASTIC_RESTART_COUNT', '1')
    restart = prepare_restart(copy.deepcopy(cfg), 'none')
    source = StrictLoadHook._source(runner)
    return dict(
        hook=choose_resume(None, work, ckpt_dir, hook.filename_tmpl),
        restart_resumes=restart,
        lost_ranks=_last_checkpoint(runner),
        strict_load=None if source == 'the checkpoint' else
        source[len('checkpoint '):])


def test_a_stray_pth_is_not_resumed_from(tmp_path, monkeypatch):
    """Before: a torchrun restart switched to resume because of any *.pth
    in the work dir (here converted weights), the hook found nothing."""
    work = str(tmp_path)
    save(osp.join(work, 'backbone_converted.pth'))
    save(osp.join(work, 'iter_final.pth'))  # no step: not a checkpoint
    cfg = config(work, interval=2, by_epoch=False)
    assert config_resume_candidates(cfg) == []
    assert answers(cfg, monkeypatch) == dict(
        hook=None, restart_resumes=False, lost_ranks=None, strict_load=None)


def test_epoch_based_run_without_pointer(tmp_path, monkeypatch):
    """Before: the lost-ranks report read only last_checkpoint and said
    that no checkpoint was written, StrictLoadHook named none."""
    work = str(tmp_path)
    epoch_1, epoch_3 = (save(osp.join(work, f'epoch_{n}.pth'), n)
                        for n in (1, 3))
    save(osp.join(work, 'iter_40.pth'))  # not this run's kind
    cfg = config(work, interval=1)  # by_epoch=True: MMEngine's default
    assert checkpoint_layout(cfg) == (work, work, 'epoch_{}.pth')
    assert config_resume_candidates(cfg) == [epoch_3, epoch_1]
    assert answers(cfg, monkeypatch) == dict(
        hook=epoch_3, restart_resumes=True, lost_ranks=epoch_3,
        strict_load=epoch_3)


def test_checkpoints_in_out_dir(tmp_path, monkeypatch):
    """``out_dir``: checkpoints live in out_dir/<work dir name>. Before:
    a restart without last_checkpoint looked only in the work dir."""
    work, out = str(tmp_path / 'runs' / 'exp'), str(tmp_path / 'store')
    ckpt_dir = osp.join(out, 'exp')
    for d in (work, ckpt_dir):
        os.makedirs(d)
    iter_2, iter_4 = (save(osp.join(ckpt_dir, f'iter_{n}.pth'), n)
                      for n in (2, 4))
    cfg = config(work, interval=2, by_epoch=False, out_dir=out)
    assert config_resume_candidates(cfg) == [iter_4, iter_2]
    assert answers(cfg, monkeypatch) == dict(
        hook=iter_4, restart_resumes=True, lost_ranks=iter_4,
        strict_load=iter_4)


def test_pointer_first_then_newest_and_a_broken_pointer(tmp_path):
    """last_checkpoint's file comes first even when an older step; a
    broken one is skipped for the next, an explicit broken one fails."""
    work = str(tmp_path)
    iter_2, iter_4 = (save(osp.join(work, f'iter_{n}.pth'), n)
                      for n in (2, 4))
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(iter_2)
    assert resume_candidates(work) == [iter_2, iter_4]
    with open(iter_2, 'r+b') as f:
        f.truncate(100)
    assert choose_resume(None, work) == iter_4
    with pytest.raises(NoValidCheckpointError, match='cannot resume from'):
        choose_resume(iter_2, work)
    assert choose_resume(iter_4, work) == iter_4  # --resume PATH
    open(osp.join(work, 'last_checkpoint'), 'w').close()  # empty pointer
    assert resume_candidates(work) == [iter_4, iter_2]


def test_nothing_saved_yet(tmp_path):
    assert choose_resume(None, str(tmp_path)) is None
    with pytest.raises(ValueError, match='no work_dir'):
        checkpoint_layout(Config(dict(default_hooks=dict())))
