# ImageNet-1K fine-tuning of a DTM ViT-B/16 (docs/method.md item 11):
# 100 epochs, batch 8 x 128 = 1024, AdamW lr 5e-4, layer decay 0.65 through
# LeanLayerDecayOptimWrapperConstructor (MMPretrain's layer-decay settings,
# one parameter group per (layer, decay), fused AdamW), drop path 0.1,
# mixup 0.8, cutmix 1.0, label smoothing 0.1, RandAugment (m9, mstd 0.5,
# increasing), random erasing 0.25, mean pooling of patch tokens, head
# initialised at 0.001 scale (the reference's --init_scale).
#
# `pretrained` is the output of
#   python tools/model_converters/dtm_to_downstream.py PRETRAIN.pth \
#       work_dirs/dtm/vitb_finetune_backbone.pth --config THIS_CONFIG
# which folds the pre-trained shared relative position bias into every
# block's own (exactly the bias the student used) and drops the mask token
# and the final norm. `CheckedPretrained` then refuses to start unless every
# backbone weight loads; only `ln2` (the norm after mean pooling) is new.
_base_ = ['../../_base_/default_runtime.py']

pretrained = 'work_dirs/dtm/vitb_finetune_backbone.pth'
num_classes = 1000
img_size = 224
bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        num_classes=num_classes,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='DTMViT',
        arch='base',
        img_size=img_size,
        patch_size=16,
        drop_path_rate=0.1,
        out_type='avg_featmap',  # mean pooling of patch tokens, then LN
        final_norm=False,
        use_abs_pos_emb=False,
        use_rel_pos_bias=True,
        use_shared_rel_pos_bias=False,
        layer_scale_init_value=0.1,
        init_cfg=dict(
            type='CheckedPretrained',
            checkpoint=pretrained,
            prefix='backbone.',
            new_keys=['ln2.'])),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=768,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        # the reference's head: N(0, 0.02), then weight and bias times
        # init_scale = 0.001 (run_class_finetuning.py --init_scale)
        init_cfg=[
            dict(type='TruncNormal', layer='Linear', std=0.02),
            dict(type='Scale', layer='Linear', scale=0.001)
        ]),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(
            pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=int(img_size * 256 / 224),
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=128,
    # the reference drops the last incomplete batch (run_class_finetuning.py):
    # 1,251 iterations per epoch at 8 x 128 on ImageNet-1K
    drop_last=True,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ImageNet',
        data_root='data/imagenet',
        split='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ImageNet',
        data_root='data/imagenet',
        split='val',
        pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW', lr=5e-4, weight_decay=0.05, eps=1e-8,
        betas=(0.9, 0.999)),
    constructor='LeanLayerDecayOptimWrapperConstructor',
    # weight decay as the reference: none on 1-D parameters and biases, nor
    # on cls_token / pos_embed (its model's no_weight_decay()); the relative
    # position tables and the head's weight decay
    paramwise_cfg=dict(
        layer_decay_rate=0.65,
        flat_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            'backbone.cls_token': dict(decay_mult=0.0),
            'backbone.pos_embed': dict(decay_mult=0.0),
        }))

warmup_epochs = 20
max_epochs = 100
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    # The reference ends every parameter group at min_lr = 1e-6 times its
    # layer-decay scale (its schedule times lr_scale, engine_for_finetuning
    # .py), a floor relative to each group's own peak lr x scale: hence
    # eta_min_ratio = min_lr / lr, not one absolute eta_min for all groups.
    # With another lr, set eta_min_ratio = 1e-6 / lr for the same floor.
    dict(
        type='CosineAnnealingLR',
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        eta_min_ratio=1e-6 / 5e-4,
        convert_to_iter_based=True)
]
# MMEngine's EpochBasedTrainLoop that also resumes in the middle of an epoch
# (from a pre-emption checkpoint: docs/reliability.md)
train_cfg = dict(
    type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs,
    val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2,
                    save_best='auto'))
randomness = dict(seed=0)
