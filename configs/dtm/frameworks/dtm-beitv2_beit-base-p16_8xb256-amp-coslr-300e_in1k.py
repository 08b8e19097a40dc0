# DTM added on top of MMPretrain's BEiT v2: the loss is BEiT v2's own
# (loss_1 + loss_2: VQKD codes predicted from the final and the early-state
# features) plus a weighted DTM term (loss_dtm) on the student's final patch
# features, projected to CLIP space by a Linear(768, 512) (DTMNeck) and
# compared with a frozen CLIP ViT-B/16 teacher's targets of the student's
# view.
#
# Changed from BEiT v2's own config (diff it against the `_base_`):
#   * model.type: BEiT -> BEiTV2DTM (a subclass that changes only loss():
#     BEiT.loss has one target generator and one head and does not expose
#     the features, so no config can add a second teacher and loss term);
#   * three new parts: dtm_neck, dtm_head, dtm_target_generator;
#   * the mask generator: BlockMaskGenerator, BEiT's own (also the DTM
#     reference's), instead of MMPretrain's BEiTMaskGenerator, which never
#     masks the last row and column of the patch grid.
# Backbone, neck, head, VQKD tokenizer, augmentation, schedule: BEiT v2's.
_base_ = [
    'mmpretrain::beitv2/beitv2_beit-base-p16_8xb256-amp-coslr-300e_in1k.py'
]
custom_imports = dict(imports=['mmdtm'], allow_failed_imports=False)
runner_type = 'IsolatedRunner'  # per-run names (mmdtm.engine.runner)
# MMPretrain 1.2.0's BEiT v2 pipeline (configs/_base_/datasets/
# imagenet_bs256_beitv2.py) with its mask generator replaced.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4,
        hue=0.),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandomResizedCropAndInterpolationWithTwoPic',
        size=224,
        second_size=224,
        interpolation='bicubic',
        second_interpolation='bicubic',
        scale=(0.2, 1.0)),
    dict(
        type='BlockMaskGenerator',
        input_size=(14, 14),
        num_masking_patches=75,
        max_num_patches=75,
        min_num_patches=16),
    dict(type='PackInputs')
]
# MMEngine tags the dicts of a base from another package with `_scope_`;
# the Runner passes that key on to `default_collate`, which rejects it,
# so the collate function is restated untagged.
train_dataloader = dict(
    collate_fn=dict(_delete_=True, type='default_collate'),
    dataset=dict(pipeline=train_pipeline))

model = dict(
    type='BEiTV2DTM',
    # BEiTV2Neck's normed final features (B, 196, 768), class token dropped
    dtm_neck=dict(
        type='DTMNeck', in_channels=768, out_channels=512,
        num_extra_tokens=0),
    dtm_head=dict(
        type='DTMHead',
        loss=dict(
            type='DTMLoss',
            max_merge=[196, 196],  # DTM's defaults throughout
            max_iters=[14, 14],
            distance='smooth_l1',
            beta=2.0,
            reduction='all_tokens',
            loss_weight=1.0)),  # the weight of the DTM term
    dtm_target_generator=dict(
        type='CLIPTargetGenerator',
        # QuickGELU, as OpenAI's CLIP was trained (and as MMPretrain's own
        # CLIPGenerator builds it); plain 'ViT-B-16' is nn.GELU
        model_name='ViT-B-16-quickgelu',
        # an open_clip tag (downloaded when online) or a local weights file
        pretrained='openai'))
