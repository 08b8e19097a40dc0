"""What a timm ViT trunk gives as a teacher: whether it is a ViT, its patch
and input sizes, and its final patch tokens. Shared by the timm teacher
and open_clip's timm-based towers."""
from typing import Tuple

from torch import Tensor, nn


def is_timm_vit(trunk: nn.Module) -> bool:
    """Whether a timm model gives a token sequence with a patch grid (the
    ViT family: ViT, EVA/EVA02, DeiT III, SigLIP, DINOv2, ...)."""
    grid = getattr(getattr(trunk, 'patch_embed', None), 'grid_size', None)
    return (getattr(trunk, 'num_prefix_tokens', None) is not None
            and grid is not None and hasattr(trunk, 'forward_features'))


def refuse_non_vit(trunk: nn.Module, what: str) -> None:
    """Raise for towers that give a strided feature map (ConvNeXt, ResNet,
    Swin, FastViT, open_clip's modified ResNet, ...) instead of ViT patch
    tokens."""
    if not is_timm_vit(trunk):
        raise ValueError(
            f'{what} ({type(trunk).__name__}) is not a ViT: it gives a '
            f'strided feature map, not one token per image patch, so its '
            f'targets would not line up with the student patches. Use a '
            f'ViT-family teacher (ViT, SigLIP, EVA02, DINOv2, ...)')


def trunk_patch_size(trunk: nn.Module) -> Tuple[int, int]:
    """The input pixels per token: the patch size, or the stride of a
    hybrid stem (ViTamin, MobileCLIP-B embed 1x1 patches of a feature
    map)."""
    grid = trunk.patch_embed.grid_size
    size = trunk_input_size(trunk)
    return size[0] // grid[0], size[1] // grid[1]


def trunk_input_size(trunk: nn.Module) -> Tuple[int, int]:
    size = trunk.patch_embed.img_size
    return (size, size) if isinstance(size, int) else tuple(size)


def timm_patch_tokens(trunk: nn.Module, x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, N, C): a timm ViT's final patch tokens after its
    last norm, prefix (class, register, distillation) tokens dropped.

    ``forward_features`` ends with the model's ``norm``; models that pool
    first and normalise the pooled feature (``fc_norm``, e.g. MAE-style
    average pooling) get that ``fc_norm`` applied to every token instead.
    """
    feats = trunk.forward_features(x)
    if feats.dim() != 3:
        raise ValueError(f'{type(trunk).__name__}.forward_features gave '
                         f'shape {tuple(feats.shape)}, not (B, L, C)')
    tokens = feats[:, trunk.num_prefix_tokens:]
    fc_norm = getattr(trunk, 'fc_norm', None)
    if (isinstance(getattr(trunk, 'norm', None), nn.Identity)
            and fc_norm is not None and not isinstance(fc_norm, nn.Identity)):
        tokens = fc_norm(tokens)
    return tokens
