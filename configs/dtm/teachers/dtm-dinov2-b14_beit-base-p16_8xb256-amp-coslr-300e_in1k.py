# DTM ViT-B/16 (300 epochs, IN-1K) with a frozen DINOv2 ViT-B/14 teacher
# (timm `vit_base_patch14_dinov2`, no registers) instead of CLIP ViT-B/16.
#   * targets: the final patch tokens after DINOv2's last norm, class token
#     dropped, 768-d (no projection: DINOv2 has no image-text space);
#   * patch 14 against the student's 16: the teacher's input is resized to
#     14 x 14 patches = 196 px (its position embedding resampled once at
#     build time), as the dBOT and iTPN recipes do for a /14 teacher of a
#     /16 student (`--second_input_size 196`);
#   * input_norm='teacher': DINOv2's own (ImageNet) mean/std.
_base_ = ['../dtm_beit-base-p16_8xb256-amp-coslr-300e_in1k.py']
model = dict(
    neck=dict(out_channels=768),  # checked against the teacher at build
    target_generator=dict(
        _delete_=True,
        type='TimmTargetGenerator',
        model_name='vit_base_patch14_dinov2',
        # a timm tag (downloaded when online) or a local weights file
        pretrained='lvd142m',
        grid_match='resize_input',
        out_grid=(14, 14),  # the student's grid: 224 px / patch 16
        input_norm='teacher',
        autocast_dtype=None))
