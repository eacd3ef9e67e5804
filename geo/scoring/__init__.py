"""Accuracy of change detections: object, pixel and parcel scores and threshold sweeps
(used by training, tune, evaluate and the benchmarks)."""
