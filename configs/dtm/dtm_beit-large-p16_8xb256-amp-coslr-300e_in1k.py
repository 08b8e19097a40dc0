# DTM ViT-L/16 (1024-d, 24 blocks), CLIP ViT-B/16 teacher. Layer scale 1e-5
# (the reference's --layer_scale_init_value help: "0.1 for base, 1e-5 for
# large"); drop path 0.1 (its --drop_path default, also BEiT v2's ViT-L
# pre-training command).
_base_ = ['./dtm_beit-base-p16_8xb256-amp-coslr-300e_in1k.py']
model = dict(
    backbone=dict(arch='large', layer_scale_init_value=1e-5,
                  drop_path_rate=0.1),
    neck=dict(in_channels=1024))
