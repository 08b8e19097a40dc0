"""The fence: every private name of torch, MMEngine, MMPretrain,
MMSegmentation and open_clip that mmdtm uses, and nothing else.

Private names can change in any release. mmdtm reaches them only through
this module, and :func:`check` (run when this module is imported, i.e. on
``import mmdtm``) verifies each entry of :data:`FENCED` against the
installed versions: that it exists, with the parameter names it had when
mmdtm was written. Otherwise ``import mmdtm`` fails at once with one
:class:`UpstreamChangedError` that names the package, its installed version
and :data:`SUPPORTED` range, rather than with an ``AttributeError`` hours
into a run. ``tests/test_upstream.py`` lists the names, runs the check and
scans the package for private names used elsewhere.

Overrides of private methods are *seams*: small base classes here that
implement the private method by calling a public one
(:class:`CheckpointHookSeam`, :class:`ApplySeam`,
:class:`RelPosTableSeam`), so that mmdtm's classes override only public
names. Instance attributes have getter/setter functions.
"""
import importlib
import importlib.metadata
import inspect
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from mmengine.hooks import CheckpointHook
from mmengine.model.weight_init import update_init_info
from mmengine.runner.loops import _InfiniteDataloaderIterator
from mmpretrain.models.backbones.beit import BEiTViT
from torch import nn

#: distribution -> (import name, lowest supported, first unsupported): the
#: ranges ``install_requires`` declares (``requirements/runtime.txt``,
#: ``seg.txt``), restated for the error message because a wheel carries no
#: requirement files; ``tests/test_environment.py`` checks that they agree.
SUPPORTED: Dict[str, Tuple[str, str, str]] = {
    'torch': ('torch', '2.1', '3'),
    'mmengine': ('mmengine', '0.10.4', '1.0.0'),
    'mmpretrain': ('mmpretrain', '1.2.0', '2'),
    'mmsegmentation': ('mmseg', '1.2.2', '2'),
    'open_clip_torch': ('open_clip', '3.3.0', '4'),
}


class UpstreamChangedError(ImportError):
    """An installed dependency lacks (or changed) a private name mmdtm
    uses."""


@dataclass(frozen=True)
class Private:
    """One private name of another package that mmdtm uses.

    Args:
        dist: the distribution (a key of :data:`SUPPORTED`).
        owner: dotted path of the module or class that holds ``name``.
        name: the private name.
        params: for a callable, its parameter names (``inspect.signature``).
        assigned: an instance attribute: ``owner``'s code assigns
            ``self.<name>`` (checked in its source).
        use: where and why mmdtm uses it.
    """
    dist: str
    owner: str
    name: str
    params: Optional[Tuple[str, ...]] = None
    assigned: bool = False
    use: str = ''

    @property
    def qualname(self) -> str:
        return f'{self.owner}.{self.name}'


_RUNNER = 'mmengine.runner.Runner'
_ITERATOR = 'mmengine.runner.loops._InfiniteDataloaderIterator'
_MP_ITER = 'torch.utils.data.dataloader._MultiProcessingDataLoaderIter'

