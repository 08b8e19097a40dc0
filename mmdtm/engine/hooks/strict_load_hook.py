"""Refuse a ``load_from`` / resume checkpoint that does not fit the model."""
import re
from typing import Mapping, Sequence

from mmengine.hooks import Hook
from mmpretrain.utils import get_ori_model

from mmdtm.checkpoint import (compare_state_dict, config_resume_candidates,
                              state_dict_of)
from mmdtm.registry import HOOKS
from mmdtm.upstream import runner_load_from, runner_resumes


def check_state_dict(model_state: Mapping, ckpt_state: Mapping, source: str,
                     target: str = 'the model',
                     allow_missing: Sequence[str] = (),
                     allow_unexpected: Sequence[str] = ()) -> None:
    """Raise :class:`~mmdtm.checkpoint.CheckpointMismatchError` listing
    every missing, unexpected and shape-mismatched key (see
    :func:`~mmdtm.checkpoint.compare_state_dict` for the patterns)."""
    report = compare_state_dict(model_state, ckpt_state, allow_missing,
                                allow_unexpected)
    if not report.ok:
        raise report.error(
            f'{source} does not fit {target}:\n'
            f'{report.summary(f"{source} -> {target}")}\nIs it a checkpoint '
            f'of this model? (StrictLoadHook allow_missing / '
            f'allow_unexpected accept key patterns on purpose.)')


@HOOKS.register_module()
class StrictLoadHook(Hook):
    """Fail ``load_from`` and resume when the checkpoint is of another model.

    MMEngine's ``Runner.load_checkpoint`` loads with ``strict=False`` and
    only logs a warning, so training silently starts from random weights
    when ``load_from`` points at the wrong model. This hook checks the keys
    and shapes of the checkpoint (after removing a ``module.`` prefix, as
    the Runner does) before they are loaded and raises
    :class:`~mmdtm.checkpoint.CheckpointMismatchError` with the lists.

    Args:
        allow_missing: key patterns (regular expressions matched at the
            start of the key) that may be absent from the checkpoint.
        allow_unexpected: key patterns that the model may lack.
    """

    priority = 'VERY_HIGH'

    def __init__(self, allow_missing: Sequence[str] = (),
                 allow_unexpected: Sequence[str] = ()) -> None:
        self.allow_missing = list(allow_missing)
        self.allow_unexpected = list(allow_unexpected)

    @staticmethod
    def _source(runner) -> str:
        path = runner_load_from(runner)
        if path is None and runner_resumes(runner):  # what MMEngine loads
            path = next(iter(config_resume_candidates(
                runner.cfg, runner.work_dir)), None)
        return f'checkpoint {path}' if path else 'the checkpoint'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = get_ori_model(runner.model)
        source = self._source(runner)
        state = state_dict_of(checkpoint, source)
        state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
        check_state_dict(model.state_dict(), state, source,
                         type(model).__name__,
                         allow_missing=self.allow_missing,
                         allow_unexpected=self.allow_unexpected)
