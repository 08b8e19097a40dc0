"""MMEngine's checkpoint save, staged so that a kill leaves no truncated
file behind.

MMEngine's ``CheckpointHook`` keeps the books (which checkpoints to keep,
``keep_ckpt_ids`` and ``last_ckpt`` in the message hub, checkpoint files or
directories to remove), but it deletes the oldest checkpoint *before*
writing the new one, writes ``iter_N.pth`` in place and truncates
``last_checkpoint`` before rewriting it. :class:`StagedSave` runs MMEngine's
save unchanged with three things redirected:

* the write goes to ``iter_N.pth.tmp``, which is renamed into place
  (:func:`~mmdtm.checkpoint.atomic.replace_durably`) once complete;
* MMEngine's own ``last_checkpoint`` goes to a scratch directory (the
  caller writes the real one atomically, after the rename);
* removals of outdated checkpoints (files, or directories as DeepSpeed
  writes them) are recorded and done by :meth:`StagedSave.remove_outdated`
  only after the new checkpoint is in place.
"""
import os.path as osp
import tempfile
from typing import Any, Callable, List, Tuple

from mmengine.dist import is_main_process

from mmdtm.checkpoint.atomic import TMP_SUFFIX, replace_durably


class _DeferredRemovals:
    """A file backend whose ``remove`` / ``rmtree`` are recorded, not
    done; everything else is the wrapped backend's."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.removals: List[Tuple[str, str]] = []  # (method, path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def remove(self, path: str) -> None:
        self.removals.append(('remove', path))

    def rmtree(self, path: str) -> None:
        self.removals.append(('rmtree', path))


class _StagedRunner:
    """The runner as MMEngine's save sees it: ``save_checkpoint`` writes
    a ``.tmp`` file and renames it, ``work_dir`` is a scratch directory
    (for MMEngine's non-atomic ``last_checkpoint``)."""

    def __init__(self, runner, scratch: str, fsync: bool) -> None:
        self._runner, self._fsync = runner, fsync
        self.work_dir = scratch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def save_checkpoint(self, out_dir: str, filename: str, *args,
                        **kwargs) -> None:
        self._runner.save_checkpoint(out_dir, filename + TMP_SUFFIX, *args,
                                     **kwargs)
        if is_main_process():  # only the main process writes the file
            path = osp.join(out_dir, filename)
            replace_durably(path + TMP_SUFFIX, path, self._fsync)


class StagedSave:
    """Run ``save(staged_runner)`` (MMEngine's per-step save) for ``hook``
    with the write staged and removals deferred (see the module
    docstring).

    Args:
        hook: the ``CheckpointHook`` (its ``file_backend`` is swapped for
            the duration of :meth:`run`).
        runner: the real runner.
        fsync: flush the file and the directory entry to disk.
    """

    def __init__(self, hook, runner, fsync: bool = True) -> None:
        self.hook, self.runner, self.fsync = hook, runner, fsync
        self.removals: List[Tuple[str, str]] = []

    def run(self, save: Callable[[Any], None]) -> None:
        """Call ``save`` with the staged runner; raises what it raises."""
        backend = self.hook.file_backend
        deferred = _DeferredRemovals(backend)
        self.hook.file_backend = deferred
        try:
            with tempfile.TemporaryDirectory(prefix='mmdtm-save-') as scratch:
                save(_StagedRunner(self.runner, scratch, self.fsync))
        finally:
            self.hook.file_backend = backend
            self.removals = deferred.removals

    def remove_outdated(self) -> None:
        """Do the removals MMEngine asked for (main process only)."""
        backend = self.hook.file_backend
        for method, path in self.removals:
            if backend.exists(path):
                getattr(backend, method)(path)
        self.removals = []
