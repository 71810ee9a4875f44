"""Configuration of the ingest service (environment variables; CLI flags override)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from cryptovol.runtime.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    service_name: str = "ingest"
    metrics_port: int = Field(9101, ge=0, le=65535)

    # source
    coinbase_ws_url: str = "wss://advanced-trade-ws.coinbase.com"
    source: Literal["live", "replay"] = "live"
    subscribe_market_trades: bool = False
    replay_files: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path("data/coinbase-ticker")])
    replay_speed: float = Field(10.0, gt=0, description='multiple of real time; "max" = no pacing')
    replay_loop: bool = False
    replay_max_gap_s: float = Field(
        5.0, ge=0, description="longest pause (wall seconds) between replayed ticks; "
        "recording gaps are compressed to this")
    max_ticks: int | None = Field(None, ge=1, description="stop after this many ticks")

    # resilience
    stall_timeout_s: float = Field(10.0, gt=0, description="reconnect after this long without "
                                   "any message (heartbeats arrive every second)")
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_cap_s: float = Field(30.0, gt=0)
    connect_rate_per_s: float = Field(
        4.0, gt=0, le=8, description="connects plus subscribes per second (Coinbase allows ~8)")
    queue_size: int = Field(10_000, ge=10, description="ticks between reader and writer "
                            "(20 s of the whole USD feed at its peak)")

    # raw archive
    save_raw: bool = False
    raw_dir: Path | None = None
    raw_rotate_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    raw_rotate_s: float = Field(3600.0, gt=0)

    # Kafka and spool
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(1024 * 1024 * 1024, ge=4096)
    spool_segment_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    spool_fsync_interval_s: float = Field(1.0, ge=0)
    kafka_ack_timeout_s: float = Field(
        5.0, gt=0, description="an unacknowledged send older than this means Kafka is unavailable")
    kafka_probe_interval_s: float = Field(1.0, gt=0)
    max_in_flight_ticks: int = Field(5_000, ge=1)
    shutdown_grace_s: float = Field(10.0, ge=0)

    @field_validator("replay_files", mode="before")
    @classmethod
    def _split_files(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("replay_speed", mode="before")
    @classmethod
    def _speed(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("max", "inf", "0"):
            return math.inf
        return value

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    @property
    def raw_path(self) -> Path:
        return self.raw_dir or self.data_dir / "raw"
