"""idou: find building changes between two aerial flights (家屋異動判読)."""

from idou.version import __version__

__all__ = ["__version__"]
