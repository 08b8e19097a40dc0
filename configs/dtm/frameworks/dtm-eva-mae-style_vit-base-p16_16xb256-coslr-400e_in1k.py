# DTM plugged into MMPretrain's EVA (MAE-style MIM with CLIP targets).
# MAEViT encodes the visible 25% of the patches, MAEPretrainDecoder predicts
# the teacher's 512-d feature of all 196 patches; DTM partitions the patches
# by the teacher's features and compares group means of predictions and
# targets instead of single tokens. EVA's algorithm class is unchanged: it
# already hands the head the full (B, 196, 512) prediction grid and the mask.
#
# Changed from EVA's own config (diff it against the `_base_`):
#   * head: MIMHead(CosineSimilarityLoss) -> DTMHead(DTMLoss), with EVA's
#     distance (2 - 2 cos = 2 * 'cosine_distance');
#   * target_generator: MMPretrain's CLIPGenerator (a checkpoint URL) ->
#     CLIPTargetGenerator (open_clip ViT-B/16, frozen, not in checkpoints),
#     returning the (tokens with class token, attention) tuple EVA unpacks;
#   * find_unused_parameters: False (the new teacher has no trainable
#     parameters; every EVA parameter gets a gradient, tested).
_base_ = [
    'mmpretrain::eva/eva-mae-style_vit-base-p16_16xb256-coslr-400e_in1k.py'
]
custom_imports = dict(imports=['mmdtm'], allow_failed_imports=False)
runner_type = 'IsolatedRunner'  # per-run names (mmdtm.engine.runner)
# MMEngine tags the dicts of a base from another package with `_scope_`;
# the Runner passes that key on to `default_collate`, which rejects it.
# Restating the collate function untagged is the only data change.
train_dataloader = dict(collate_fn=dict(_delete_=True, type='default_collate'))

model = dict(
    head=dict(
        _delete_=True,
        type='DTMHead',
        loss=dict(
            type='DTMLoss',
            max_merge=[196, 196],  # n_l per level (DTM's defaults)
            max_iters=[14, 14],  # K_l per level
            # EVA's own distance: CosineSimilarityLoss(shift_factor=2,
            # scale_factor=2) = 2 * (1 - cos)
            distance='cosine_distance',
            loss_weight=2.0,
            # DTM's reference: all 196 patches, masked and visible. 'masked'
            # averages over masked patches only, as EVA's own loss does
            # (with it, r = 0 at every level is exactly EVA's loss).
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
