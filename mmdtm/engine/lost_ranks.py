"""Name the ranks that stopped answering when a collective fails.

A collective that loses a peer either fails at once (the peer's process
died and its sockets closed) or, when the peer hangs or its node is lost,
after the process group's timeout (``env_cfg.dist_cfg.timeout``). Either
way the error names no rank. :func:`report_lost_ranks` then has every
surviving rank check in at the rendezvous store and raises
:class:`LostRanksError` naming the ranks that did not, and how to resume.
"""
import contextlib
import os
import socket
import threading
import time
from datetime import timedelta
from typing import Iterator, List, Optional

import torch.distributed as dist
from mmengine.logging import print_log

from mmdtm.checkpoint import config_resume_candidates
from .launch import collective_timeout

#: a probe waits at most this long for the other ranks (seconds)
MAX_PROBE_SECONDS = 120.0


class LostRanksError(RuntimeError):
    """A collective failed because other ranks stopped answering."""


def _is_communication_error(exc: BaseException) -> bool:
    dist_error = getattr(dist, 'DistError', ())
    text = str(exc).lower()
    return isinstance(exc, dist_error) or (
        isinstance(exc, RuntimeError) and ('gloo' in text or 'nccl' in text))


def _connect_store(timeout: float):
    """A client of the rendezvous store (``MASTER_ADDR:MASTER_PORT``), or
    ``None`` when the launch did not go through one."""
    host, port = os.environ.get('MASTER_ADDR'), os.environ.get('MASTER_PORT')
    if not host or not port:
        return None
    return dist.TCPStore(host, int(port), is_master=False,
                         timeout=timedelta(seconds=timeout),
                         wait_for_workers=False)


def _this_node() -> str:
    """``node N (host)``: N from NODE_RANK (tools/dist_launch.sh), Slurm's
    SLURM_NODEID or torchrun's GROUP_RANK."""
    node = next((os.environ[k] for k in ('NODE_RANK', 'SLURM_NODEID',
                                          'GROUP_RANK') if k in os.environ),
                None)
    host = socket.gethostname()
    return f'node {node} ({host})' if node is not None else host


def _nodes_of(places: List[str], ranks: List[int]) -> str:
    """``rank R on node N (host)``, ... for ``ranks``."""
    return ', '.join(f'rank {r} on {places[r]}' for r in ranks)


def probe_ranks(store, timeout: float, poll: float = 0.2) -> List[int]:
    """Ranks that do not check in within ``timeout`` seconds.

    Every surviving rank calls this after a failed collective: it counts
    itself in under its own key of the rendezvous ``store`` and waits for
    the other ranks' counts. A rank whose key is missing at the deadline stopped
    answering. If the store itself is gone, rank 0 (which hosts it when
    no launcher agent does) is reported.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')
    keys = [f'mmdtm/probe/{attempt}/{r}' for r in range(world)]
    result: List[int] = [0]  # stays so if the store does not answer

    def check_in() -> None:
        deadline = time.monotonic() + timeout
        try:
            # counters, not set/check: Store.add exists in every supported
            # torch (TCPStore.check does not in 2.1); adding 0 reads one
            store.add(keys[rank], 1)
            while True:
                missing = [r for r in range(world)
                           if store.add(keys[r], 0) == 0]
                if not missing or time.monotonic() >= deadline:
                    result[:] = missing
                    return
                time.sleep(poll)
        except (RuntimeError, OSError):  # the store's host is gone
            return

    # a hung store host blocks store calls: give up on it after the timeout
    thread = threading.Thread(target=check_in, daemon=True)
    thread.start()
    thread.join(timeout + 10 * poll + 5)
    return list(result)


def _last_checkpoint(runner) -> Optional[str]:
    """What ``--resume auto`` would load first for ``runner``'s run."""
    candidates = config_resume_candidates(runner.cfg, runner.work_dir)
    return candidates[0] if candidates else None


def _tell_the_launcher(message: str) -> None:
    """Append ``message`` to the file ``MMDTM_LAUNCH_REPORT`` names, which
    ``tools/dist_launch.sh`` prints as its last line if the run fails
    (torchrun's own last lines are about its restarts then)."""
    path = os.environ.get('MMDTM_LAUNCH_REPORT')
    if not path:
        return
    try:
        with open(path, 'a') as f:
            f.write(message.replace('\n', ' ') + '\n')
    except OSError:
        pass


@contextlib.contextmanager
def report_lost_ranks(runner) -> Iterator[None]:
    """Around ``runner.train()``: turn a failed collective into a
    :class:`LostRanksError` naming the ranks that stopped answering.

    A no-op in a single process. Other errors pass through unchanged (a
    rank that fails by itself raises its own error; its peers then report
    it as lost). The probe waits ``min(timeout, MAX_PROBE_SECONDS)``, with
    ``timeout`` the config's ``env_cfg.dist_cfg.timeout``: a survivor that
    is still blocked in its own collective after that is reported too.
    """
    if not (dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1):
        yield
        return
    timeout = collective_timeout(runner.cfg)
    probe_timeout = min(timeout, MAX_PROBE_SECONDS)
    try:
        store = _connect_store(probe_timeout)
    except (RuntimeError, OSError, ValueError) as exc:
        print_log(f'no rendezvous store to probe lost ranks with ({exc}); '
                  f'a failed collective will not name them',
                  logger='current', level=30)
        store = None
    # every rank knows where the others run, so that a lost one's node
    # can be named even when the lost node hosted the store
    places: List[str] = [''] * dist.get_world_size()
    dist.all_gather_object(places, _this_node())
    try:
        yield
    except Exception as exc:
        if store is None or not _is_communication_error(exc):
            raise
        rank = dist.get_rank()
        first_line = str(exc).strip().splitlines()[0] if str(exc) else ''
        print_log(f'rank {rank}: a collective failed ({first_line}); '
                  f'probing the other ranks for up to {probe_timeout:.0f} s',
                  logger='current', level=40)
        lost = [r for r in probe_ranks(store, probe_timeout) if r != rank]
        if not lost:
            raise
        last = _last_checkpoint(runner)
        where = (f'the last complete checkpoint is {last}' if last else
                 'no checkpoint was written yet')
        message = (
            f'rank {rank}: rank(s) {lost} stopped answering '
            f'({_nodes_of(places, lost)}; no answer within '
            f'{probe_timeout:.0f} s: the process died, ran out of memory, '
            f'hung or lost its node; see its log). '
            f'Collective error: {first_line}. Resume with the same command '
            f'plus --resume auto (work dir {runner.work_dir}; {where}).')
        print_log(message, logger='current', level=40)
        _tell_the_launcher(message)
        raise LostRanksError(message) from exc
