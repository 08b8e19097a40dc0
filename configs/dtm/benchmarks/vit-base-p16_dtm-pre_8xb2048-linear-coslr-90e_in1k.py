# Linear probing of a DTM ViT-B/16 on ImageNet-1K: the backbone is frozen
# (all 12 blocks and the final norm), the patch tokens are mean-pooled, then
# a parameter-free LayerNorm and BatchNorm (no affine) feed one linear layer.
# LARS lr 6.4 for 8 x 2048 = 16384 images per step, 90 epochs (10 warm-up),
# RandomResizedCrop + flip only: MMPretrain's MAE linear-probing recipe.
#
# Convert with
#   python tools/model_converters/dtm_to_downstream.py PRETRAIN.pth \
#       work_dirs/dtm/vitb_linear_backbone.pth --config THIS_CONFIG
# (keeps the pre-trained final norm, which this config uses).
_base_ = ['./vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py']

pretrained = 'work_dirs/dtm/vitb_linear_backbone.pth'
model = dict(
    backbone=dict(
        drop_path_rate=0.0,
        final_norm=True,
        frozen_stages=12,
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(_delete_=True, type='ClsBatchNormNeck', input_features=768),
    head=dict(
        loss=dict(_delete_=True, type='CrossEntropyLoss'),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=0.01)]),
    train_cfg=dict(_delete_=True))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=2048, drop_last=True, dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='LARS', lr=6.4, weight_decay=0.0, momentum=0.9))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=10,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=80, by_epoch=True, begin=10,
         end=90, eta_min=0.0, convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=90)  # the base's ResumableEpochBasedTrainLoop
auto_scale_lr = dict(base_batch_size=16384)
