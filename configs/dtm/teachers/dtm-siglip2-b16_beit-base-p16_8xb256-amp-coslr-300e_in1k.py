# DTM ViT-B/16 (300 epochs, IN-1K) with a frozen SigLIP 2 B/16 teacher
# instead of OpenAI CLIP ViT-B/16. Only the teacher and the neck width change.
#   * targets: the timm trunk's normed final patch tokens, 768-d. SigLIP's
#     attention-pool (MAP) head acts on the pooled token only, so there is
#     no token-wise projection (`projected` changes nothing);
#   * 224 px / patch 16 = the student's 14x14 grid: no grid matching;
#   * input_norm='teacher': SigLIP's own mean/std (0.5, 0.5); the
#     reference's 'imagenet' (student view as is) is CLIP-specific.
_base_ = ['../dtm_beit-base-p16_8xb256-amp-coslr-300e_in1k.py']
model = dict(
    neck=dict(out_channels=768),  # checked against the teacher at build
    target_generator=dict(
        _delete_=True,
        type='CLIPTargetGenerator',
        model_name='ViT-B-16-SigLIP2',
        # an open_clip tag (downloaded when online) or a local weights file
        pretrained='webli',
        projected=True,
        input_norm='teacher',
        autocast_dtype=None))
