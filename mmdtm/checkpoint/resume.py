"""Which checkpoint ``--resume auto`` loads, and what comes after it.

:func:`resume_candidates` is the only answer to that question in mmdtm:
:class:`~mmdtm.engine.SafeCheckpointHook` resumes from the first sound file
of its list, :func:`~mmdtm.engine.launch.prepare_restart` switches a
restarted worker to resume when the list is not empty, a lost-ranks report
names its first entry, and :class:`~mmdtm.engine.StrictLoadHook` names the
file it checks from it. A run's list comes from its config through
:func:`config_resume_candidates` (work dir, checkpoint directory and file
name template of the checkpoint hook, epoch- or iteration-based).
"""
import glob
import logging
import os.path as osp
import re
from typing import List, Mapping, Optional, Tuple

from mmengine.logging import print_log

from .integrity import checkpoint_problem

#: MMEngine's ``CheckpointHook`` default file names
ITER_TMPL, EPOCH_TMPL = 'iter_{}.pth', 'epoch_{}.pth'
#: the pointer file MMEngine writes into the work dir after each save
POINTER = 'last_checkpoint'


class NoValidCheckpointError(RuntimeError):
    """Checkpoints exist, but none of them is complete and readable."""


def checkpoint_dir(work_dir: str, out_dir: Optional[str] = None) -> str:
    """Where a ``CheckpointHook`` with ``out_dir`` writes for ``work_dir``:
    ``work_dir`` itself, or ``out_dir/<last part of work_dir>`` (MMEngine's
    ``CheckpointHook.before_train``)."""
    if out_dir is None or out_dir == work_dir:
        return work_dir
    return osp.join(out_dir, osp.basename(work_dir.rstrip(osp.sep)))


def _step(path: str, pattern: str) -> Optional[int]:
    match = re.fullmatch(pattern, osp.basename(path))
    return int(match.group(1)) if match else None


def read_pointer(work_dir: str) -> Optional[str]:
    """The path ``work_dir/last_checkpoint`` names (``None``: no pointer,
    or an empty one)."""
    pointer = osp.join(work_dir, POINTER)
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        return f.read().strip() or None


def resume_candidates(work_dir: str, out_dir: Optional[str] = None,
                      filename_tmpl: str = ITER_TMPL) -> List[str]:
    """What ``--resume auto`` tries, best first.

    First the file ``work_dir/last_checkpoint`` names, then the other
    checkpoints of the run in ``out_dir`` (default ``work_dir``; pass the
    *resolved* directory, see :func:`checkpoint_dir`), newest step first.
    Only files named by ``filename_tmpl`` (``'iter_{}.pth'``,
    ``'epoch_{}.pth'``) count: a stray ``*.pth`` (downloaded weights, a
    converted backbone) is never resumed from. A file later in the list is
    what is loaded when the ones before it are broken (see
    :func:`newest_valid_checkpoint`).

    Examples:
        >>> resume_candidates('/nonexistent/run')
        []
    """
    out_dir = out_dir or work_dir
    prefix, suffix = filename_tmpl.split('{}')
    pattern = re.escape(prefix) + r'(\d+)' + re.escape(suffix)
    found = [p for p in glob.glob(osp.join(glob.escape(out_dir),
                                           filename_tmpl.format('*')))
             if _step(p, pattern) is not None]
    found.sort(key=lambda p: _step(p, pattern), reverse=True)
    last = read_pointer(work_dir)
    if last:
        found = [last] + [p for p in found
                          if osp.abspath(p) != osp.abspath(last)]
    return found


def checkpoint_layout(cfg: Mapping, work_dir: Optional[str] = None
                      ) -> Tuple[str, str, str]:
    """``(work_dir, checkpoint dir, filename_tmpl)`` of a run's config.

    Read from ``default_hooks.checkpoint`` as MMEngine's ``CheckpointHook``
    reads its arguments (``by_epoch`` defaults to ``True``, hence
    ``epoch_{}.pth``); ``work_dir`` defaults to ``cfg.work_dir``.
    """
    work_dir = work_dir or cfg.get('work_dir')
    if not work_dir:
        raise ValueError('checkpoint_layout: the config has no work_dir')
    hook = (cfg.get('default_hooks') or {}).get('checkpoint') or {}
    tmpl = hook.get('filename_tmpl') or (
        EPOCH_TMPL if hook.get('by_epoch', True) else ITER_TMPL)
    return work_dir, checkpoint_dir(work_dir, hook.get('out_dir')), tmpl


def config_resume_candidates(cfg: Mapping, work_dir: Optional[str] = None
                             ) -> List[str]:
    """:func:`resume_candidates` of the run ``cfg`` describes."""
    return resume_candidates(*checkpoint_layout(cfg, work_dir))


def newest_valid_checkpoint(candidates: List[str]
                            ) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """The first sound checkpoint of ``candidates`` and the rejected ones
    before it, as ``(path, problem)`` pairs.

    Raises:
        NoValidCheckpointError: every candidate is broken (a run never
            silently starts from scratch).
    """
    rejected = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, rejected
        rejected.append((path, problem))
    if rejected:
        listing = '; '.join(f'{p}: {why}' for p, why in rejected)
        raise NoValidCheckpointError(
            f'resume: no complete checkpoint to resume from ({listing}). '
            f'Refusing to start from scratch: restore a checkpoint, pass '
            f'--resume PATH, or move these files away to train anew.')
    return None, rejected


def check_explicit_resume(path: str) -> None:
    """Raise :class:`NoValidCheckpointError` when ``--resume PATH`` names a
    broken file."""
    problem = checkpoint_problem(path)
    if problem is not None:
        raise NoValidCheckpointError(
            f'resume: cannot resume from {path}: {problem}')


def choose_resume(load_from: Optional[str], work_dir: str,
                  out_dir: Optional[str] = None,
                  filename_tmpl: str = ITER_TMPL) -> Optional[str]:
    """The checkpoint a resuming run loads.

    ``load_from`` (``--resume PATH``) when it is sound; without it
    (``--resume auto``, an elastic restart) the first sound file of
    :func:`resume_candidates`, each skipped file logged with its problem.
    ``None``: nothing was saved yet, the run starts from scratch.

    Raises:
        NoValidCheckpointError: ``load_from`` is broken, or checkpoints
            exist but none is sound.
    """
    if load_from is not None:
        check_explicit_resume(load_from)
        return load_from
    path, rejected = newest_valid_checkpoint(
        resume_candidates(work_dir, out_dir, filename_tmpl))
    for bad, problem in rejected:
        print_log(f'resume: skipping {bad}: {problem}', logger='current',
                  level=logging.WARNING)
    if rejected:
        print_log(f'resume: {path} is the newest complete checkpoint; '
                  f'resuming from it', logger='current',
                  level=logging.WARNING)
    return path
