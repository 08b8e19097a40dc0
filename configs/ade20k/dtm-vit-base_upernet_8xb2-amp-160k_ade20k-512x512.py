# ADE20K semantic segmentation: UPerNet on a DTM ViT-B/16, BEiT v2's
# ImageNet-1K ViT-B recipe (microsoft/unilm beit2/semantic_segmentation/
# configs/beit/upernet/upernet_beit_base_12_512_slide_160k_ade20k.py, the
# lineage DTM reports): 512x512 crops, 160k iterations, 8 GPUs x 2 images,
# AdamW lr 5e-5, betas (0.9, 0.999), weight decay 0.05 (none on 1-D
# parameters and biases), layer-wise lr decay 0.75, drop path 0.15, poly
# schedule over all 160k iterations times a 1500-iteration linear warm-up
# (mmcv 1.x's), AMP through AmpOptimWrapper, slide inference, IoUMetric
# (mIoU); the ADE20K dataset with reduce_zero_label (label 0 = "other" is
# ignored).
#
# Runs with MMSegmentation's own tools (mim train mmsegmentation / its
# tools/train.py); `custom_imports` loads mmdtm, which registers
#   - `DTMViT` (MMPretrain's BEiTViT with checked loading; out_type='featmap'
#     gives the 4 feature maps UPerNet needs),
#   - `CheckedPretrained` (fails with the key lists unless every backbone
#     weight loads),
#   - `LeanLayerDecayOptimWrapperConstructor` (layer decay for any
#     backbone; MMSegmentation's own one only accepts class names containing
#     BEiT, MAE or ConvNeXt; one parameter group per (layer, decay)).
# `pretrained` is the output of
#   python tools/model_converters/dtm_to_downstream.py PRETRAIN.pth \
#       work_dirs/dtm/vitb_ade20k_backbone.pth --config THIS_CONFIG
# (relative position bias tables resized from the 14x14 to the 32x32 window).
_base_ = [
    'mmseg::_base_/models/upernet_mae.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmdtm'], allow_failed_imports=False)
runner_type = 'IsolatedRunner'  # per-run names (mmdtm.engine.runner)

pretrained = 'work_dirs/dtm/vitb_ade20k_backbone.pth'
crop_size = (512, 512)
embed_dims = 768
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmpretrain.DTMViT',
        arch='base',
        img_size=crop_size[0],
        patch_size=16,
        drop_path_rate=0.15,
        out_indices=[3, 5, 7, 11],
        out_type='featmap',
        final_norm=False,
        use_abs_pos_emb=False,
        use_rel_pos_bias=True,
        use_shared_rel_pos_bias=False,
        layer_scale_init_value=0.1,
        init_cfg=dict(
            type='CheckedPretrained', checkpoint=pretrained,
            prefix='backbone.')),
    neck=dict(embed_dim=embed_dims, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(
        in_channels=[embed_dims] * 4, num_classes=150, channels=768),
    auxiliary_head=dict(in_channels=embed_dims, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW', lr=5e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LeanLayerDecayOptimWrapperConstructor',
    # BEiT v2's LayerDecayOptimizerConstructor: no decay on 1-D parameters
    # (norms, the heads' BatchNorms, q / v biases, gammas) and biases; its
    # ('pos_embed', 'cls_token') exemption compares against prefixed names
    # (backbone.cls_token) and never matches, so cls_token decays here too
    paramwise_cfg=dict(
        layer_decay_rate=0.75, flat_decay_mult=0.0, bias_decay_mult=0.0))
# BEiT v2's mmcv 1.x schedule, lr_config=dict(policy='poly', power=1.0,
# min_lr=0.0, warmup='linear', warmup_iters=1500, warmup_ratio=1e-6): at
# iteration t, lr x (1 - t / 160000) over the whole run from t = 0, times
# (1e-6 + (1 - 1e-6) t / 1500) while t < 1500. MMEngine chains schedulers
# active at the same iteration multiplicatively, which gives exactly this
# product when eta_min = 0. Its LinearLR / PolyLR reach their end value
# after end - begin - 1 steps, hence end = 1500 + 1 and 160000 + 1 (mmcv
# divides by warmup_iters and max_iters).
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500 + 1),
    dict(
        type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0,
        end=160000 + 1),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
