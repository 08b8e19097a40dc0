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
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


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
        timeout = dist_cfg.get('timeout', 1800)
        dist.init_process_group(
            backend='gloo', init_method='env://',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            timeout=timedelta(seconds=timeout))
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return True
