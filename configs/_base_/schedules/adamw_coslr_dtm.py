# DTM optimisation (docs/method.md item 10): AdamW, lr 1.5e-3 for a total
# batch of 2048 (the reference scales it by sqrt(total_batch / 2048)),
# betas (0.9, 0.98), weight decay 0.05, gradient clip 3.0, 10 warm-up epochs,
# cosine to 1e-5. AMP through AmpOptimWrapper. LeanOptimWrapperConstructor:
# the paramwise_cfg's per-parameter settings in one group per distinct set
# (decay / no decay), fused AdamW, foreach clipping.
# Weight decay as the reference's optimizer factory: no decay on every 1-D
# parameter (biases, norms, q / v biases, layer-scale gammas), on every
# bias, and on the names its model's no_weight_decay() lists (cls_token,
# pos_embed); everything else decays, mask_token and the relative position
# bias tables included.
max_epochs = 300
warmup_epochs = 10
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW', lr=1.5e-3, betas=(0.9, 0.98), eps=1e-8,
        weight_decay=0.05),
    clip_grad=dict(max_norm=3.0),
    constructor='LeanOptimWrapperConstructor',
    paramwise_cfg=dict(
        flat_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            'backbone.cls_token': dict(decay_mult=0.0),
            'backbone.pos_embed': dict(decay_mult=0.0),
        }))

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs)
# MMPretrain's --auto-scale-lr scales linearly from this batch; the
# reference's sqrt rule is lr = 1.5e-3 * sqrt(total_batch / 2048).
auto_scale_lr = dict(base_batch_size=2048)
