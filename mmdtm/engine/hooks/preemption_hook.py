"""Stop at an iteration boundary, with a checkpoint, when the job is
pre-empted (the scheduler's signal ahead of the kill)."""
import contextlib
import logging
import signal
import threading
from typing import Iterator, Optional, Sequence

import torch
from mmengine.dist import all_reduce, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmdtm.registry import HOOKS
from ..loops import resumes_mid_epoch
from .checkpoint_hook import SafeCheckpointHook

#: the exit code of a pre-empted run: EX_TEMPFAIL of sysexits.h ("a
#: temporary failure; the user is invited to retry"). tools/slurm_train.sh
#: requeues the job on it.
PREEMPTED_EXIT_CODE = 75
#: Slurm's SIGTERM at the kill and the signal ``--signal=B:USR1@120`` asks for
DEFAULT_SIGNALS = ('SIGTERM', 'SIGUSR1')


class Preempted(Exception):
    """Raised on every rank once the pre-emption checkpoint is written;
    ``tools/train.py`` then exits with :data:`PREEMPTED_EXIT_CODE`."""


def _signal_number(name: str) -> int:
    number = getattr(signal, name, None)
    if not name.startswith('SIG') or not isinstance(number, signal.Signals):
        raise ValueError(f'PreemptionHook: signals must name signals such as '
                         f"'SIGTERM' or 'SIGUSR2', got {name!r}")
    if number in (signal.SIGKILL, signal.SIGSTOP):
        raise ValueError(f'PreemptionHook: signals: {name} cannot be caught')
    return int(number)


@HOOKS.register_module()
class PreemptionHook(Hook):
    """Turn a pre-emption signal into a checkpoint and a clean exit.

    Schedulers send a signal before they kill a job: Slurm sends SIGTERM at
    the kill (then SIGKILL after ``KillWait``), or the signal requested with
    ``--signal`` ahead of it (``tools/slurm_train.sh`` asks for SIGUSR1
    120 s ahead). The handler installed here only records the signal:
    saving inside a signal handler can hang (a collective or a lock held by
    the interrupted code). After each training iteration every rank joins
    one all-reduce of its flag (the largest signal number received by any
    rank), so all ranks stop after the same iteration even when only one
    was signalled; in a single process no collective is needed. Then

    1. the checkpoint of that iteration is written through
       :meth:`SafeCheckpointHook.save_now` (atomic, with every rank's RNG
       states; nothing new is written if the interval save just wrote it),
    2. every rank raises :class:`Preempted`, which ``tools/train.py`` turns
       into exit code :data:`PREEMPTED_EXIT_CODE` (75).

    ``--resume auto`` then continues bit for bit (``docs/reliability.md``).
    The handlers are installed in ``before_run`` (before data workers are
    forked, which inherit them and so survive a signal sent to the whole
    process group) and the previous ones restored when the run ends
    normally; after :class:`Preempted` they stay until the process exits
    (call :meth:`restore_signals` to go on in the same process).

    An epoch-based run needs ``ResumableEpochBasedTrainLoop`` (the shipped
    ImageNet schedules use it) to resume from a checkpoint in the middle
    of an epoch; with MMEngine's ``EpochBasedTrainLoop`` (which resumes at
    epoch starts) the run stops without a new checkpoint and names the
    last one.

    Args:
        signals: names of the signals that mean "pre-empted". Some NCCL
            releases caught SIGUSR1 themselves (NVIDIA/nccl issue 704); use
            e.g. ``('SIGTERM', 'SIGUSR2')`` and request that signal there.
    """

    priority = 'LOWEST'  # after logging, the scheduler and the interval save

    def __init__(self, signals: Sequence[str] = DEFAULT_SIGNALS) -> None:
        if isinstance(signals, str) or not signals:
            raise ValueError(f'PreemptionHook: signals must be a non-empty '
                             f'list of signal names, got {signals!r}')
        self.signals = [_signal_number(name) for name in signals]
        self._received = 0  # the signal number, set by the handler
        self._previous = {}

    @property
    def signal_received(self) -> int:
        """The signal this process received (0: none yet)."""
        return self._received

    def _on_signal(self, signum: int, frame) -> None:
        self._received = signum  # only a flag: see the class docstring

    def before_run(self, runner) -> None:
        if threading.current_thread() is not threading.main_thread():
            print_log('PreemptionHook: not in the main thread, so no signal '
                      'handler can be installed; pre-emption is not handled',
                      logger='current', level=logging.WARNING)
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore_signals(self) -> None:
        """Put back the handlers that were installed before the run."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def after_run(self, runner) -> None:
        self.restore_signals()

    def training_failed(self) -> None:
        """The run failed (a peer died, a collective timed out): give the
        signals their old meaning back, so that a launcher stopping this
        process for a restart (torchrun sends SIGTERM, then SIGKILL after
        its timeout) ends it at once; a signal already received is
        delivered again."""
        received, self._received = self._received, 0
        self.restore_signals()
        if received:
            signal.raise_signal(received)

    def agreed_signal(self) -> int:
        """The signal some rank received (0: none), the same on all ranks:
        one collective per call when several processes run."""
        flag = torch.tensor([self._received], dtype=torch.int64)
        if get_world_size() > 1:
            all_reduce(flag, op='max')
        return int(flag.item())

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        signum = self.agreed_signal()
        if not signum:
            return
        name = signal.Signals(signum).name
        step = runner.iter + 1
        saver = next((h for h in runner.hooks
                      if isinstance(h, SafeCheckpointHook)), None)
        if saver is None:
            where = ('no SafeCheckpointHook in default_hooks.checkpoint: '
                     'no checkpoint written')
        elif not resumes_mid_epoch(runner.train_loop):
            where = (f'{type(runner.train_loop).__name__} resumes at epoch '
                     f'starts: no checkpoint written in the middle of the '
                     f'epoch (ResumableEpochBasedTrainLoop would resume '
                     f'there); the last one is {saver.last_ckpt}')
        else:
            before = saver.last_ckpt
            path = saver.save_now(runner)
            where = (f'checkpoint {path} written' if path else
                     f'the checkpoint could not be written; the last one '
                     f'is {before}')
        # the handlers stay: a second signal while the ranks leave must not
        # kill a rank before it exits with PREEMPTED_EXIT_CODE
        message = (f'pre-empted ({name}) after iteration {step}: {where}. '
                   f'Exiting with code {PREEMPTED_EXIT_CODE}; resume with '
                   f'the same command plus --resume auto (work dir '
                   f'{runner.work_dir}).')
        if get_rank() == 0:
            print_log(message, logger='current', level=logging.WARNING)
        raise Preempted(message)


@contextlib.contextmanager
def failures_end_preemption(runner) -> Iterator[None]:
    """Around ``runner.train()``: an exception other than
    :class:`Preempted` calls :meth:`PreemptionHook.training_failed`."""
    try:
        yield
    except Preempted:
        raise
    except BaseException:
        for hook in runner.hooks:
            if isinstance(hook, PreemptionHook):
                hook.training_failed()
        raise
