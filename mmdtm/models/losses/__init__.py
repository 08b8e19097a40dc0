from .dtm_loss import DISTANCES, REDUCTIONS, DTMLoss, token_distance

__all__ = ['DTMLoss', 'token_distance', 'DISTANCES', 'REDUCTIONS']
