"""The Beam metrics namespace every step of the ingest reports under (counters the launcher sums at the end)."""

METRICS_NAMESPACE = "embedstream"
