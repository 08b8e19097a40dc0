"""Crash-safe checkpoints (temporary file, then rename) with RNG states."""
import glob
import logging
import os
import os.path as osp

from mmengine.dist import (all_gather_object, get_rank, get_world_size,
                           is_main_process)
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS

from ..rng import get_rng_state, set_rng_state

TMP_SUFFIX = '.tmp'


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

    Args:
        fsync: flush files to disk before renaming (default ``True``).
        Others as MMEngine's ``CheckpointHook``.
    """

    def __init__(self, *args, fsync: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fsync = fsync
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

        runner.save_checkpoint(  # only the main process writes
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
        if outdated is not None:
            path = osp.join(self.out_dir, self.filename_tmpl.format(outdated))
            if osp.isfile(path):
                os.remove(path)
