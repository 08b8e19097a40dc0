from .dtm import DTM

__all__ = ['DTM']
