"""Launch helpers shared by ``tools/train.py`` and ``tools/test.py``.

MMEngine's ``init_dist`` always calls ``torch.cuda.set_device`` and its
``MMDistributedDataParallel`` wrapper is always given ``device_ids``; both
fail on a machine without CUDA. :func:`cpu_distributed_fallback` switches a
distributed run to the ``gloo`` backend, initialises the process group itself
(from the launcher's environment variables) and wraps the model without
``device_ids``, so that ``tools/train.sh CONFIG 2`` also runs on CPU.
"""
import os
import subprocess
import time
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.dist import all_reduce
from mmengine.logging import print_log

from mmdtm.checkpoint import config_resume_candidates

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
#: seconds the processes may take to join the group (at least)
RENDEZVOUS_TIMEOUT = 600
#: seconds a collective may wait when the config sets no dist_cfg.timeout
DEFAULT_TIMEOUT = 1800.0


def collective_timeout(cfg: Config) -> float:
    """``env_cfg.dist_cfg.timeout`` of ``cfg`` (:data:`DEFAULT_TIMEOUT`
    when unset), in seconds."""
    dist_cfg = cfg.get('env_cfg', {}).get('dist_cfg', {})
    return float(dist_cfg.get('timeout', DEFAULT_TIMEOUT))


def _env_from_launcher(launcher: str, port: Optional[str] = None) -> None:
    """Fill RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* for ``env://``.

    ``pytorch`` (torchrun) sets them already; ``slurm`` and ``mpi`` are
    translated from their own variables.
    """
    if launcher == 'slurm':
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
        if 'MASTER_ADDR' not in os.environ:
            hosts = subprocess.check_output(
                ['scontrol', 'show', 'hostnames',
                 os.environ['SLURM_NODELIST']], text=True).split()
            os.environ['MASTER_ADDR'] = hosts[0]
    elif launcher == 'mpi':
        os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
        os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
        os.environ['LOCAL_RANK'] = os.environ['OMPI_COMM_WORLD_LOCAL_RANK']
        os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
    os.environ.setdefault('MASTER_PORT', port or '29500')
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR')
               if k not in os.environ]
    if missing:
        raise RuntimeError(
            f'launcher={launcher!r} but the environment lacks {missing}; '
            f'start the script with tools/train.sh (torchrun) or '
            f'tools/slurm_train.sh, or use --launcher none')


def _restart_count() -> int:
    """torchrun's attempt number (0: the first launch, or no torchrun)."""
    return int(os.environ.get('TORCHELASTIC_RESTART_COUNT', '0') or 0)


#: the launcher's store key under which rank 0 publishes its group store
GROUP_STORE_KEY = 'mmdtm/group_store'


def _fresh_group_store(store, rank: int, join_timeout: float):
    """A store of this attempt's own, for the process group.

    Rank 0 hosts a new ``TCPStore`` on a port it binds itself and
    publishes ``host:port`` in the launcher's ``store``; the other ranks
    read it and connect. An address left there by an earlier attempt
    names a store whose host is dead (torchrun stops every worker of every
    node before the next attempt meets), so a refused connection means
    "not yet published": read again until ``join_timeout``.
    """
    if rank == 0:
        own = dist.TCPStore(os.environ['MASTER_ADDR'], 0, is_master=True,
                            wait_for_workers=False,
                            timeout=timedelta(seconds=join_timeout))
        store.set(GROUP_STORE_KEY, f'{os.environ["MASTER_ADDR"]}:{own.port}')
        return own
    deadline = time.monotonic() + join_timeout
    while True:
        host, port = store.get(GROUP_STORE_KEY).decode().rsplit(':', 1)
        try:
            return dist.TCPStore(host, int(port), is_master=False,
                                 wait_for_workers=False,
                                 timeout=timedelta(seconds=5))
        except (RuntimeError, OSError):  # an earlier attempt's, dead
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def init_group(backend: str, timeout: float) -> None:
    """``init_process_group(backend, init_method='env://')``, made safe for
    torchrun restarts.

    Collectives time out after ``timeout`` seconds, while joining the group
    may take :data:`RENDEZVOUS_TIMEOUT` (processes start at different
    times). torchrun keeps one store for all attempts, and the keys a
    failed attempt left there (its workers' addresses) would be read by
    the next one, which then connects to dead processes. Keying attempts
    apart by ``TORCHELASTIC_RESTART_COUNT`` is not enough on several
    nodes: a node whose workers torchrun stops because another node's
    failed does not count a restart, so the counts differ. Under torchrun
    the group therefore gets a store of its own per attempt
    (:func:`_fresh_group_store`).
    """
    join = max(timeout, RENDEZVOUS_TIMEOUT)
    store, rank, world_size = next(dist.rendezvous(
        'env://', int(os.environ['RANK']), int(os.environ['WORLD_SIZE']),
        timeout=timedelta(seconds=join)))
    if os.environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True':
        store = _fresh_group_store(store, rank, join)
    store.set_timeout(timedelta(seconds=timeout))
    dist.init_process_group(
        backend=backend, store=dist.PrefixStore('default_pg', store),
        rank=rank, world_size=world_size,
        timeout=timedelta(seconds=timeout))


