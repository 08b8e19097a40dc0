"""Crash-safe checkpoints (temporary file, then rename) with RNG states.

:class:`SafeCheckpointHook` only puts four parts together, each with a home
of its own:

=================================  ==========================================
RNG states of every rank           :mod:`mmdtm.engine.rng`
atomic write, deferred removal     :mod:`mmdtm.checkpoint.atomic`,
                                   :mod:`.staged_save` (MMEngine's save and
                                   bookkeeping, staged)
rollback of a failed save          :mod:`.save_rollback`
which checkpoint to resume from    :func:`mmdtm.checkpoint.choose_resume`
=================================  ==========================================
"""
import logging
import os
import os.path as osp
from typing import Optional

from mmengine.dist import (broadcast_object_list, get_world_size,
                           is_main_process)
from mmengine.fileio import LocalBackend
from mmengine.logging import print_log

from mmdtm.checkpoint import (NoValidCheckpointError, checkpoint_dir,
                              choose_resume)
from mmdtm.checkpoint.atomic import (TMP_SUFFIX, atomic_write_text,
                                     stale_tmp_files)
from mmdtm.checkpoint.resume import ITER_TMPL
from mmdtm.registry import HOOKS
from mmdtm.upstream import (CheckpointHookSeam, runner_load_from,
                            runner_resumes, set_runner_load_from)
from ..loops import resumes_mid_epoch
from ..rng import gather_rng_states, own_rng_state, set_rng_state
from .save_rollback import CheckpointSaveError, SaveRollback
from .staged_save import StagedSave

SAVE_ERROR_ACTIONS = ('raise', 'skip')

