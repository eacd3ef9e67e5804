"""A deterministic generator of realistic aerial flight pairs with known changes."""
