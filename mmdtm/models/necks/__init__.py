from .dtm_neck import DTMNeck

__all__ = ['DTMNeck']
