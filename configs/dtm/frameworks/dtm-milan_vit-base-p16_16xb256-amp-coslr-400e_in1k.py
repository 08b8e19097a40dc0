# DTM plugged into MMPretrain's MILAN (CLIP targets, attention-guided
# masking). MILANViT keeps the patches the CLIP class token attends to most,
# MILANPretrainDecoder predicts the teacher's 512-d feature of the class
# token and all 196 patches; DTM morphs predictions and targets with one
# partition (from the teacher) before the loss. MILAN's algorithm class is
# unchanged.
#
# MILAN's loss covers all 197 tokens, the class token included, and MILAN
# passes no mask to its head. DTMLoss sees the same 197 tokens; with
# protect_first=True the class token (position 0) never merges, so it stays
# a token-wise term while the 196 patches morph, and r = 0 at every level is
# exactly MILAN's loss (tested).
#
# Changed from MILAN's own config (diff it against the `_base_`):
#   * head: MIMHead(CosineSimilarityLoss) -> DTMHead(DTMLoss), with MILAN's
#     distance (2 - 2 cos = 2 * 'cosine_distance');
#   * target_generator: MMPretrain's CLIPGenerator (a checkpoint URL) ->
#     CLIPTargetGenerator returning the (tokens with class token, last-block
#     attention) tuple MILAN unpacks (the attention drives its masking);
#   * find_unused_parameters: False (the new teacher has no trainable
#     parameters; every MILAN parameter gets a gradient, tested).
#   * neck.embed_dim=768: MMPretrain 1.2.0's MILAN config leaves the decoder
#     at its default embed_dim=1024, which does not fit the ViT-B encoder
#     (768): its first training step fails with a shape error. Not a DTM
#     change, a fix without which the variant cannot run.
_base_ = [
    'mmpretrain::milan/milan_vit-base-p16_16xb256-amp-coslr-400e_in1k.py'
]
custom_imports = dict(imports=['mmdtm'], allow_failed_imports=False)
runner_type = 'IsolatedRunner'  # per-run names (mmdtm.engine.runner)
# MMEngine tags the dicts of a base from another package with `_scope_`;
# the Runner passes that key on to `default_collate`, which rejects it.
# Restating the collate function untagged is the only data change.
train_dataloader = dict(collate_fn=dict(_delete_=True, type='default_collate'))

model = dict(
    neck=dict(embed_dim=768),  # the encoder's width (see above)
    head=dict(
        _delete_=True,
        type='DTMHead',
        loss=dict(
            type='DTMLoss',
            max_merge=[196, 196],  # n_l per level (DTM's defaults)
            max_iters=[14, 14],  # K_l per level
            protect_first=True,  # position 0 is MILAN's class token
            # MILAN's own distance: CosineSimilarityLoss(shift_factor=2,
            # scale_factor=2) = 2 * (1 - cos)
            distance='cosine_distance',
            loss_weight=2.0,
            # all tokens, as MILAN's own loss ('masked' needs a mask, which
            # MILAN does not pass)
            reduction='all_tokens')),
    target_generator=dict(
        _delete_=True,
        # the tuple (tokens with class token, last-block attention) that
        # MMPretrain's CLIPGenerator returns and its EVA / MILAN unpack
        type='CLIPTokensAttentionGenerator',
        # QuickGELU, as OpenAI's CLIP was trained (and as MMPretrain's own
        # CLIPGenerator builds it); plain 'ViT-B-16' is nn.GELU
        model_name='ViT-B-16-quickgelu',
        # an open_clip tag (downloaded when online) or a local weights file
        pretrained='openai'))

find_unused_parameters = False
