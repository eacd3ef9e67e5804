"""idou.geo."""
