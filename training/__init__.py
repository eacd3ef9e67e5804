"""idou.training."""
