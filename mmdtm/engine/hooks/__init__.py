from .checkpoint_hook import CheckpointSaveError, SafeCheckpointHook
from .nonfinite_loss_hook import NonFiniteLossHook
from .preemption_hook import (PREEMPTED_EXIT_CODE, Preempted,
                              PreemptionHook, failures_end_preemption)
from .strict_load_hook import StrictLoadHook, check_state_dict

__all__ = ['SafeCheckpointHook', 'CheckpointSaveError', 'NonFiniteLossHook',
           'StrictLoadHook', 'check_state_dict', 'PreemptionHook', 'Preempted',
           'PREEMPTED_EXIT_CODE', 'failures_end_preemption']
