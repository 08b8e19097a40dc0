# DTM ViT-B/16, 300 epochs on ImageNet-1K, 8 GPUs x 256 = 2048 images/step.
_base_ = [
    '../_base_/models/dtm_vit-base-p16.py',
    '../_base_/datasets/imagenet_bs256_dtm.py',
    '../_base_/schedules/adamw_coslr_dtm.py',
    '../_base_/default_runtime.py',
]
default_hooks = dict(
    checkpoint=dict(type='SafeCheckpointHook', interval=10, max_keep_ckpts=3))
