"""Training machinery: the runner, optimizer constructors, exact-resume
loops, crash-safe checkpoints and guards against bad input."""
from .hooks import (PREEMPTED_EXIT_CODE, CheckpointSaveError,
                    NonFiniteLossHook, Preempted, PreemptionHook,
                    SafeCheckpointHook, StrictLoadHook, check_state_dict)
from .layer_decay import BackboneLayerDecayOptimWrapperConstructor
from .lean_optim import (LeanLayerDecayOptimWrapperConstructor,
                         LeanOptimWrapperConstructor, merge_param_groups)
from .loops import (ResumableEpochBasedTrainLoop, ResumableIterBasedTrainLoop,
                    resumes_mid_epoch)
from .rng import get_rng_state, set_rng_state
from .runner import IsolatedRunner, build_runner
from .schedules import shorten_schedule

__all__ = [
    'SafeCheckpointHook', 'BackboneLayerDecayOptimWrapperConstructor',
    'LeanLayerDecayOptimWrapperConstructor', 'LeanOptimWrapperConstructor',
    'merge_param_groups', 'NonFiniteLossHook', 'StrictLoadHook',
    'check_state_dict', 'ResumableIterBasedTrainLoop',
    'ResumableEpochBasedTrainLoop', 'resumes_mid_epoch', 'get_rng_state',
    'set_rng_state', 'IsolatedRunner', 'build_runner', 'CheckpointSaveError',
    'shorten_schedule', 'PreemptionHook', 'Preempted', 'PREEMPTED_EXIT_CODE'
]
