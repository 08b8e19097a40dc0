"""Undo a checkpoint save that failed (full disk, quota, I/O error), so
that the work dir and the hook's bookkeeping are as before the save, and
say what happened in terms a user can act on."""
import os
import os.path as osp
import shutil
from typing import List, Optional

from mmdtm.checkpoint.atomic import TMP_SUFFIX


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (full disk, quota, I/O error)."""


def format_size(num_bytes: int) -> str:
    """``num_bytes`` for people: ``'512 B'``, ``'3.2 MiB'``.

    Examples:
        >>> format_size(512), format_size(3 * 2**20)
        ('512 B', '3.0 MiB')
    """
    if num_bytes < 1024:
        return f'{num_bytes} B'
    value, unit = float(num_bytes), 'B'
    for unit in ('KiB', 'MiB', 'GiB', 'TiB'):
        value /= 1024
        if value < 1024:
            break
    return f'{value:.1f} {unit}'


class SaveRollback:
    """The state of a ``CheckpointHook`` before one save, to restore if the
    save fails.

    Taken before MMEngine's bookkeeping runs (``keep_ckpt_ids``,
    ``last_ckpt`` and their copies in the message hub, which the next
    checkpoint stores).

    Args:
        hook: the ``CheckpointHook``.
        runner: the runner.
    """

    def __init__(self, hook, runner) -> None:
        self.hook, self.runner = hook, runner
        # MMEngine keeps no list with max_keep_ckpts <= 0 (keep them all)
        kept = getattr(hook, 'keep_ckpt_ids', None)
        self.kept = None if kept is None else list(kept)
        self.last = hook.last_ckpt

    def restore_bookkeeping(self) -> None:
        """The hook and the message hub forget the failed checkpoint."""
        if self.kept is not None:
            self.hook.keep_ckpt_ids.clear()
            self.hook.keep_ckpt_ids.extend(self.kept)
            self.runner.message_hub.update_info('keep_ckpt_ids',
                                                list(self.kept))
        self.hook.last_ckpt = self.last
        self.runner.message_hub.update_info('last_ckpt', self.last)

    def remove_partial_files(self, path: str) -> int:
        """Remove what the failed save of ``path`` left; returns the bytes
        its ``.tmp`` file held."""
        partial = path + TMP_SUFFIX
        written = osp.getsize(partial) if osp.isfile(partial) else 0
        leftovers: List[str] = [
            partial,
            osp.join(self.runner.work_dir, 'last_checkpoint' + TMP_SUFFIX)
        ]
        if path != self.last:  # renamed, but last_checkpoint failed
            leftovers.append(path)
        for leftover in leftovers:
            if osp.isfile(leftover):
                os.remove(leftover)
        return written

    def describe(self, exc: OSError, path: str, directory: str) -> str:
        """Remove the partial files of the failed save of ``path`` into
        ``directory``; the message for the user."""
        written = self.remove_partial_files(path)
        try:
            free = format_size(shutil.disk_usage(directory).free)
        except OSError:
            free = 'unknown space'
        previous: Optional[str] = self.last
        if previous is not None and osp.isfile(previous):
            need = (f'a checkpoint needs about '
                    f'{format_size(osp.getsize(previous))}'
                    f' (the size of {osp.basename(previous)})')
            kept = (f'the previous checkpoint {previous} and '
                    f'last_checkpoint are intact')
        else:
            need = (f'a checkpoint needs more than {format_size(written)} '
                    f'(written before the failure)')
            kept = 'no earlier checkpoint exists'
        return (f'cannot write checkpoint {path} in directory '
                f'{directory}: {type(exc).__name__}: {exc}. '
                f'{free} free there, {need}; the partial file was '
                f'removed and {kept}. Free space there or set out_dir.')