def close_group() -> None:
    """End a distributed run cleanly: wait for every rank, then destroy the
    process group. Left to the interpreter's exit, gloo's threads can abort
    a rank that finished ("terminate called without an active exception",
    exit code -6), which torchrun takes for a failure and restarts."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def cpu_distributed_fallback(cfg: Config, launcher: str) -> bool:
    """Make a distributed ``cfg`` runnable on CPU; no-op with CUDA.

    Sets ``env_cfg.dist_cfg.backend='gloo'``, initialises the default process
    group (MMEngine then skips its CUDA-only ``init_dist``) and sets
    ``model_wrapper_cfg.device_ids=None`` (DDP rejects ``device_ids`` for CPU
    modules).

    Args:
        cfg: the full config; modified in place.
        launcher: one of :data:`LAUNCHERS`.

    Returns:
        ``True`` when the fallback was applied.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got '
                         f'{launcher!r}')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    old = dist_cfg.get('backend', 'nccl')
    dist_cfg['backend'] = 'gloo'
    _env_from_launcher(launcher, dist_cfg.get('port'))
    if int(os.environ.get('RANK', 0)) == 0:
        print_log(
            f'No CUDA device: distributed backend {old!r} -> \'gloo\' '
            f'(CPU), world size {os.environ["WORLD_SIZE"]}.',
            logger='current', level=30)
    if not dist.is_initialized():
        init_group('gloo', collective_timeout(cfg))
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return True


def prepare_restart(cfg: Config, launcher: str) -> bool:
    """What a worker restarted by torchrun needs; no-op in a first launch.

    torchrun (``--max-restarts``, see ``tools/dist_launch.sh``) restarts
    the whole group when a worker dies and sets
    ``TORCHELASTIC_RESTART_COUNT`` > 0 in the new workers. If the run
    has a checkpoint to resume from (the config's
    :func:`~mmdtm.checkpoint.resume_candidates` are not empty), it then
    resumes like ``--resume auto`` (``SafeCheckpointHook`` picks the newest
    complete one); before the first checkpoint the run starts as it was
    launched. Under torchrun with CUDA, the process group is initialised
    here through :func:`init_group` (the CPU fallback, called first, does
    so anyway), so that it does not read the failed attempt's keys, and the
    ranks agree on the largest restart count.

    Returns:
        ``True`` when ``cfg`` was switched to resume.
    """
    attempt = _restart_count()
    under_torchrun = (launcher == 'pytorch'
                      and 'TORCHELASTIC_RESTART_COUNT' in os.environ)
    if (under_torchrun and torch.cuda.is_available()
            and not dist.is_initialized()):
        dist_cfg = cfg.get('env_cfg', {}).get('dist_cfg', {})
        torch.cuda.set_device(int(os.environ['LOCAL_RANK']))
        init_group(dist_cfg.get('backend', 'nccl'), collective_timeout(cfg))
    if under_torchrun and dist.is_initialized():
        # on several nodes, a node that torchrun restarts because another
        # node's worker failed counts no restart: take the largest count
        flag = torch.tensor([attempt], dtype=torch.int64)
        all_reduce(flag, op='max')
        attempt = int(flag.item())
    if attempt == 0:
        return False
    work_dir = cfg.get('work_dir')
    if not work_dir or not config_resume_candidates(cfg):
        return False
    cfg.resume, cfg.load_from = True, None
    if int(os.environ.get('RANK', 0)) == 0:
        print_log(f'torchrun restart {attempt}: resuming from the newest '
                  f'complete checkpoint in {work_dir}', logger='current',
                  level=30)
    return True
