# ImageNet-1K pre-training data for DTM, as the reference
# (naver-ai/dtm utils/datasets.py, DataAugmentationForBEiT): ColorJitter 0.4
# on the whole image, horizontal flip, RandomResizedCrop (bicubic), then
# block-wise masking of 75 of 196 patches by the reference's generator
# (BlockMaskGenerator: blocks reach the last row and column, unlike
# MMPretrain's BEiTMaskGenerator). The teacher sees the student's view.
dataset_type = 'ImageNet'
data_root = 'data/imagenet/'

train_pipeline = [
    # SeedPerSample: each sample's augmentation is seeded from its place
    # in ResumableSampler's order, so a resumed run (any num_workers)
    # draws the same crops and masks.
    dict(type='SeedPerSample'),
    dict(type='SafeLoadImageFromFile', on_error='raise'),  # or 'skip'
    # jitter before the crop: contrast and saturation are computed against
    # the whole image's mean, as in the reference
    dict(
        type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4,
        hue=0.0),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.2, 1.0),
        interpolation='bicubic',
        backend='pillow'),
    dict(
        type='BlockMaskGenerator',
        input_size=(14, 14),
        num_masking_patches=75,
        max_num_patches=None,  # = num_masking_patches (the reference's)
        min_num_patches=16),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=256,
    # the reference drops the last incomplete batch (run_pretrain_dtm.py):
    # 625 iterations per epoch at 8 x 256 on ImageNet-1K's 1,281,167 images
    drop_last=True,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='ResumableSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline))
