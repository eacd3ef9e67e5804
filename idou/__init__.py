"""idou: find building changes between two aerial flights (家屋異動判読)."""

__version__ = "0.1.0"
