"""Crash-safe checkpoints (temporary file, then rename) with RNG states."""
import glob
import logging
import os
import os.path as osp
import shutil
from typing import Optional

from mmengine.dist import (all_gather_object, broadcast_object_list, get_rank,
                           get_world_size, is_main_process)
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log

from mmdtm.checkpoint import (NoValidCheckpointError, checkpoint_problem,
                              newest_valid_checkpoint, resume_candidates)
from mmdtm.registry import HOOKS
from ..rng import get_rng_state, set_rng_state

TMP_SUFFIX = '.tmp'
SAVE_ERROR_ACTIONS = ('raise', 'skip')


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (full disk, quota, I/O error)."""


def _size(num_bytes: int) -> str:
    """``num_bytes`` for people: ``'512 B'``, ``'3.2 MiB'``."""
    if num_bytes < 1024:
        return f'{num_bytes} B'
    value, unit = float(num_bytes), 'B'
    for unit in ('KiB', 'MiB', 'GiB', 'TiB'):
        value /= 1024
        if value < 1024:
            break
    return f'{value:.1f} {unit}'


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str, fsync: bool = True) -> None:
    """Replace ``path`` by ``text`` so that readers see old or new, never
    a truncated file."""
    tmp = path + TMP_SUFFIX
    with open(tmp, 'w') as f:
        f.write(text)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
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
    with ``max_keep_ckpts=1``, no good checkpoint at all). This hook, on a
    local file system:

    1. writes ``iter_N.pth.tmp`` (flushed to disk with ``fsync``),
    2. renames it to ``iter_N.pth`` (``os.replace``, atomic),
    3. only then points ``last_checkpoint`` at it (written the same way),
    4. only then deletes checkpoints beyond ``max_keep_ckpts``.

    Left-over ``*.pth.tmp`` files of a killed save are removed when training
    starts. Other storage backends fall back to MMEngine's behaviour.

    **A failed save** (full disk, quota, I/O error: any ``OSError`` while
    writing) removes the partial ``.tmp`` file and leaves the previous
    checkpoint and ``last_checkpoint`` as they were. With
    ``on_save_error='raise'`` (default) the run stops with a
    :class:`CheckpointSaveError` naming the directory, its free space and
    the space a checkpoint needs; with ``'skip'`` it warns the same way and
    trains on (the next save tries again). All ranks act alike.

    **Resume checks the checkpoint.** With ``resume=True`` and no
    ``load_from`` (``--resume auto``, an elastic restart), the checkpoint
    ``last_checkpoint`` names and, if it is truncated or corrupt (see
    :func:`~mmdtm.checkpoint.integrity.checkpoint_problem`), the next
    older ones are checked before anything is loaded; the newest sound one
    is resumed from and each rejected file is reported. If checkpoints
    exist but none is sound, :class:`NoValidCheckpointError` is raised
    instead of a silent start from scratch. An explicit ``--resume PATH``
    that is broken fails naming the file and the problem.

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
        self._rng_states = None  # gathered at the last save
        self._resumed_rng = None  # this rank's state, to restore

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._rng_states is not None:
            checkpoint['rng_states'] = self._rng_states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        states = checkpoint.get('rng_states')
        if not runner._resume or states is None:
            return
        if len(states) != get_world_size():
            print_log(f'the checkpoint holds RNG states of {len(states)} '
                      f'processes but {get_world_size()} run now: RNG states '
                      f'not restored, the resumed run is not bit-identical',
                      logger='current', level=logging.WARNING)
            return
        self._resumed_rng = states[get_rank()]

    def before_train_epoch(self, runner) -> None:
        if self._resumed_rng is not None:
            set_rng_state(self._resumed_rng)
            self._resumed_rng = None

    def _is_local(self) -> bool:
        return isinstance(self.file_backend, LocalBackend)

    def _checkpoint_dir(self, runner) -> str:
        """``out_dir`` as ``before_train`` will resolve it."""
        if self.out_dir is None or self.out_dir == runner.work_dir:
            return runner.work_dir
        return osp.join(self.out_dir,
                        osp.basename(runner.work_dir.rstrip(osp.sep)))

    def before_run(self, runner) -> None:
        """Pick the checkpoint to resume from (see the class docstring)."""
        super().before_run(runner)
        if not runner._resume:
            return
        ckpt_dir = self._checkpoint_dir(runner)
        if '://' in ckpt_dir or '://' in str(runner._load_from or ''):
            return  # remote storage: MMEngine's behaviour
        answer = [None, None]  # [path, error]
        if is_main_process():
            answer = self._choose_resume(runner, ckpt_dir)
        if get_world_size() > 1:
            broadcast_object_list(answer)
        path, error = answer
        if error is not None:
            raise error
        if path is not None:
            runner._load_from = path

    def _choose_resume(self, runner, ckpt_dir: str) -> list:
        """``[path, None]`` to resume from, or ``[None, exception]``."""
        if runner._load_from is not None:  # --resume PATH
            problem = checkpoint_problem(runner._load_from)
            if problem is None:
                return [None, None]
            return [None, NoValidCheckpointError(
                f'resume: cannot resume from {runner._load_from}: '
                f'{problem}')]
        candidates = resume_candidates(runner.work_dir, ckpt_dir,
                                       self.filename_tmpl)
        try:
            path, rejected = newest_valid_checkpoint(candidates)
        except NoValidCheckpointError as exc:
            return [None, exc]
        for bad, problem in rejected:
            print_log(f'resume: skipping {bad}: {problem}', logger='current',
                      level=logging.WARNING)
        if rejected:
            print_log(f'resume: {path} is the newest complete checkpoint; '
                      f'resuming from it', logger='current',
                      level=logging.WARNING)
        return [path, None]

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self._is_local() and is_main_process():
            pattern = self.filename_tmpl.format('*') + TMP_SUFFIX
            for stale in glob.glob(osp.join(self.out_dir, pattern)):
                print_log(f'removing {stale}, left by an interrupted '
                          f'checkpoint save', logger='current', level=30)
                os.remove(stale)

    def _save_checkpoint_with_step(self, runner, step, meta):
        state = get_rng_state()  # every rank takes part in the gather
        self._rng_states = (all_gather_object(state)
                            if get_world_size() > 1 else [state])
        if not self._is_local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        kept_before, last_before = list(self.keep_ckpt_ids), self.last_ckpt
        outdated = None
        if self.max_keep_ckpts > 0 and not (
                self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        error = None
        try:
            self._write(runner, filename, meta)
        except OSError as exc:
            if not is_main_process():
                raise
            error = self._describe_failure(exc, last_before,
                                           runner.work_dir)
        if get_world_size() > 1:  # every rank stops or skips alike
            answer = [error]
            broadcast_object_list(answer)
            error = answer[0]
        if error is not None:
            self.keep_ckpt_ids.clear()
            self.keep_ckpt_ids.extend(kept_before)
            self.last_ckpt = last_before
            runner.message_hub.update_info('keep_ckpt_ids', kept_before)
            runner.message_hub.update_info('last_ckpt', last_before)
            if self.on_save_error == 'raise':
                raise CheckpointSaveError(error)
            print_log(f'{error} Skipping this checkpoint and training on '
                      f"(on_save_error='skip').", logger='current',
                      level=logging.WARNING)
            return
        if is_main_process() and outdated is not None:
            path = osp.join(self.out_dir, self.filename_tmpl.format(outdated))
            if osp.isfile(path):
                os.remove(path)

    def save_now(self, runner) -> Optional[str]:
        """Save the iteration that just ended, outside the interval (on
        pre-emption: :class:`~mmdtm.engine.hooks.PreemptionHook`).

        Call it from ``after_train_iter`` on every rank (the RNG states are
        gathered) of an iteration-based run. Nothing is written again if
        the interval save has just written this iteration.

        Returns:
            The checkpoint's path, or ``None`` if the save failed and
            ``on_save_error='skip'`` let the run go on.
        """
        if self.by_epoch:
            raise ValueError('save_now: an epoch-based run resumes at epoch '
                             'starts; a checkpoint of an iteration would '
                             'skip the rest of the epoch')
        step = runner.iter + 1
        path = osp.join(self.out_dir, self.filename_tmpl.format(step))
        if self.last_ckpt != path:
            self._save_checkpoint_with_step(
                runner, step, dict(epoch=runner.epoch, iter=step))
        return path if self.last_ckpt == path else None

    def _write(self, runner, filename: str, meta: dict) -> None:
        """Write ``filename`` through a ``.tmp`` file and a rename, then
        point ``last_checkpoint`` at it (only the main process writes)."""
        runner.save_checkpoint(
            self.out_dir,
            filename + TMP_SUFFIX,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        tmp = self.last_ckpt + TMP_SUFFIX
        if self.fsync:
            _fsync_path(tmp)
        os.replace(tmp, self.last_ckpt)
        if self.fsync:
            _fsync_path(self.out_dir)
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'),
                          self.last_ckpt, self.fsync)

    def _describe_failure(self, exc: OSError, previous: Optional[str],
                          work_dir: str) -> str:
        """Remove the partial files of a failed save; say what happened."""
        partial = self.last_ckpt + TMP_SUFFIX
        written = osp.getsize(partial) if osp.isfile(partial) else 0
        leftovers = [partial,
                     osp.join(work_dir, 'last_checkpoint' + TMP_SUFFIX)]
        if self.last_ckpt != previous:  # renamed, but last_checkpoint failed
            leftovers.append(self.last_ckpt)
        for path in leftovers:
            if osp.isfile(path):
                os.remove(path)
        try:
            free = _size(shutil.disk_usage(self.out_dir).free)
        except OSError:
            free = 'unknown space'
        if previous is not None and osp.isfile(previous):
            need = (f'a checkpoint needs about {_size(osp.getsize(previous))}'
                    f' (the size of {osp.basename(previous)})')
            kept = (f'the previous checkpoint {previous} and '
                    f'last_checkpoint are intact')
        else:
            need = (f'a checkpoint needs more than {_size(written)} (written '
                    f'before the failure)')
            kept = 'no earlier checkpoint exists'
        return (f'cannot write checkpoint {self.last_ckpt} in directory '
                f'{self.out_dir}: {type(exc).__name__}: {exc}. '
                f'{free} free there, {need}; the partial file was '
                f'removed and {kept}. Free space there or set out_dir.')
