"""Strict, reported loading of pre-trained backbone weights.

MMEngine's ``Pretrained`` init loads with ``strict=False`` and only logs, so a
checkpoint with the wrong prefix loads *nothing* and training silently starts
from random weights. :func:`load_backbone_checked` compares the checkpoint
with the model key by key, logs loaded / missing / unexpected keys and raises
:class:`CheckpointKeyError` (listing them) unless every weight of the model
is loaded, except those a config explicitly declares new (``new_keys``), and
every checkpoint tensor is used, except those it declares unused
(``ignore_keys``).

Configs use it through ``init_cfg=dict(type='CheckedPretrained', ...)`` on a
backbone with :class:`CheckedInitMixin` (mmdtm's ``DTMViT``); the mixin runs
the load after every submodule's own ``init_weights`` so nothing overwrites
it (MMEngine defers only its own ``Pretrained`` type that way).
"""
import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from mmengine.registry import WEIGHT_INITIALIZERS
from torch import nn

from .transfer import (DERIVED_KEY, StateDict, _fmt_keys, load_checkpoint_file,
                       resize_tables, state_dict_of)


class CheckpointKeyError(RuntimeError):
    """The checkpoint does not cover the model; ``missing``, ``unexpected``
    and ``mismatched`` hold the offending keys."""

    def __init__(self, message: str, missing: List[str],
                 unexpected: List[str], mismatched: List[str]) -> None:
        super().__init__(message)
        self.missing, self.unexpected = missing, unexpected
        self.mismatched = mismatched


@dataclass
class LoadReport:
    """What a checked load did, key by key."""
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)
    new: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, source: str = '') -> str:
        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
        lines = [f'{source}: loaded {len(self.loaded)}/{total} tensors; '
                 f'missing {len(self.missing)}, unexpected '
                 f'{len(self.unexpected)}, shape mismatch '
                 f'{len(self.mismatched)}']
        for name in ('missing', 'unexpected', 'mismatched', 'new', 'ignored'):
            keys = getattr(self, name)
            if keys:
                lines.append(f'  {name} ({len(keys)}): {_fmt_keys(keys)}')
        return '\n'.join(lines)


def _matches(key: str, patterns: Sequence[str]) -> bool:
    """``key`` starts with one of ``patterns`` or matches it as a regex
    (patterns starting with ``re:``)."""
    for pat in patterns:
        if pat.startswith('re:'):
            if re.search(pat[3:], key):
                return True
        elif key == pat or key.startswith(pat):
            return True
    return False


def compare_state_dict(model: nn.Module, state: StateDict,
                       new_keys: Sequence[str] = (),
                       ignore_keys: Sequence[str] = ()) -> LoadReport:
    """Key-by-key comparison of ``state`` with ``model.state_dict()``.

    Derived buffers (``relative_position_index``) are neither required nor
    loaded: the model rebuilds them for its own window.
    """
    target = {k: v for k, v in model.state_dict().items()
              if not DERIVED_KEY.search(k)}
    report = LoadReport()
    for key, value in state.items():
        if DERIVED_KEY.search(key):
            continue
        if key not in target:
            (report.ignored if _matches(key, ignore_keys)
             else report.unexpected).append(key)
        elif tuple(value.shape) != tuple(target[key].shape):
            report.mismatched.append(
                f'{key} {tuple(value.shape)} vs model '
                f'{tuple(target[key].shape)}')
        else:
            report.loaded.append(key)
    for key in target:
        if key not in state:
            (report.new if _matches(key, new_keys)
             else report.missing).append(key)
    return report


def load_backbone_checked(model: nn.Module,
                          checkpoint: Union[str, dict],
                          prefix: str = 'backbone.',
                          new_keys: Sequence[str] = (),
                          ignore_keys: Sequence[str] = (),
                          resize_rel_pos: bool = True,
                          logger: Optional[str] = 'current') -> LoadReport:
    """Load ``checkpoint`` into ``model``; raise unless it covers the model.

    Args:
        model: the backbone.
        checkpoint: a file path, or a loaded checkpoint / state dict.
        prefix: keys are taken from under this prefix (and it is stripped);
            ``''`` takes every key.
        new_keys: model keys (prefixes, or ``re:`` regexes) that are new
            downstream layers and may stay at their initialisation.
        ignore_keys: checkpoint keys (after the prefix) that may go unused.
        resize_rel_pos: resize relative position bias tables whose window
            differs from the model's.

    Returns:
        the :class:`LoadReport`.

    Raises:
        CheckpointKeyError: with the missing / unexpected / mismatched keys.
    """
    source = checkpoint if isinstance(checkpoint, str) else 'checkpoint'
    if isinstance(checkpoint, str):
        checkpoint = load_checkpoint_file(checkpoint)
    state = state_dict_of(checkpoint, source)
    if prefix:
        inside = {k[len(prefix):]: v for k, v in state.items()
                  if k.startswith(prefix)}
        if not inside:
            raise CheckpointKeyError(
                f'{source}: no key starts with prefix {prefix!r}, so nothing '
                f'would load. Checkpoint keys: {_fmt_keys(state)}. Use the '
                f'prefix these keys have (or prefix="" for a converted '
                f'backbone checkpoint without one).', list(
                    model.state_dict()), list(state), [])
        state = inside
    if resize_rel_pos:
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        state = resize_tables(
            state, shapes,
            log=lambda msg: print_log(msg, logger=logger))
    report = compare_state_dict(model, state, new_keys, ignore_keys)
    text = report.summary(f'{source} -> {type(model).__name__}')
    if not report.ok:
        raise CheckpointKeyError(
            f'pre-trained weights do not match the model, refusing to train '
            f'from a partly random backbone.\n{text}\nDeclare intentionally '
            f'new model keys in new_keys and unused checkpoint keys in '
            f'ignore_keys, or convert the checkpoint with '
            f'tools/model_converters/dtm_to_downstream.py.',
            report.missing, report.unexpected, report.mismatched)
    load = {k: state[k] for k in report.loaded}
    result = model.load_state_dict(load, strict=False)
    leftover = [k for k in result.missing_keys
                if not DERIVED_KEY.search(k) and k not in report.new]
    if leftover or result.unexpected_keys:  # a load hook dropped something
        raise CheckpointKeyError(
            f'{source}: load_state_dict left {_fmt_keys(leftover)} missing '
            f'and {_fmt_keys(result.unexpected_keys)} unexpected',
            leftover, list(result.unexpected_keys), [])
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

    def __call__(self, module: nn.Module) -> LoadReport:
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

    last_load_report: Optional[LoadReport] = None

    def init_weights(self) -> None:
        cfgs = self.init_cfg
        cfg_list = [cfgs] if isinstance(cfgs, dict) else list(cfgs or [])
        checked = [c for c in cfg_list if c.get('type') == 'CheckedPretrained']
        if not checked or getattr(self, '_is_init', False):
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
