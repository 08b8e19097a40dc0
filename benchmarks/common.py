"""Shared helpers of the benchmark scripts: timing, peak memory, reporting.

Every benchmark compares arms *side by side in one process*: after a warm-up
the arms run in interleaved repetitions (a, b, a, b, ...), and each arm's
median is reported, so that a slow spell of a shared machine hits every arm
alike. Ratios are the meaningful output on a CPU; absolute times only mean
something on a dedicated GPU.

Peak memory of one call, above what was allocated before it:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``
  (exact, the caching allocator's own count).
* CPU: the process's peak resident set (``VmHWM``), reset before the call
  through ``/proc/self/clear_refs``, minus the resident set before the call.
  While measuring, glibc serves every block >= 64 KiB by ``mmap`` and trims
  freed memory, so tensors enter and leave the resident set as they are
  allocated and freed (timings run with heap reuse instead). Granularity is
  a page; blocks under 64 KiB may reuse free heap and go uncounted.
"""
import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Sequence

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

MiB = 1024.0**2


def _libc():
    try:
        return ctypes.CDLL('libc.so.6')
    except OSError:
        return None


_LIBC = _libc()
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _malloc_mode(measure: bool) -> bool:
    """glibc malloc set for measuring (True) or for speed (False).

    Measuring: every block >= 64 KiB is its own ``mmap`` and freed memory is
    trimmed, so the resident set follows the live tensors. Speed: blocks up to
    32 MiB come from the heap and stay there once freed (what glibc's dynamic
    threshold converges to in a long run), so repeated calls do not pay page
    faults; this is the mode timings run in.
    """
    if _LIBC is None:
        return False
    if measure:
        ok = _LIBC.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
        ok &= _LIBC.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        _LIBC.malloc_trim(0)
    else:
        ok = _LIBC.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        ok &= _LIBC.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024 * 1024)
    return bool(ok)


def add_common_args(parser: argparse.ArgumentParser,
                    repeats: int = 5, warmup: int = 1) -> None:
    """``--device --repeats --warmup --threads --json --seed``."""
    parser.add_argument('--device', default='cpu',
                        help='cpu or cuda (default: cpu)')
    parser.add_argument('--repeats', type=int, default=repeats,
                        help=f'timed repetitions per arm (default {repeats})')
    parser.add_argument('--warmup', type=int, default=warmup,
                        help=f'untimed warm-up calls per arm (default '
                        f'{warmup})')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch decides, '
                        'i.e. OMP_NUM_THREADS)')
    parser.add_argument('--seed', type=int, default=0, help='data seed')
    parser.add_argument('--json', default=None, metavar='PATH',
                        help='write the measured numbers to PATH as JSON')
    parser.add_argument('--dry-run', action='store_true',
                        help='check the arguments, print them and exit')


def setup(args: argparse.Namespace) -> torch.device:
    """Check the device, set the threads, seed; return the device."""
    if args.dry_run:
        print(f'dry run, arguments parse: {vars(args)}')
        raise SystemExit(0)
    if args.repeats < 1:
        raise SystemExit(f'--repeats must be >= 1, got {args.repeats}')
    if args.warmup < 0:
        raise SystemExit(f'--warmup must be >= 0, got {args.warmup}')
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda but torch sees no CUDA device')
    if device.type not in ('cpu', 'cuda'):
        raise SystemExit(f'--device must be cpu or cuda, got {args.device!r}')
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == 'cpu':
        _malloc_mode(measure=False)
    torch.manual_seed(args.seed)
    return device


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _proc_status_kib(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'/proc/self/status has no {key}')


def _reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def cpu_peak_supported() -> bool:
    return (sys.platform.startswith('linux') and _LIBC is not None
            and _reset_peak_rss())


def peak_memory(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory (MiB) that one call of ``fn`` adds above the current use.

    The value ``fn`` returns is kept alive until the peak is read, so outputs
    count as they would in a training step. NaN where it cannot be measured.
    """
    if device.type == 'cuda':
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return peak / MiB
    if not cpu_peak_supported() or not _malloc_mode(measure=True):
        return float('nan')
    try:
        base = _proc_status_kib('VmRSS')
        _reset_peak_rss()
        out = fn()
        peak = _proc_status_kib('VmHWM') - base
        del out
    finally:
        _malloc_mode(measure=False)
    return max(peak, 0) * 1024 / MiB


def time_interleaved(arms: Dict[str, Callable[[], object]],
                     device: torch.device, repeats: int,
                     warmup: int) -> Dict[str, List[float]]:
    """Seconds per call of each arm, from interleaved repetitions.

    Every arm is called ``warmup`` times first (untimed), then the arms take
    turns ``repeats`` times; the order rotates each repetition so that no arm
    always runs right after the same other one.
    """
    names = list(arms)
    for _ in range(warmup):
        for name in names:
            arms[name]()
    sync(device)
    times = {name: [] for name in names}
    for rep in range(repeats):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            sync(device)
            start = time.perf_counter()
            arms[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def machine_info(device: torch.device) -> Dict[str, object]:
    """What the numbers were measured on."""
    info = dict(
        date_utc=datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        device=str(device),
        torch=torch.__version__,
        python=platform.python_version(),
        cpu=_cpu_name(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        omp_num_threads=os.environ.get('OMP_NUM_THREADS'),
        command=' '.join([os.path.relpath(sys.executable, REPO)
                          if sys.executable.startswith(REPO) else
                          sys.executable] + sys.argv),
    )
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                title: Optional[str] = None) -> str:
    """Print (and return) a Markdown table."""
    def fmt(v):
        if isinstance(v, float):
            if v != v:
                return 'n/a'
            return f'{v:.3g}' if abs(v) < 100 else f'{v:.0f}'
        return str(v)

    lines = []
    if title:
        lines += [title, '']
    lines.append('| ' + ' | '.join(headers) + ' |')
    lines.append('|' + '|'.join(' --- ' for _ in headers) + '|')
    for row in rows:
        lines.append('| ' + ' | '.join(fmt(v) for v in row) + ' |')
    text = '\n'.join(lines)
    print(text, flush=True)
    return text


def finish(name: str, summary: Dict[str, float], payload: Dict[str, object],
           json_path: Optional[str]) -> None:
    """Write the JSON (when asked) and print the ``RESULT`` line last."""
    if json_path:
        folder = os.path.dirname(os.path.abspath(json_path))
        os.makedirs(folder, exist_ok=True)
        data = _clean(dict(benchmark=name, summary=summary, **payload))
        with open(json_path, 'w') as f:
            json.dump(data, f, indent=2, allow_nan=False)
        print(f'wrote {json_path}')
    parts = [f'benchmark={name}'] + [
        f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
        for k, v in summary.items()
    ]
    print('RESULT ' + ' '.join(parts), flush=True)


def _clean(v):
    """Strict JSON: NaN -> null, tensors -> lists, tuples -> lists."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, torch.Tensor):
        return _clean(v.tolist())
    if isinstance(v, float) and v != v:
        return None
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)
