"""The version of idou, in the kernel so library code (provenance, cards) may import it."""

__version__ = "0.1.0"
