# Runtime shared by every mmdtm MMPretrain config.
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmdtm'], allow_failed_imports=False)
# IsolatedRunner: MMEngine's Runner, but two runs started within the same
# second in one process get their own log dir, logger, message hub and
# visualizer (MMEngine names them by the second). tools/train.py builds it.
runner_type = 'IsolatedRunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # SafeCheckpointHook: atomic writes (tmp + rename) and every rank's RNG
    # states in the checkpoint, for exact resume (docs/reliability.md).
    checkpoint=dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
    # PreemptionHook: on these signals every rank stops after the same
    # iteration, the checkpoint of that iteration is written and
    # tools/train.py exits with code 75 (resume with --resume auto).
    # Some NCCL releases caught SIGUSR1 (NVIDIA/nccl issue 704): then use
    # SIGUSR2 here and in Slurm's --signal (README, "Pre-emption").
    preemption=dict(type='PreemptionHook', signals=('SIGTERM', 'SIGUSR1')),
)
# NonFiniteLossHook: action='stop' raises naming the iteration before the
# optimizer step ('skip': skip such steps and count them, max_skips=None).
# StrictLoadHook: load_from / resume fail on a checkpoint of another model,
# listing missing / unexpected keys (allow_missing / allow_unexpected:
# regular expressions of keys that may differ).
custom_hooks = [
    dict(type='NonFiniteLossHook', action='stop'),
    dict(type='StrictLoadHook'),
]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # timeout (s): a collective that waits longer (a peer hung or its node
    # lost) fails and names the lost ranks instead of hanging for ever.
    dist_cfg=dict(backend='nccl', timeout=1800),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
# seed=None: the Runner draws one seed and shares it across processes.
randomness = dict(seed=None, deterministic=False)
