# The `make demo` config: a short DTM pre-training on the eleven public-domain
# / CC0 photographs in demo/images/, on CPU in a few minutes. 128x128 images
# (8x8 = 64 patch tokens), a 4-block 64-d student and a randomly initialised
# 2-block CLIP-style teacher (no weights are downloaded; the run says so).
# With CLIP weights: set model.target_generator.model_name / pretrained and
# drop model_cfg (the student must then match the teacher's patch grid).
_base_ = ['./dtm_vit-tiny-p16_1xb8-40iter_toy.py']
img_size = 128
grid = img_size // 16
max_iters = 300
data_root = 'demo/images'

model = dict(
    backbone=dict(arch=dict(num_layers=4), img_size=img_size),
    head=dict(loss=dict(max_merge=[grid * grid] * 2, max_iters=[8, 8])),
    target_generator=dict(
        pretrained=None,
        model_cfg=dict(vision_cfg=dict(image_size=img_size))))

train_pipeline = [
    dict(type='SafeLoadImageFromFile', on_error='raise'),  # names bad files
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
        num_masking_patches=24,  # 75/196 of the patches, as for ViT-B/16
        max_num_patches=None,
        min_num_patches=4),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=16,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(data_root=data_root, pipeline=train_pipeline))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
         end=max_iters // 10),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False,
         begin=max_iters // 10, end=max_iters),
]
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(
        type='SafeCheckpointHook', interval=max_iters, by_epoch=False,
        max_keep_ckpts=1))
randomness = dict(seed=0, diff_rank_seed=True)
# progress as "Iter(train) [ 120/300] ... eta: 0:01:02"
log_processor = dict(window_size=10, by_epoch=False)
