"""mmdtm: Dynamic Token Morphing for MMPretrain."""
from .version import __version__

__all__ = ['__version__']
