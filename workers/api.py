"""The HTTP API process: `python -m workers.api` serves common.http on FULFILL_API_HOST:FULFILL_API_PORT.

Stateless (Temporal and the database hold everything), so run as many as the load needs behind a balancer.
SIGTERM lets requests in flight finish first."""

from __future__ import annotations

import uvicorn

from common.config import get_settings
from common.http.app import create_app
from common.logs import configure_logging
from common.production import refuse_unsafe_start
from common.tracing import configure as configure_tracing


def main() -> None:
    configure_logging()
    settings = get_settings()
    refuse_unsafe_start(settings, "HTTP API")
    configure_tracing(settings, settings.otel_service_name_api)  # before the app: it adds its span middleware
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # ours (configure_logging): one format, its masking filter
        access_log=True,  # method, path, status: ids only, no customer data
        proxy_headers=True,
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
