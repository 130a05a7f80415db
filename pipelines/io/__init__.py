"""IO connectors: Kafka (read, commit, dead letters, admin helpers). Stores live in ``pipelines.stores``."""
