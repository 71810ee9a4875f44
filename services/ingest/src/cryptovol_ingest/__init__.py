"""cryptovol ingest: Coinbase Advanced Trade WebSocket to Kafka ticks.raw, replay, fake exchange"""

__version__ = "0.1.0"
