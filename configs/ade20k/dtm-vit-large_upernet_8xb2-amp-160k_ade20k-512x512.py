# ADE20K UPerNet on a DTM ViT-L/16 (24 blocks), BEiT v2's ImageNet-1K ViT-L
# recipe (microsoft/unilm beit2/semantic_segmentation/configs/beit/upernet/
# upernet_beit_large_24_512_slide_160k_ade20k.py): features from blocks
# 8/12/16/24, drop path 0.2, layer decay 0.9, lr 4e-5; the rest (160k
# iterations, 8x2, 512 crops, poly with 1500 warm-up iterations, AdamW
# (0.9, 0.999), weight decay 0.05) as for ViT-B, which is also BEiT v2's.
# layer_scale_init_value only shapes the model: the gammas are loaded from
# the converted DTM ViT-L checkpoint (pre-trained with 1e-5).
_base_ = ['./dtm-vit-base_upernet_8xb2-amp-160k_ade20k-512x512.py']
pretrained = 'work_dirs/dtm/vitl_ade20k_backbone.pth'
embed_dims = 1024
model = dict(
    backbone=dict(
        arch='large', drop_path_rate=0.2, layer_scale_init_value=1e-5,
        out_indices=[7, 11, 15, 23],
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(embed_dim=embed_dims),
    decode_head=dict(in_channels=[embed_dims] * 4, channels=1024),
    auxiliary_head=dict(in_channels=embed_dims))
optim_wrapper = dict(
    optimizer=dict(lr=4e-5), paramwise_cfg=dict(layer_decay_rate=0.9))