#: every private name mmdtm uses, with what it must look like
FENCED: Tuple[Private, ...] = (
    Private('mmengine', _RUNNER, '_load_from', assigned=True,
            use='the resume choice sets the file to resume from'),
    Private('mmengine', _RUNNER, '_resume', assigned=True,
            use='hooks ask whether the run resumes'),
    Private('mmengine', _RUNNER, '_timestamp', assigned=True,
            use='IsolatedRunner gives each run its own name'),
    Private('mmengine', 'mmengine.hooks.CheckpointHook',
            '_save_checkpoint_with_step',
            params=('self', 'runner', 'step', 'meta'),
            use='SafeCheckpointHook saves through CheckpointHookSeam'),
    Private('mmengine', 'mmengine.runner.loops', '_InfiniteDataloaderIterator',
            use='ResumableIterBasedTrainLoop cycles the loader with it'),
    Private('mmengine', _ITERATOR, '__init__', params=('self', 'dataloader')),
    Private('mmengine', _ITERATOR, '_dataloader', assigned=True),
    Private('mmengine', _ITERATOR, '_iterator', assigned=True),
    Private('mmengine', _ITERATOR, '_epoch', assigned=True),
    Private('mmengine', 'mmengine.runner.IterBasedTrainLoop',
            '_decide_current_val_interval', params=('self',),
            use='ResumableIterBasedTrainLoop.run, as MMEngine\'s run'),
    Private('mmengine', 'mmengine.runner.EpochBasedTrainLoop', '_epoch',
            assigned=True,
            use='ResumableEpochBasedTrainLoop.run_epoch counts the epoch'),
    Private('mmengine', 'mmengine.model.BaseModule', '_params_init_info',
            assigned=True, use='ScaleInit records its init info'),
    Private('mmengine', 'mmengine.dist.utils', '_init_dist_slurm',
            params=('backend', 'port', 'init_backend', 'kwargs'),
            use='engine/launch.py translates SLURM variables as it does'),
    Private('mmengine', 'mmengine.dist.utils', '_init_dist_mpi',
            params=('backend', 'kwargs'),
            use='engine/launch.py translates MPI variables as it does'),
    Private('mmpretrain', 'mmpretrain.models.backbones.beit.BEiTViT',
            '_prepare_relative_position_bias_table',
            params=('self', 'state_dict', 'prefix', 'args', 'kwargs'),
            use='DTMPretrainViT keeps a shared table (RelPosTableSeam)'),
    Private('torch', 'torch.nn.Module', '_apply',
            params=('self', 'fn', 'recurse'),
            use='FrozenTeacher moves its unregistered teacher (ApplySeam)'),
    Private('torch', 'torch.utils.data.DataLoader', '_iterator',
            assigned=True, use='persistent workers are stopped at the end'),
    Private('torch', _MP_ITER, '_shutdown_workers', params=('self',),
            use='data workers stop when training ends or fails'),
)


def _resolve(dotted: str):
    """The object a dotted path names: the longest importable module
    prefix, then attributes."""
    parts = dotted.split('.')
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(f'cannot import {dotted}')


def _problem(entry: Private) -> Optional[str]:
    """What is wrong with ``entry`` in the installed packages (``None``:
    nothing)."""
    try:
        owner = _resolve(entry.owner)
    except (ImportError, AttributeError) as exc:
        return f'{entry.owner} is gone ({type(exc).__name__}: {exc})'
    if entry.assigned:
        try:
            source = inspect.getsource(owner)
        except (OSError, TypeError):
            return None  # no source installed: the getters fail instead
        if not re.search(rf'self\.{entry.name}\s*(:[^=\n]*)?=(?!=)', source):
            return f'{entry.qualname} is no longer assigned'
        return None
    if not hasattr(owner, entry.name):
        return f'{entry.qualname} is gone'
    if entry.params is not None:
        try:
            params = tuple(inspect.signature(
                getattr(owner, entry.name)).parameters)
        except (TypeError, ValueError):
            return f'{entry.qualname} has no signature to check'
        if params != entry.params:
            return (f'{entry.qualname} takes {params}, mmdtm expects '
                    f'{entry.params}')
    return None


def installed_version(dist: str) -> str:
    """The installed version of distribution ``dist`` (or a note)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return 'not installed as a distribution'


def supported_range(dist: str) -> str:
    """E.g. ``'>=2.1,<3'``."""
    _, low, high = SUPPORTED[dist]
    return f'>={low},<{high}'


def check(entries: Iterable[Private] = FENCED) -> None:
    """Verify every fenced name against the installed packages.

    Raises:
        UpstreamChangedError: one error for all problems, naming each
            package with its installed version and supported range.
    """
    problems: Dict[str, List[str]] = {}
    for entry in entries:
        problem = _problem(entry)
        if problem is not None:
            problems.setdefault(entry.dist, []).append(problem)
    if not problems:
        return
    lines = [
        f'{dist} {installed_version(dist)} (mmdtm supports '
        f'{dist}{supported_range(dist)}): ' + '; '.join(found)
        for dist, found in problems.items()
    ]
    raise UpstreamChangedError(
        'mmdtm cannot work with the installed ' +
        ' and '.join(problems) + ': ' + ' | '.join(lines) +
        '. Install a supported version (see setup.py) or report it.')


# --- MMEngine: Runner -------------------------------------------------------
def runner_load_from(runner) -> Optional[str]:
    """The checkpoint the runner will load (``load_from`` / ``--resume
    PATH``; set by the resume choice)."""
    return runner._load_from


def set_runner_load_from(runner, path: Optional[str]) -> None:
    """Make ``runner`` load (or resume from) ``path``."""
    runner._load_from = path


def runner_resumes(runner) -> bool:
    """Whether ``runner`` resumes (``resume=True`` / ``--resume``)."""
    return bool(runner._resume)


def set_run_timestamp(runner, timestamp: str) -> None:
    """Rename the run (``runner.timestamp``) before its logger and log
    directory are created (``Runner.setup_env``)."""
    runner._timestamp = timestamp


# --- MMEngine: CheckpointHook ------------------------------------------------
class CheckpointHookSeam(CheckpointHook):
    """``CheckpointHook`` whose per-step save is the public
    :meth:`save_checkpoint_at`; :meth:`mmengine_save_checkpoint_at` is
    MMEngine's own (bookkeeping of kept checkpoints, removal of the oldest
    file or directory, the write, ``last_checkpoint``)."""

    def _save_checkpoint_with_step(self, runner, step, meta):
        return self.save_checkpoint_at(runner, step, meta)

    def save_checkpoint_at(self, runner, step: int, meta: dict) -> None:
        """Save the checkpoint of ``step``; override this."""
        self.mmengine_save_checkpoint_at(runner, step, meta)

    def mmengine_save_checkpoint_at(self, runner, step: int,
                                    meta: dict) -> None:
        """MMEngine's ``CheckpointHook._save_checkpoint_with_step``."""
        super()._save_checkpoint_with_step(runner, step, meta)


