# ImageNet-1K fine-tuning of a DTM ViT-L/16 (24 blocks). The reference gives
# no ViT-L command; these are BEiT v2's ViT-L fine-tuning settings for
# pre-trained models (microsoft/unilm beit2/get_started_for_image_
# classification.md): 50 epochs, layer decay 0.8, drop path 0.2, lr 5e-4
# (300-epoch pre-training), 5 warm-up epochs (its only ViT-L warm-up); the
# rest as for ViT-B.
_base_ = ['./vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py']
pretrained = 'work_dirs/dtm/vitl_finetune_backbone.pth'
model = dict(
    backbone=dict(
        arch='large', drop_path_rate=0.2, layer_scale_init_value=1e-5,
        init_cfg=dict(checkpoint=pretrained)),
    head=dict(in_channels=1024))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8))
warmup_epochs = 5
max_epochs = 50
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0,
         end=warmup_epochs, convert_to_iter_based=True),
    # floor min_lr x each group's scale, as for ViT-B (min_lr 1e-6, lr 5e-4)
    dict(type='CosineAnnealingLR', by_epoch=True, begin=warmup_epochs,
         end=max_epochs, eta_min_ratio=1e-6 / 5e-4,
         convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=max_epochs)
