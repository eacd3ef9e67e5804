"""Flights in: open a flight, preflight it against the model, read both on one grid,
estimate their misregistration, and write the probability COG."""
