"""Strict, reported loading of pre-trained backbone weights.

MMEngine's ``Pretrained`` init loads with ``strict=False`` and only logs, so a
checkpoint with the wrong prefix loads *nothing* and training silently starts
from random weights. :func:`load_backbone_checked` compares the checkpoint
with the model key by key (:func:`~mmdtm.checkpoint.compare_state_dict`),
logs loaded / missing / unexpected keys and raises
:class:`~mmdtm.checkpoint.CheckpointMismatchError` (listing them) unless
every weight of the model is loaded, except those a config explicitly
declares new (``new_keys``), and every checkpoint tensor is used, except
those it declares unused (``ignore_keys``).

Configs use it through ``init_cfg=dict(type='CheckedPretrained', ...)`` on a
backbone with :class:`CheckedInitMixin` (mmdtm's ``DTMViT``); the mixin runs
the load after every submodule's own ``init_weights`` so nothing overwrites
it (MMEngine defers only its own ``Pretrained`` type that way).
"""
from typing import Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from torch import nn

from mmdtm.registry import WEIGHT_INITIALIZERS
from .compare import (DERIVED_KEY, CheckpointMismatchError, KeyReport,
                      compare_state_dict, format_keys)
from .io import load_checkpoint_file, state_dict_of
from .rel_pos import resize_tables


def load_backbone_checked(model: nn.Module,
                          checkpoint: Union[str, dict],
                          prefix: str = 'backbone.',
                          new_keys: Sequence[str] = (),
                          ignore_keys: Sequence[str] = (),
                          resize_rel_pos: bool = True,
                          logger: Optional[str] = 'current') -> KeyReport:
    """Load ``checkpoint`` into ``model``; raise unless it covers the model.

    Args:
        model: the backbone.
        checkpoint: a file path, or a loaded checkpoint / state dict.
        prefix: keys are taken from under this prefix (and it is stripped);
            ``''`` takes every key.
        new_keys: patterns (regular expressions matched at the start, so
            plain prefixes work) of model keys that are new downstream
            layers and may stay at their initialisation.
        ignore_keys: patterns of checkpoint keys (after the prefix) that may
            go unused.
        resize_rel_pos: resize relative position bias tables whose window
            differs from the model's.

    Returns:
        the :class:`~mmdtm.checkpoint.KeyReport`.

    Raises:
        CheckpointMismatchError: with the missing / unexpected / mismatched
            keys.
    """
    source = checkpoint if isinstance(checkpoint, str) else 'checkpoint'
    if isinstance(checkpoint, str):
        checkpoint = load_checkpoint_file(checkpoint)
    state = state_dict_of(checkpoint, source)
    if prefix:
        inside = {k[len(prefix):]: v for k, v in state.items()
                  if k.startswith(prefix)}
        if not inside:
            raise CheckpointMismatchError(
                f'{source}: no key starts with prefix {prefix!r}, so nothing '
                f'would load. Checkpoint keys: {format_keys(state)}. Use the '
                f'prefix these keys have (or prefix="" for a converted '
                f'backbone checkpoint without one).',
                missing=list(model.state_dict()), unexpected=list(state))
        state = inside
    if resize_rel_pos:
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        state = resize_tables(
            state, shapes,
            log=lambda msg: print_log(msg, logger=logger))
    report = compare_state_dict(model.state_dict(), state, new_keys,
                                ignore_keys)
    text = report.summary(f'{source} -> {type(model).__name__}')
    if not report.ok:
        raise report.error(
            f'pre-trained weights do not match the model, refusing to train '
            f'from a partly random backbone.\n{text}\nDeclare intentionally '
            f'new model keys in new_keys and unused checkpoint keys in '
            f'ignore_keys, or convert the checkpoint with '
            f'tools/model_converters/dtm_to_downstream.py.')
    load = {k: state[k] for k in report.loaded}
    result = model.load_state_dict(load, strict=False)
    leftover = [k for k in result.missing_keys
                if not DERIVED_KEY.search(k)
                and k not in report.allowed_missing]
    if leftover or result.unexpected_keys:  # a load hook dropped something
        raise CheckpointMismatchError(
            f'{source}: load_state_dict left {format_keys(leftover)} missing '
            f'and {format_keys(result.unexpected_keys)} unexpected',
            missing=leftover, unexpected=result.unexpected_keys)
    print_log(text, logger=logger)
    return report


@WEIGHT_INITIALIZERS.register_module(name='CheckedPretrained')
class CheckedPretrainedInit:
    """``init_cfg=dict(type='CheckedPretrained', checkpoint=..., prefix=...,
    new_keys=[...], ignore_keys=[...])``: see :func:`load_backbone_checked`.

    Only for modules with :class:`CheckedInitMixin`, which call it after the
    submodules' own initialisation (called earlier, the submodules would
    overwrite the loaded weights).
    """

    def __init__(self, checkpoint: str, prefix: str = 'backbone.',
                 new_keys: Sequence[str] = (), ignore_keys: Sequence[str] = (),
                 resize_rel_pos: bool = True) -> None:
        if not checkpoint:
            raise ValueError('CheckedPretrained: init_cfg.checkpoint is empty;'
                             ' set it to the converted backbone checkpoint')
        self.kwargs = dict(checkpoint=checkpoint, prefix=prefix,
                           new_keys=tuple(new_keys),
                           ignore_keys=tuple(ignore_keys),
                           resize_rel_pos=resize_rel_pos)

    def __call__(self, module: nn.Module) -> KeyReport:
        if not isinstance(module, CheckedInitMixin):
            raise TypeError(
                f'CheckedPretrained init works on backbones with '
                f'CheckedInitMixin (e.g. DTMViT), not on '
                f'{type(module).__name__}: elsewhere MMEngine would run it '
                f'before the submodules re-initialise themselves')
        with torch.no_grad():
            return load_backbone_checked(module, **self.kwargs)


class CheckedInitMixin:
    """Runs ``CheckedPretrained`` init configs after all other init."""

    last_load_report: Optional[KeyReport] = None

    def init_weights(self) -> None:
        cfgs = self.init_cfg
        cfg_list = [cfgs] if isinstance(cfgs, dict) else list(cfgs or [])
        checked = [c for c in cfg_list if c.get('type') == 'CheckedPretrained']
        if not checked or getattr(self, 'is_init', False):
            return super().init_weights()  # MMEngine warns on a 2nd call
        others = [c for c in cfg_list if c.get('type') != 'CheckedPretrained']
        self.init_cfg = others or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = cfgs
        for cfg in checked:
            cfg = {k: v for k, v in cfg.items() if k != 'type'}
            self.last_load_report = CheckedPretrainedInit(**cfg)(self)
