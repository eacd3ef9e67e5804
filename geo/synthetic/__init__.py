"""A deterministic generator of realistic aerial flight pairs with known changes.

``make_flight_pair(seed, size, gsd)`` makes two flights (2024, 2025) over one synthetic
Japanese town in EPSG:6677 with parcels, building footprints and the truth of every change;
``write_flight_pair(pair, out_dir)`` writes them as tiled JPEG GeoTIFFs and GeoPackages.
"""

from idou.geo.synthetic.flight import GENERATOR_VERSION, FlightPair, make_flight_pair
from idou.geo.synthetic.writer import write_flight_pair

__all__ = ["GENERATOR_VERSION", "FlightPair", "make_flight_pair", "write_flight_pair"]
