"""A Runner whose run name, log directory and process-wide instances are
its own, however many Runners a process starts within one second.

MMEngine names a run after its start time to the second: the log directory
``work_dir/<timestamp>/`` and the name of the run's logger, message hub,
visualizer and default scope, which are process-wide instances looked up by
name (``ManagerMixin.get_instance``). Two Runners started within the same
second in one process (tests, notebooks, sweeps, a build that failed and was
retried) therefore share them: the second run's logs, scalars and
``nonfinite_skips`` counter land in the first run's objects and directory.
:class:`IsolatedRunner` gives such a run the timestamp ``<timestamp>_2``
(``_3``, ...) instead; every other run is named exactly as by MMEngine.
"""
import itertools
import os.path as osp
from typing import Dict, List, Set

from mmengine.config import Config
from mmengine.dist import broadcast_object_list
from mmengine.runner import Runner
from mmengine.utils import ManagerMixin

from ..checkpoint.compat import checkpoint_safe_globals
from ..registry import RUNNERS
from ..upstream import set_run_timestamp


def manager_classes() -> List[type]:
    """``ManagerMixin`` and its subclasses, each with its own instances
    (``vars(cls)['_instance_dict']``: name -> instance)."""
    found, todo = [], [ManagerMixin]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def live_instance_names() -> Set[str]:
    """Names of every live ``ManagerMixin`` instance in this process
    (loggers, message hubs, visualizers, default scopes, ...)."""
    return {name for cls in manager_classes()
            for name in vars(cls).get('_instance_dict', {})}


def unique_timestamp(timestamp: str, work_dir: str) -> str:
    """``timestamp``, or the first of ``timestamp_2``, ``timestamp_3``, ...
    that no live instance name ends with and no directory in ``work_dir``
    has (a run's names end with ``_<timestamp>``; its log dir is
    ``work_dir/<timestamp>``)."""
    names = live_instance_names()
    for n in itertools.count(1):
        stamp = timestamp if n == 1 else f'{timestamp}_{n}'
        if osp.exists(osp.join(work_dir, stamp)):
            continue
        if not any(name == stamp or name.endswith('_' + stamp)
                   for name in names):
            return stamp
    raise AssertionError('unreachable')


@RUNNERS.register_module()
class IsolatedRunner(Runner):
    """MMEngine's ``Runner`` with a run name no other run of this process
    (and no earlier log directory in ``work_dir``) has; see the module
    docstring; its ``load_or_resume`` reads MMEngine checkpoints under
    torch >= 2.6 without a process-wide allow-list. Selected by
    ``runner_type = 'IsolatedRunner'`` (every mmdtm
    config) through :func:`build_runner` or ``RUNNERS.build(cfg)``.
    """

    def setup_env(self, env_cfg: Dict) -> None:
        super().setup_env(env_cfg)
        # rank 0 decides: the log directory is shared by all ranks
        stamp = [unique_timestamp(self.timestamp, self.work_dir)]
        broadcast_object_list(stamp)
        set_run_timestamp(self, stamp[0])

    def load_or_resume(self) -> None:
        """MMEngine's ``load_from`` / ``resume``, with MMEngine's checkpoint
        classes allowed by ``torch.load`` for this call only (torch >= 2.6
        loads with ``weights_only=True``); nothing process-wide."""
        with checkpoint_safe_globals():
            super().load_or_resume()


def build_runner(cfg: Config) -> Runner:
    """The Runner ``cfg.runner_type`` names (default ``IsolatedRunner``).

    Like ``RUNNERS.build(cfg)`` (MMPretrain's and MMSegmentation's
    ``tools/train.py``), but the runner gets the ``Config`` itself, so that
    the run keeps its config file's name. Plain ``Runner.from_cfg`` ignores
    ``runner_type`` and keeps MMEngine's per-second names.
    """
    name = cfg.get('runner_type', 'IsolatedRunner')
    # the config's scope first (a runner registered by MMPretrain or
    # MMSegmentation), then MMEngine's root registry
    with RUNNERS.switch_scope_and_registry(cfg.get('default_scope')) as reg:
        runner_cls = reg.get(name)
    if runner_cls is None:
        raise KeyError(f'runner_type={name!r} is not a registered runner '
                       f'(is the module that registers it imported?)')
    return runner_cls.from_cfg(cfg)
