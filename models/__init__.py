"""idou.models."""
