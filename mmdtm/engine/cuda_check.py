"""Refuse to start on a GPU node whose GPUs torch cannot use.

The usual cause: an NVIDIA driver older than the CUDA that torch was built
for (PyPI's torch 2.14.1 is a CUDA 13.0 build and needs a 580-series driver;
many clusters run CUDA 12.x drivers). ``torch.cuda.is_available()`` is then
``False`` although the node has GPUs, and a launch script would quietly take
its CPU path. :func:`check_cuda_usable` (called first by ``tools/train.py``
and ``tools/test.py``) stops the launch instead, with one message that gives
the driver's CUDA version, torch's CUDA build and the fix.

GPUs count as visible when ``nvidia-smi -L`` lists one, a ``/dev/nvidia<N>``
device file exists, or ``CUDA_VISIBLE_DEVICES`` names devices. Setting
``CUDA_VISIBLE_DEVICES=`` (empty) or ``-1`` hides them on purpose: the run
then takes the CPU path without complaint.
"""
import glob
import os
import re
import shutil
import subprocess
from typing import List, Optional

import torch

DEV_GLOB = '/dev/nvidia[0-9]*'
NVIDIA_SMI_TIMEOUT = 20.0  # seconds; a hung driver must not hang the launch
README_HINT = 'README, "GPU nodes"'
# CUDA builds on PyTorch's index (https://download.pytorch.org/whl/<tag>),
# for the example in the message; pytorch.org lists the current ones
INDEX_TAGS = ((11, 8), (12, 1), (12, 4), (12, 6), (12, 8), (12, 9), (13, 0))


class CudaUnusableError(RuntimeError):
    """GPUs are visible to the system but torch cannot use them."""


def _nvidia_smi(*args: str) -> Optional[str]:
    """stdout of ``nvidia-smi *args``, or ``None`` when absent or failing."""
    exe = shutil.which('nvidia-smi')
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True,
                              timeout=NVIDIA_SMI_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def driver_cuda_version() -> Optional[str]:
    """The highest CUDA version the driver supports ("12.2"), from the
    ``CUDA Version:`` field of ``nvidia-smi``'s header; ``None`` if
    unknown."""
    out = _nvidia_smi()
    match = re.search(r'CUDA Version:\s*([0-9]+\.[0-9]+)', out or '')
    return match.group(1) if match else None


def visible_gpu_signals() -> List[str]:
    """What says this system has NVIDIA GPUs (empty on a CPU machine or
    when ``CUDA_VISIBLE_DEVICES`` hides them on purpose)."""
    cvd = os.environ.get('CUDA_VISIBLE_DEVICES')
    if cvd is not None and cvd.strip() in ('', '-1'):
        return []
    signals = []
    listed = [line for line in (_nvidia_smi('-L') or '').splitlines()
              if line.startswith('GPU ')]
    if listed:
        signals.append(f'nvidia-smi -L lists {len(listed)} GPU(s)')
    devices = sorted(glob.glob(DEV_GLOB))
    if devices:
        signals.append(f'{", ".join(devices)} exist')
    if cvd is not None:
        signals.append(f'CUDA_VISIBLE_DEVICES={cvd}')
    return signals


def _torch_cuda_error() -> str:
    """What torch says when asked to initialise CUDA."""
    try:
        torch.cuda.init()
    except Exception as exc:  # noqa: BLE001 - the message is the answer
        return f'{type(exc).__name__}: {str(exc).strip().splitlines()[0]}'
    return 'no error from torch.cuda.init()'


def example_index_tag(driver: Optional[str]) -> str:
    """The newest :data:`INDEX_TAGS` build a driver supporting CUDA
    ``driver`` ("12.2") can run: ``'cu121'``; ``'cu118'`` if unknown."""
    best = INDEX_TAGS[0]
    if driver:
        have = tuple(int(x) for x in driver.split('.')[:2])
        best = max((t for t in INDEX_TAGS if t <= have), default=best)
    return f'cu{best[0]}{best[1]}'


def unusable_cuda_message(signals: List[str]) -> str:
    """The refusal: what is visible, the driver's and torch's CUDA, the fix."""
    driver = driver_cuda_version()
    build = torch.version.cuda
    driver_txt = (f'the NVIDIA driver supports CUDA up to {driver}'
                  if driver else "the driver's CUDA version is unknown "
                  '(nvidia-smi gave none)')
    build_txt = (f'this torch {torch.__version__} is built for CUDA {build}'
                 if build else f'this torch {torch.__version__} is a CPU-only '
                 'build')
    want = f'CUDA <= {driver}' if driver else "your driver's CUDA"
    example = example_index_tag(driver)
    return (
        f'GPUs are visible ({"; ".join(signals)}) but torch cannot use them: '
        f'torch.cuda.is_available() is False ({_torch_cuda_error()}). '
        f'{driver_txt[0].upper()}{driver_txt[1:]}; {build_txt}. '
        f'Refusing to start rather than training on CPU. Fix: install a '
        f'torch built for {want}, e.g. TORCH_INDEX_URL='
        f'https://download.pytorch.org/whl/{example} '
        f'bash tools/setup_env.sh (or keep a working torch with '
        f'KEEP_TORCH=1; {README_HINT}), or update the NVIDIA driver. To run '
        f'on CPU on purpose, set CUDA_VISIBLE_DEVICES= (empty).')


def check_cuda_usable() -> None:
    """Raise :class:`CudaUnusableError` when GPUs are visible but
    ``torch.cuda.is_available()`` is False; return otherwise."""
    if torch.cuda.is_available():
        return
    signals = visible_gpu_signals()
    if signals:
        raise CudaUnusableError(unusable_cuda_message(signals))
