"""``cryptovol-api``: serve the prediction API with uvicorn."""

from __future__ import annotations

import importlib.util
import logging

import uvicorn
from threadpoolctl import threadpool_limits

from cryptovol.runtime.lifecycle import tune_gc
from cryptovol.runtime.logs import configure_logging, get_logger
from cryptovol_api.app import create_app
from cryptovol_api.settings import ApiSettings

log = get_logger(__name__)


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def main() -> None:
    settings = ApiSettings()
    configure_logging(settings.service_name, settings.log_level)
    # The API talks to Kafka only for the /health probe, which logs state changes
    # itself; the client library would log every failed attempt as an error.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    app = create_app(settings)
    # Small batches gain nothing from BLAS/OpenMP thread pools, only latency.
    threadpool_limits(settings.model_threads)
    tune_gc()  # everything loaded so far (model, app) lives until exit
    log.info("listening", extra={"host": settings.api_host, "port": settings.api_port})
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        loop="uvloop" if _available("uvloop") else "asyncio",
        http="httptools" if _available("httptools") else "h11",
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
