from .beitv2_dtm import BEiTV2DTM
from .dtm import DTM

__all__ = ['DTM', 'BEiTV2DTM']
