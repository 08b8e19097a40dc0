"""Features the installed torch lacks: one logged line each, then go on.

mmdtm runs on torch 2.1 and newer (README, "The stack"). Where a feature
needs a newer torch (fused AdamW on CPU: 2.4; the ``torch.load`` allow-list
API: 2.4/2.5), the code that wants it probes for it, takes the older path
and says so through :func:`log_once`: one line per feature and process.
"""
import logging
from typing import Set

_TOLD: Set[str] = set()


def log_once(key: str, message: str) -> bool:
    """Log ``message`` (warning) the first time ``key`` is seen in this
    process. Returns whether it was logged."""
    if key in _TOLD:
        return False
    _TOLD.add(key)
    from mmengine.logging import print_log
    print_log(message, logger='current', level=logging.WARNING)
    return True
