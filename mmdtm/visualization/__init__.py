"""Pictures: the partition DTM's morphing finds on an image."""
from .morph_vis import Schedule, default_schedules, morphing_grid

__all__ = ['Schedule', 'default_schedules', 'morphing_grid']
