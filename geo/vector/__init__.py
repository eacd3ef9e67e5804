"""Vector inputs: the files users give (parcels, 法務省 地図XML, existing buildings, AOI),
each read into the same survey columns."""
