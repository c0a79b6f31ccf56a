"""``serve --workers N``: N processes on one listening port, under uvicorn's own supervisor.

The parent binds the port, takes the lock on the configured audit log (so a second
``serve`` on the same file refuses to start, whatever its worker count), creates the
gateway secret once (workers must not race to create different ones), and hands the
settings to the workers through ``GATEWAY_*`` environment variables. Each worker builds
its own app from them (``app`` below): its own upstream pool, metadata cache and audit
chain, ``audit-<instance>.jsonl`` beside the configured log (``gateway.audit.config``).

uvicorn's supervisor restarts a worker that dies (the replacement takes the dead worker's
audit file, whose lock the kernel released, and continues its chain in a new segment) and
on SIGTERM or SIGINT sends SIGTERM to every worker, each of which drains its requests and
closes its trail, then waits for them all.

Metrics: the parent gives the workers a fresh ``PROMETHEUS_MULTIPROC_DIR`` (removed at
exit), where prometheus-client's multiprocess mode keeps each worker's samples so that a
scrape of any worker answers for all of them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from gateway.app import Gateway, create_app
from gateway.audit.files import WriterLock
from gateway.keys import load_or_create_secret
from gateway.logs import configure_logging
from gateway.policy import load_policy
from gateway.settings import Settings

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def serve_workers(
    settings: Settings, options: dict[str, Any], started: Callable[[], None]
) -> None:
    """Run ``settings.workers`` workers until SIGTERM; raises ``AuditLogInUse`` before
    ``started`` is called."""
    assert settings.audit_log is not None  # Settings refuses several workers on stdout
    lock = WriterLock(settings.audit_log)
    lock.acquire()
    started()
    metrics = tempfile.mkdtemp(prefix="privacy-gateway-metrics-")
    try:
        load_or_create_secret(settings.secret_file, settings.secret)
        os.environ.update(settings.environment())
        os.environ[METRICS_DIR] = metrics
        uvicorn.run(f"{__name__}:app", factory=True, workers=settings.workers, **options)
    finally:
        shutil.rmtree(metrics, ignore_errors=True)
        lock.release()


def app() -> Gateway:
    """What each worker serves: the gateway, built from the environment the parent set."""
    policy_path = os.environ.get("GATEWAY_POLICY")
    policy = load_policy(Path(policy_path) if policy_path else None)
    settings = Settings.build(upstream=None, policy=policy)
    configure_logging(level=settings.log_level)
    return create_app(settings)
