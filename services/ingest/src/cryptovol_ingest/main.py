"""``cryptovol-ingest``: Coinbase Advanced Trade ticker data (live or replayed) into
Kafka ``ticks.raw``. Flags override the environment (see docs/ingest.md)."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from cryptovol.runtime.lifecycle import Shutdown, tune_gc
from cryptovol.runtime.logs import configure_logging
from cryptovol_ingest.settings import IngestSettings


def parse_args(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="cryptovol-ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--source", choices=["live", "replay"], help="SOURCE (default live)")
    parser.add_argument("--files", nargs="+", metavar="PATH",
                        help="recordings or raw archive files/folders to replay (REPLAY_FILES)")
    parser.add_argument("--speed", help='replay speed: a multiple of real time, or "max"')
    parser.add_argument("--loop", action="store_true", default=None,
                        help="replay forever (later passes are shifted in time)")
    parser.add_argument("--max-ticks", type=int, help="stop after this many ticks")
    parser.add_argument("--save-disk", action="store_true", default=None,
                        help="archive raw exchange messages under DATA_DIR/raw (SAVE_RAW)")
    parser.add_argument("--url", help="WebSocket URL (COINBASE_WS_URL)")
    parser.add_argument("--products", help="comma-separated product ids (PRODUCTS)")
    parser.add_argument("--market-trades", action="store_true", default=None,
                        help="also subscribe to market_trades (SUBSCRIBE_MARKET_TRADES)")
    parser.add_argument("--metrics-port", type=int, help="METRICS_PORT (default 9101)")
    parser.add_argument("--spool-dir", help="SPOOL_DIR (default DATA_DIR/spool)")
    args = parser.parse_args(argv)
    names = {"source": "source", "files": "replay_files", "speed": "replay_speed",
             "loop": "replay_loop", "max_ticks": "max_ticks", "save_disk": "save_raw",
             "url": "coinbase_ws_url", "products": "products",
             "market_trades": "subscribe_market_trades", "metrics_port": "metrics_port",
             "spool_dir": "spool_dir"}
    return {field: getattr(args, arg) for arg, field in names.items()
            if getattr(args, arg) is not None}


def main(argv: list[str] | None = None) -> int:
    overrides = parse_args(argv)
    try:
        settings = IngestSettings(**overrides)
    except ValidationError as exc:
        print(f"cryptovol-ingest: invalid configuration:\n{exc}")
        return 2
    configure_logging(settings.service_name, settings.log_level)
    from cryptovol_ingest.service import IngestService

    service = IngestService(settings)
    tune_gc()
    return service.run(Shutdown())


if __name__ == "__main__":
    raise SystemExit(main())