# --- MMEngine: loops ---------------------------------------------------------
class InfiniteDataloaderIterator(_InfiniteDataloaderIterator):
    """MMEngine's ``_InfiniteDataloaderIterator`` (a data loader iterated
    for ever, ``set_epoch`` at each pass) with public state."""

    @property
    def dataloader(self):
        return self._dataloader

    @property
    def iterator(self):
        """The live ``iter(dataloader)``."""
        return self._iterator

    @iterator.setter
    def iterator(self, value) -> None:
        self._iterator = value

    @property
    def epoch(self) -> int:
        """Passes completed over the loader."""
        return self._epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch = value


def decide_val_interval(loop) -> None:
    """``IterBasedTrainLoop``'s per-iteration choice of ``val_interval``
    (``dynamic_intervals``)."""
    loop._decide_current_val_interval()


def set_loop_epoch(loop, epoch: int) -> None:
    """Set an ``EpochBasedTrainLoop``'s epoch counter (its ``run_epoch``
    adds one at the end of each epoch)."""
    loop._epoch = epoch


# --- MMEngine: weight init ---------------------------------------------------
def record_init_info(module: nn.Module, init_info: str) -> None:
    """Log ``init_info`` for ``module``'s parameters as MMEngine's
    initialisers do (only inside ``BaseModule.init_weights``, which
    prepares the record)."""
    if hasattr(module, '_params_init_info'):
        update_init_info(module, init_info=init_info)


# --- MMPretrain --------------------------------------------------------------
class RelPosTableSeam(BEiTViT):
    """``BEiTViT`` (and subclasses) whose relative-position-table load step
    (a ``state_dict`` pre-hook registered in ``__init__``) is the public
    :meth:`prepare_relative_position_bias_table`."""

    def _prepare_relative_position_bias_table(self, state_dict, prefix,
                                              *args, **kwargs):
        return self.prepare_relative_position_bias_table(
            state_dict, prefix, *args, **kwargs)

    def prepare_relative_position_bias_table(self, state_dict, prefix,
                                             *args, **kwargs):
        """MMPretrain's step: a checkpoint's shared table is copied into
        every block when the model has per-block tables."""
        return super()._prepare_relative_position_bias_table(
            state_dict, prefix, *args, **kwargs)


# --- torch -------------------------------------------------------------------
class ApplySeam(nn.Module):
    """A module whose ``.to()`` / ``.cuda()`` / ``.half()`` (torch's
    ``Module._apply``) also reach the modules of
    :meth:`unregistered_modules` (kept out of ``state_dict`` and
    ``parameters()`` on purpose)."""

    def unregistered_modules(self) -> List[nn.Module]:
        """Modules that are not children but move with this one."""
        return []

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for module in self.unregistered_modules():
            module._apply(fn, *args, **kwargs)
        return self


def release_loader_workers(iterator, loader) -> None:
    """Stop the worker processes of ``iterator`` (an ``iter(loader)``) now
    instead of at garbage collection (about 10 s later), and drop it from
    ``loader`` when the loader keeps it (``persistent_workers``)."""
    shutdown = getattr(iterator, '_shutdown_workers', None)
    if shutdown is not None:
        shutdown()
        if getattr(loader, '_iterator', None) is iterator:
            loader._iterator = None


check()
