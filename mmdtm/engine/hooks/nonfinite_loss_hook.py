"""Stop (or skip the step) when the training loss is not finite."""
import logging
from typing import Optional

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper

from mmdtm.registry import HOOKS

ACTIONS = ('stop', 'skip')


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Guard the optimizer against a NaN or infinite loss.

    Wraps ``runner.optim_wrapper.update_params`` so that the loss is checked
    *before* any gradient reaches the weights (MMEngine's ``after_train_iter``
    would be too late: the step is done). On several processes the ranks
    agree (an all-reduce of one flag), so all stop or all skip together.
    The check reads one value back from the device per step, as MMEngine's
    loss logging already does.

    Args:
        action: ``'stop'`` (default): raise ``FloatingPointError`` naming the
            iteration (1-based, as in the log) and the last checkpoint; the
            weights are not updated and no checkpoint of the bad iteration is
            written, so the last good checkpoint stays the latest.
            ``'skip'``: drop this step's gradients (backward runs so that
            DDP's reducer stays in step, then the gradients are zeroed; with
            gradient accumulation the window's gradients so far are
            dropped), count it (``message_hub`` info ``nonfinite_skips``,
            saved in checkpoints) and log it.
        max_skips: with ``'skip'``, stop anyway once more than this many
            steps were skipped (``None``: no limit).
    """

    priority = 'VERY_HIGH'

    def __init__(self, action: str = 'stop',
                 max_skips: Optional[int] = None) -> None:
        if action not in ACTIONS:
            raise ValueError(f'NonFiniteLossHook: action must be one of '
                             f'{ACTIONS}, got {action!r}')
        if max_skips is not None and (isinstance(max_skips, bool)
                                      or not isinstance(max_skips, int)
                                      or max_skips < 0):
            raise ValueError(f'NonFiniteLossHook: max_skips must be None or '
                             f'an int >= 0, got {max_skips!r}')
        self.action, self.max_skips = action, max_skips
        self.skipped = 0

    def before_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        if not isinstance(wrapper, OptimWrapper):
            raise TypeError(f'NonFiniteLossHook needs a single OptimWrapper, '
                            f'got {type(wrapper).__name__}')
        self.skipped = int(runner.message_hub.get_info('nonfinite_skips', 0))
        original = type(wrapper).update_params.__get__(wrapper)

        def guarded_update(loss: torch.Tensor, step_kwargs=None,
                           zero_kwargs=None):
            if not self._is_bad(loss):
                return original(loss, step_kwargs, zero_kwargs)
            self._on_bad(runner, wrapper, loss, zero_kwargs)

        wrapper.update_params = guarded_update

    @staticmethod
    def _is_bad(loss: torch.Tensor) -> bool:
        bad = (~torch.isfinite(loss.detach())).any().to(torch.int32)
        if get_world_size() > 1:
            bad = bad.reshape(1)
            all_reduce(bad, op='sum')
        return bool(bad.item())

    def _on_bad(self, runner, wrapper: OptimWrapper, loss: torch.Tensor,
                zero_kwargs) -> None:
        iteration = runner.iter + 1
        last = runner.message_hub.get_info('last_ckpt', None)
        where = (f'the last checkpoint, {last}, is intact' if last else
                 'no checkpoint had been written yet')
        value = loss.detach().float().cpu().tolist()
        if self.action == 'stop' or (self.max_skips is not None
                                     and self.skipped >= self.max_skips):
            why = ('' if self.action == 'stop' else
                   f' after {self.skipped} skipped steps (max_skips='
                   f'{self.max_skips})')
            raise FloatingPointError(
                f'non-finite loss ({value}) at iteration {iteration}{why}; '
                f'training stopped before the optimizer step, {where}. Lower '
                f'the lr, check the data, or set NonFiniteLossHook '
                f"action='skip' to skip such steps.")
        wrapper.backward(loss)  # keeps DDP and accumulation counters in step
        wrapper.zero_grad(**(zero_kwargs or {}))
        self.skipped += 1
        runner.message_hub.update_info('nonfinite_skips', self.skipped)
        print_log(f'non-finite loss ({value}) at iteration {iteration}: '
                  f'step skipped ({self.skipped} skipped so far)',
                  logger='current', level=logging.WARNING)
