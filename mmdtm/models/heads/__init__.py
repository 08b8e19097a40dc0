from .dtm_head import DTMHead

__all__ = ['DTMHead']
