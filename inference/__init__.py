"""idou.inference."""
