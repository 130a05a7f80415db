"""Benchmarks. Ratios measured side by side in one run are the figures to quote; absolute times are noise."""
