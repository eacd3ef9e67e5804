"""Training datasets: each item is a dict of before/after images and change masks."""
