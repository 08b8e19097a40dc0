from .dtm_vit import DTMPretrainViT

__all__ = ['DTMPretrainViT']
