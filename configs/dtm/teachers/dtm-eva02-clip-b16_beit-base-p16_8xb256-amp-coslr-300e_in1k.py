# DTM ViT-B/16 (300 epochs, IN-1K) with a frozen EVA02-CLIP B/16 teacher
# instead of OpenAI CLIP ViT-B/16. Only the teacher changes.
#   * targets: the timm EVA02 trunk's normed final patch tokens through its
#     linear head (the CLIP projection, 768 -> 512), token-wise: 512-d, as
#     with OpenAI CLIP, so the neck keeps out_channels=512;
#   * 224 px / patch 16 = the student's 14x14 grid: no grid matching;
#   * input_norm='teacher': EVA-CLIP's own (OpenAI CLIP) mean/std.
_base_ = ['../dtm_beit-base-p16_8xb256-amp-coslr-300e_in1k.py']
model = dict(
    neck=dict(out_channels=512),  # checked against the teacher at build
    target_generator=dict(
        _delete_=True,
        type='CLIPTargetGenerator',
        model_name='EVA02-B-16',
        # an open_clip tag (downloaded when online) or a local weights file
        pretrained='merged2b_s8b_b131k',
        projected=True,
        input_norm='teacher',
        autocast_dtype=None))
