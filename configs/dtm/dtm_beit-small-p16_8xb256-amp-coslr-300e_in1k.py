# DTM ViT-S/16 (384-d, 12 blocks, 6 heads), CLIP ViT-B/16 teacher.
_base_ = ['./dtm_beit-base-p16_8xb256-amp-coslr-300e_in1k.py']
model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=384, num_layers=12, num_heads=6,
            feedforward_channels=1536)),
    neck=dict(in_channels=384))
