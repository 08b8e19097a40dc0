# ADE20K UPerNet on a DTM ViT-L/16 (24 blocks): features from blocks
# 8/12/16/24, drop path 0.2, layer decay 0.9 (deeper backbone), lr 5e-5;
# the rest as for ViT-B.
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
    optimizer=dict(lr=5e-5), paramwise_cfg=dict(layer_decay_rate=0.9))
