from .checkpoint_hook import CheckpointSaveError, SafeCheckpointHook
from .nonfinite_loss_hook import NonFiniteLossHook
from .strict_load_hook import (CheckpointMismatchError, StrictLoadHook,
                               check_state_dict)

__all__ = ['SafeCheckpointHook', 'CheckpointSaveError', 'NonFiniteLossHook',
           'StrictLoadHook', 'CheckpointMismatchError', 'check_state_dict']
