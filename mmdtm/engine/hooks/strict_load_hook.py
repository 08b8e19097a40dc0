"""Refuse a ``load_from`` / resume checkpoint that does not fit the model."""
import re
from typing import Dict, List, Mapping, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner.checkpoint import find_latest_checkpoint
from mmpretrain.registry import HOOKS


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's keys or shapes do not match the model's."""


def _fmt(keys: Sequence[str], limit: int = 30) -> str:
    keys = sorted(keys)
    more = f' ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return '[' + ', '.join(keys[:limit]) + more + ']'


def state_dict_mismatch(model_state: Mapping, ckpt_state: Mapping,
                        allow_missing: Sequence[str] = (),
                        allow_unexpected: Sequence[str] = ()
                        ) -> Dict[str, List[str]]:
    """Missing, unexpected and shape-mismatched keys, minus the allowed ones.

    Args:
        model_state: the model's ``state_dict()``.
        ckpt_state: the checkpoint's state dict.
        allow_missing / allow_unexpected: regular expressions
            (``re.search``) of keys that may be missing / unexpected.
    """
    def allowed(key: str, patterns: Sequence[str]) -> bool:
        return any(re.search(p, key) for p in patterns)

    missing = [k for k in model_state if k not in ckpt_state
               and not allowed(k, allow_missing)]
    unexpected = [k for k in ckpt_state if k not in model_state
                  and not allowed(k, allow_unexpected)]
    shapes = [f'{k}: checkpoint {tuple(ckpt_state[k].shape)} vs model '
              f'{tuple(model_state[k].shape)}' for k in model_state
              if k in ckpt_state and hasattr(ckpt_state[k], 'shape')
              and hasattr(model_state[k], 'shape')
              and ckpt_state[k].shape != model_state[k].shape]
    return dict(missing=missing, unexpected=unexpected, shapes=shapes)


def check_state_dict(model_state: Mapping, ckpt_state: Mapping, source: str,
                     target: str = 'the model', **allow) -> None:
    """Raise :class:`CheckpointMismatchError` listing every missing,
    unexpected and shape-mismatched key (see :func:`state_dict_mismatch`)."""
    bad = state_dict_mismatch(model_state, ckpt_state, **allow)
    if not any(bad.values()):
        return
    parts = []
    if bad['missing']:
        parts.append(f'missing keys (in {target}, not in the checkpoint): '
                     f'{_fmt(bad["missing"])}')
    if bad['unexpected']:
        parts.append(f'unexpected keys (in the checkpoint, not in '
                     f'{target}): {_fmt(bad["unexpected"])}')
    if bad['shapes']:
        parts.append(f'shape mismatches: {_fmt(bad["shapes"])}')
    raise CheckpointMismatchError(
        f'{source} does not fit {target}: ' + '; '.join(parts) +
        '. Is it a checkpoint of this model? (StrictLoadHook allow_missing '
        '/ allow_unexpected accept key patterns on purpose.)')


@HOOKS.register_module()
class StrictLoadHook(Hook):
    """Fail ``load_from`` and resume when the checkpoint is of another model.

    MMEngine's ``Runner.load_checkpoint`` loads with ``strict=False`` and
    only logs a warning, so training silently starts from random weights
    when ``load_from`` points at the wrong model. This hook checks the keys
    and shapes of the checkpoint (after removing a ``module.`` prefix, as
    the Runner does) before they are loaded and raises
    :class:`CheckpointMismatchError` with the lists.

    Args:
        allow_missing: key patterns (regular expressions) that may be absent
            from the checkpoint.
        allow_unexpected: key patterns that the model may lack.
    """

    priority = 'VERY_HIGH'

    def __init__(self, allow_missing: Sequence[str] = (),
                 allow_unexpected: Sequence[str] = ()) -> None:
        self.allow_missing = list(allow_missing)
        self.allow_unexpected = list(allow_unexpected)

    @staticmethod
    def _source(runner) -> str:
        path = runner._load_from
        if path is None and runner._resume:
            path = find_latest_checkpoint(runner.work_dir)
        return f'checkpoint {path}' if path else 'the checkpoint'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        state = checkpoint.get('state_dict', checkpoint)
        state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
        check_state_dict(model.state_dict(), state, self._source(runner),
                         f'{type(model).__name__}',
                         allow_missing=self.allow_missing,
                         allow_unexpected=self.allow_unexpected)
