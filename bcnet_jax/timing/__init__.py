"""Latency on the device at hand: clocks, the measured per-layer table and
the predictor the search constrains (docs/design.md §12)."""
