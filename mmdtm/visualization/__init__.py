"""Pictures: the partition DTM's morphing finds on an image, and a run's
loss curve."""
from .loss_curve import plot_losses, read_losses
from .morph_vis import Schedule, default_schedules, morphing_grid

__all__ = ['Schedule', 'default_schedules', 'morphing_grid', 'plot_losses',
           'read_losses']
