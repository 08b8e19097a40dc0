"""The one key-by-key comparison of a checkpoint with a model, and the one
error for "these keys do not fit".

Used by ``StrictLoadHook`` (``load_from`` / resume), ``CheckedPretrained``
(``init_cfg``) and the converters. Key patterns (``allow_missing`` /
``allow_unexpected``; ``new_keys`` / ``ignore_keys`` in ``CheckedPretrained``)
are regular expressions matched at the start of the key (``re.match``), so
a plain prefix such as ``'ln2.'`` works as one.
"""
import re
from dataclasses import dataclass, field
from typing import Iterable, List, Mapping, Sequence

#: Buffers that are a pure function of the window size; models rebuild them.
DERIVED_KEY = re.compile(r'(^|\.)relative_position_index$')


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit: wrong keys or shapes, or no tensors where
    they were expected. ``missing``, ``unexpected`` and ``mismatched`` hold
    the offending keys (empty when the problem is not about keys)."""

    def __init__(self, message: str, missing: Sequence[str] = (),
                 unexpected: Sequence[str] = (),
                 mismatched: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing, self.unexpected = list(missing), list(unexpected)
        self.mismatched = list(mismatched)


def format_keys(keys: Iterable[str], limit: int = 40) -> str:
    """``[a, b, ...]`` sorted, at most ``limit`` shown."""
    keys = sorted(keys)
    more = f' ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return '[' + ', '.join(keys[:limit]) + more + ']'


def matches(key: str, patterns: Sequence[str]) -> bool:
    """``key`` matches one of ``patterns`` at its start (``re.match``)."""
    return any(re.match(p, key) for p in patterns)


@dataclass
class KeyReport:
    """A checkpoint compared with a model, key by key (derived buffers such
    as ``relative_position_index`` are left out: models rebuild them)."""
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)
    allowed_missing: List[str] = field(default_factory=list)
    allowed_unexpected: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, source: str = '') -> str:
        """One line of counts, then one line per non-empty key list."""
        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
        lines = [f'{source}: loaded {len(self.loaded)}/{total} tensors; '
                 f'missing {len(self.missing)}, unexpected '
                 f'{len(self.unexpected)}, shape mismatch '
                 f'{len(self.mismatched)}']
        for name, label in (('missing', 'missing keys'),
                            ('unexpected', 'unexpected keys'),
                            ('mismatched', 'shape mismatches'),
                            ('allowed_missing', 'allowed missing keys'),
                            ('allowed_unexpected', 'allowed unexpected keys')):
            keys = getattr(self, name)
            if keys:
                lines.append(f'  {label} ({len(keys)}): {format_keys(keys)}')
        return '\n'.join(lines)

    def error(self, message: str) -> CheckpointMismatchError:
        """``message`` and :meth:`summary`'s lists, with the keys attached."""
        return CheckpointMismatchError(message, self.missing,
                                       self.unexpected, self.mismatched)


def compare_state_dict(model_state: Mapping, ckpt_state: Mapping,
                       allow_missing: Sequence[str] = (),
                       allow_unexpected: Sequence[str] = ()) -> KeyReport:
    """Compare ``ckpt_state`` with ``model_state`` (a ``state_dict()``).

    Args:
        model_state: name -> tensor of the model.
        ckpt_state: name -> tensor of the checkpoint.
        allow_missing: patterns of model keys the checkpoint may lack (new
            layers that keep their initialisation).
        allow_unexpected: patterns of checkpoint keys the model may lack.
    """
    target = {k: v for k, v in model_state.items()
              if not DERIVED_KEY.search(k)}
    report = KeyReport()
    for key, value in ckpt_state.items():
        if DERIVED_KEY.search(key):
            continue
        if key not in target:
            (report.allowed_unexpected if matches(key, allow_unexpected)
             else report.unexpected).append(key)
        elif (hasattr(value, 'shape') and hasattr(target[key], 'shape')
              and tuple(value.shape) != tuple(target[key].shape)):
            report.mismatched.append(
                f'{key}: checkpoint {tuple(value.shape)} vs model '
                f'{tuple(target[key].shape)}')
        else:
            report.loaded.append(key)
    for key in target:
        if key not in ckpt_state:
            (report.allowed_missing if matches(key, allow_missing)
             else report.missing).append(key)
    return report