# ``atomic_write_text`` is called through this module's name, so that a
# test can make the write of ``last_checkpoint`` fail here
__all__ = ['SafeCheckpointHook', 'CheckpointSaveError', 'atomic_write_text',
           'TMP_SUFFIX', 'SAVE_ERROR_ACTIONS']


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHookSeam):
    """``CheckpointHook`` for exact resume and crash safety.

    **RNG states.** When a checkpoint is saved, every rank's python, numpy,
    torch CPU and CUDA RNG states are gathered (``all_gather_object``) and
    stored under ``checkpoint['rng_states']`` (a list indexed by rank). On
    ``resume`` each rank restores its own state in ``before_train_epoch``,
    just before the first batch is fetched, so augmentation and masking in
    the main process (``num_workers=0``) and random layers in the model draw
    what the uninterrupted run drew. (Worker processes' RNGs cannot be
    saved; with ``num_workers > 0`` start the pipeline with
    ``SeedPerSample``.) MMEngine itself saves the model, optimizer, parameter
    schedulers, message hub and seed; the DTM schedule's RNG is a model
    buffer (``head.loss_module.schedule_state``).

    **Atomic writes.** MMEngine writes ``iter_N.pth`` in place, deletes the
    oldest checkpoint *before* writing the new one and truncates
    ``last_checkpoint`` before writing it, so a kill at the wrong moment
    leaves a truncated file that ``resume=True`` takes as the latest (or,
    with ``max_keep_ckpts=1``, no good checkpoint at all). This hook runs
    MMEngine's save (its bookkeeping of the checkpoints to keep, files or
    directories) staged (:class:`~.staged_save.StagedSave`), on a local
    file system:

    1. writes ``iter_N.pth.tmp`` (flushed to disk with ``fsync``),
    2. renames it to ``iter_N.pth`` (``os.replace``, atomic),
    3. only then points ``last_checkpoint`` at it (written the same way),
    4. only then deletes checkpoints beyond ``max_keep_ckpts``.

    Left-over ``*.pth.tmp`` files of a killed save are removed when training
    starts. Other storage backends fall back to MMEngine's behaviour.

    **A failed save** (full disk, quota, I/O error: any ``OSError`` while
    writing) removes the partial ``.tmp`` file and leaves the previous
    checkpoint and ``last_checkpoint`` as they were
    (:class:`~.save_rollback.SaveRollback`). With ``on_save_error='raise'``
    (default) the run stops with a :class:`CheckpointSaveError` naming the
    directory, its free space and the space a checkpoint needs; with
    ``'skip'`` it warns the same way and trains on (the next save tries
    again). All ranks act alike.

    **Resume checks the checkpoint.** With ``resume=True`` and no
    ``load_from`` (``--resume auto``, an elastic restart), the files
    :func:`~mmdtm.checkpoint.resume_candidates` lists (the one
    ``last_checkpoint`` names, then the older ones) are checked before
    anything is loaded (:func:`~mmdtm.checkpoint.choose_resume`); the
    newest sound one is resumed from and each rejected file is reported. If
    checkpoints exist but none is sound, :class:`NoValidCheckpointError` is
    raised instead of a silent start from scratch. An explicit ``--resume
    PATH`` that is broken fails naming the file and the problem.

    Args:
        fsync: flush files to disk before renaming (default ``True``).
        on_save_error: ``'raise'`` or ``'skip'``, see above.
        Others as MMEngine's ``CheckpointHook``.
    """

    def __init__(self, *args, fsync: bool = True,
                 on_save_error: str = 'raise', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if on_save_error not in SAVE_ERROR_ACTIONS:
            raise ValueError(f'on_save_error must be one of '
                             f'{SAVE_ERROR_ACTIONS}, got {on_save_error!r}')
        self.fsync = fsync
        self.on_save_error = on_save_error
        self.rng_states = None  # every rank's, gathered at the last save
        self.resumed_rng = None  # this rank's state, to restore

    # --- RNG states ---------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.rng_states is not None:
            checkpoint['rng_states'] = self.rng_states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if runner_resumes(runner):
            self.resumed_rng = own_rng_state(checkpoint.get('rng_states'))

    def before_train_epoch(self, runner) -> None:
        if self.resumed_rng is not None:
            set_rng_state(self.resumed_rng)
            self.resumed_rng = None

    # --- resume choice ------------------------------------------------------
    def before_run(self, runner) -> None:
        """Pick the checkpoint to resume from (see the class docstring)."""
        super().before_run(runner)
        if not runner_resumes(runner):
            return
        load_from = runner_load_from(runner)
        ckpt_dir = checkpoint_dir(runner.work_dir, self.out_dir)
        if '://' in ckpt_dir or '://' in str(load_from or ''):
            return  # remote storage: MMEngine's behaviour
        answer = [None, None]  # [path, error]
        if is_main_process():
            try:
                answer[0] = choose_resume(load_from, runner.work_dir,
                                          ckpt_dir, self.filename_tmpl)
            except NoValidCheckpointError as exc:
                answer[1] = exc
        if get_world_size() > 1:
            broadcast_object_list(answer)
        path, error = answer
        if error is not None:
            raise error
        if path is not None:
            set_runner_load_from(runner, path)

    # --- atomic save and rollback -------------------------------------------
    def _is_local(self) -> bool:
        return isinstance(self.file_backend, LocalBackend)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self._is_local() and is_main_process():
            for stale in stale_tmp_files(self.out_dir, self.filename_tmpl):
                print_log(f'removing {stale}, left by an interrupted '
                          f'checkpoint save', logger='current',
                          level=logging.WARNING)
                os.remove(stale)

    def save_checkpoint_at(self, runner, step: int, meta: dict) -> None:
        """Save the checkpoint of ``step`` (see the class docstring)."""
        self.rng_states = gather_rng_states()  # a collective: every rank
        if not self._is_local():
            return self.mmengine_save_checkpoint_at(runner, step, meta)
        rollback = SaveRollback(self, runner)
        staged = StagedSave(self, runner, self.fsync)
        error = None
        try:
            staged.run(lambda staged_runner: self.mmengine_save_checkpoint_at(
                staged_runner, step, meta))
            if is_main_process():
                atomic_write_text(os.path.join(runner.work_dir,
                                               'last_checkpoint'),
                                  self.last_ckpt, self.fsync)
        except OSError as exc:
            if not is_main_process():
                raise
            error = rollback.describe(exc, self.last_ckpt, self.out_dir)
        if get_world_size() > 1:  # every rank stops or skips alike
            answer = [error]
            broadcast_object_list(answer)
            error = answer[0]
        if error is not None:
            rollback.restore_bookkeeping()
            if self.on_save_error == 'raise':
                raise CheckpointSaveError(error)
            print_log(f'{error} Skipping this checkpoint and training on '
                      f"(on_save_error='skip').", logger='current',
                      level=logging.WARNING)
            return
        if is_main_process():
            staged.remove_outdated()

    def save_now(self, runner) -> Optional[str]:
        """Save the iteration that just ended, outside the interval (on
        pre-emption: :class:`~mmdtm.engine.hooks.PreemptionHook`).

        Call it from ``after_train_iter`` on every rank (the RNG states are
        gathered). The meta is ``epoch`` = the epoch in progress, ``iter``
        = the iterations done, which ``ResumableIterBasedTrainLoop`` and
        ``ResumableEpochBasedTrainLoop`` resume exactly; MMEngine's
        ``EpochBasedTrainLoop`` would repeat the epoch's first batches, so
        it is refused. The file is ``filename_tmpl`` of the step, or
        ``iter_N.pth`` when the hook saves by epoch (kept outside
        ``max_keep_ckpts``, which counts epochs there). Nothing is written
        again if the interval save has just written this iteration.

        Returns:
            The checkpoint's path, or ``None`` if the save failed and
            ``on_save_error='skip'`` let the run go on.

        Raises:
            ValueError: the train loop cannot resume in the middle of an
                epoch.
        """
        loop = runner.train_loop
        if not resumes_mid_epoch(loop):
            raise ValueError(
                f'save_now: {type(loop).__name__} resumes at epoch starts, '
                f'so a checkpoint of an iteration would train the epoch\'s '
                f'first batches again; use train_cfg = '
                f"dict(type='ResumableEpochBasedTrainLoop', ...)")
        step = runner.iter + 1
        meta = dict(epoch=runner.epoch, iter=step)
        # a hook that saves by epoch names and counts epochs: this one
        # iteration checkpoint gets iter_N.pth, outside max_keep_ckpts
        tmpl, keep = ((ITER_TMPL, -1) if self.by_epoch else
                      (self.filename_tmpl, self.max_keep_ckpts))
        path = osp.join(self.out_dir, tmpl.format(step))
        if self.last_ckpt != path:
            saved = self.filename_tmpl, self.max_keep_ckpts
            self.filename_tmpl, self.max_keep_ckpts = tmpl, keep
            try:
                self.save_checkpoint_at(runner, step, meta)
            finally:
                self.filename_tmpl, self.max_keep_ckpts = saved
        return path if self.last_ckpt == path else None
        path = osp.join(self.out_dir, ITER_TMPL.format(step))
        if self.last_ckpt != path:
            tmpl, keep = self.filename_tmpl, self.max_keep_ckpts
            self.filename_tmpl, self.max_keep_ckpts = ITER_TMPL, -1
            try:
                self.save_checkpoint_at(runner, step, meta)
            finally:
                self.filename_tmpl, self.max_keep_ckpts = tmpl, keep
        return path if self.last_ckpt == path else None
