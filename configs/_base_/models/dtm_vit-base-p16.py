# DTM: BEiT-style ViT-B/16 student, frozen CLIP ViT-B/16 teacher
# (docs/method.md items 1-9). Reference defaults throughout.
model = dict(
    type='DTM',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='DTMPretrainViT',
        arch='base',
        patch_size=16,
        drop_path_rate=0.1,
        final_norm=True,
        out_type='raw',
        layer_scale_init_value=0.1,
        use_abs_pos_emb=False,
        # the reference adds a shared bias to every block's own bias
        use_rel_pos_bias=True,
        use_shared_rel_pos_bias=True,
        # the reference's init: N(0, 0.02) cut at +-0.02 (+-1 std), zero
        # biases; DTMPretrainViT also zeroes the relative position tables
        # and the q / v biases, draws the tokens the same way and divides
        # attn.proj / fc2 of block i by sqrt(2 i)
        init_std=0.02,
        init_cfg=[
            dict(type='TruncNormal', layer=['Linear', 'Conv2d'], std=0.02,
                 a=-0.02, b=0.02, bias=0.0),
            dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
        ]),
    neck=dict(type='DTMNeck', in_channels=768, out_channels=512),
    head=dict(
        type='DTMHead',
        loss=dict(
            type='DTMLoss',
            max_merge=[196, 196],  # n_l: tokens to merge at most, per level
            max_iters=[14, 14],  # K_l: matching rounds at most, per level
            count='merge',  # reference; 'remain' = the paper's reading
            guard='own',  # 'first' = the reference's n_1 guard (same here)
            protect_first=True,  # reference: patch 0 never merges
            split='alternate',  # reference; 'random' = the paper's split
            distance='smooth_l1',
            beta=2.0,
            reduction='all_tokens',  # reference; 'groups' = the paper's
            standardize_target=False,
            loss_weight=1.0)),
    target_generator=dict(
        type='CLIPTargetGenerator',
        # OpenAI's CLIP was trained with QuickGELU (the reference's
        # vqkd_teacher/clip/model.py); open_clip's plain 'ViT-B-16' builds
        # nn.GELU. OpenAI weights, as a tag or a local file, need this name.
        model_name='ViT-B-16-quickgelu',
        # an open_clip tag (downloaded when online) or a local weights file
        pretrained='openai',
        projected=True,
        input_norm='imagenet',  # reference; 'clip' renormalises to CLIP's
        autocast_dtype=None),  # inherit AMP; 'bf16'/'fp16' force it
)
