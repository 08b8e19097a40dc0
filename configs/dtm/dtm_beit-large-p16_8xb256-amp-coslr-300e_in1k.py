# DTM ViT-L/16 (1024-d, 24 blocks), CLIP ViT-B/16 teacher; layer scale 1e-5
# and drop path 0.2 are the usual BEiT settings for large models.
_base_ = ['./dtm_beit-base-p16_8xb256-amp-coslr-300e_in1k.py']
model = dict(
    backbone=dict(arch='large', layer_scale_init_value=1e-5,
                  drop_path_rate=0.2),
    neck=dict(in_channels=1024))
