# ImageNet-1K fine-tuning of a DTM ViT-S/16 (384-d, 12 blocks, 6 heads; the
# student of dtm_beit-small-p16_8xb256-amp-coslr-300e_in1k.py) with the
# ViT-B recipe (100 epochs, layer decay 0.65, drop path 0.1).
_base_ = ['./vit-base-p16_dtm-pre_8xb128-amp-coslr-100e_in1k.py']
pretrained = 'work_dirs/dtm/vits_finetune_backbone.pth'
model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=384, num_layers=12, num_heads=6,
            feedforward_channels=1536),
        init_cfg=dict(checkpoint=pretrained)),
    head=dict(in_channels=384))
