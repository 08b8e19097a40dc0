from .dtm_downstream_vit import DTMViT
from .dtm_vit import DTMPretrainViT

__all__ = ['DTMPretrainViT', 'DTMViT']
