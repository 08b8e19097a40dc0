"""Tiny backbones and checkpoints for the checkpoint, engine, dataset and
config tests of the transfer path (pre-training -> downstream)."""
import torch

TINY_ARCH = dict(embed_dims=64, num_layers=2, num_heads=2,
                 feedforward_channels=128)


def tiny_student(img_size: int = 64):
    """A randomly initialised 2-block DTMPretrainViT (shared + per-block
    relative position bias), non-zero tables so that folding matters."""
    from mmpretrain.registry import MODELS
    model = MODELS.build(dict(
        type='DTMPretrainViT', arch=TINY_ARCH, img_size=img_size,
        layer_scale_init_value=0.1, use_rel_pos_bias=True,
        use_shared_rel_pos_bias=True))
    model.init_weights()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'relative_position_bias_table' in name or 'gamma' in name:
                p.normal_(0, 0.5)
    return model


def tiny_downstream(img_size: int = 64, **kwargs):
    from mmpretrain.registry import MODELS
    cfg = dict(type='DTMViT', arch=TINY_ARCH, img_size=img_size,
               use_rel_pos_bias=True, use_shared_rel_pos_bias=False)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def pretrain_state(student) -> dict:
    """What an mmdtm pre-training checkpoint's state_dict looks like."""
    state = {f'backbone.{k}': v.clone()
             for k, v in student.state_dict().items()}
    state['neck.proj.weight'] = torch.randn(32, 64)
    state['neck.proj.bias'] = torch.zeros(32)
    state['head.loss_module.schedule_state'] = torch.tensor([0, 3])
    return state
