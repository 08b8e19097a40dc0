# A toy DTM config that trains on CPU in seconds: 64x64 images (4x4 patches),
# a 2-block 64-d student and a randomly initialised 2-block CLIP-style
# teacher. For tests and the demo; point `data_root` at any image folder.
_base_ = [
    '../_base_/models/dtm_vit-base-p16.py',
    '../_base_/default_runtime.py',
]
img_size = 64
grid = img_size // 16
data_root = 'data/toy'

model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=64, num_layers=2, num_heads=2,
            feedforward_channels=128),
        img_size=img_size,
        drop_path_rate=0.0),
    neck=dict(in_channels=64, out_channels=32),
    head=dict(loss=dict(max_merge=[grid * grid] * 2, max_iters=[4, 4])),
    target_generator=dict(
        pretrained=None,
        model_cfg=dict(
            embed_dim=32,
            vision_cfg=dict(
                image_size=img_size, layers=2, width=64, head_width=32,
                patch_size=16),
            text_cfg=dict(
                context_length=8, vocab_size=64, width=32, heads=2,
                layers=1))))

train_pipeline = [
    # SeedPerSample: each sample's augmentation is seeded from its place
    # in ResumableSampler's order, so a resumed run (any num_workers)
    # draws the same crops and masks.
    dict(type='SeedPerSample'),
    dict(type='SafeLoadImageFromFile', on_error='raise'),  # or 'skip'
    # the reference's order: jitter the whole image, flip, crop
    dict(
        type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4,
        hue=0.0),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        crop_ratio_range=(0.2, 1.0),
        interpolation='bicubic',
        backend='pillow'),
    dict(
        type='BlockMaskGenerator',
        input_size=(grid, grid),
        num_masking_patches=6,
        max_num_patches=6,
        min_num_patches=2),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    # ResumableSampler + ResumableIterBasedTrainLoop: exact, fast resume
    sampler=dict(type='ResumableSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        with_label=False,
        pipeline=train_pipeline))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.98), eps=1e-8,
        weight_decay=0.05),
    clip_grad=dict(max_norm=3.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=5,
         end=40),
]
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=40)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5),
    checkpoint=dict(
        type='SafeCheckpointHook', interval=20, by_epoch=False,
        max_keep_ckpts=2))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0, diff_rank_seed=True)
