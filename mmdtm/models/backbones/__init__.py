from .dtm_pretrain_vit import DTMPretrainViT
from .dtm_vit import DTMViT

__all__ = ['DTMPretrainViT', 'DTMViT']
