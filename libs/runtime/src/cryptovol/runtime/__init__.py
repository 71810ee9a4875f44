"""cryptovol's runtime adapters: Kafka, the HTTP health and metrics server,
settings, logging, pacing, artifact I/O and recordings: the edges through
which the pure core meets the outside world."""
