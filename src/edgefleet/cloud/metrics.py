"""Prometheus metrics of the controller, one ``CollectorRegistry`` per controller (no globals).

``ensure_metrics(controller)`` attaches a ``ControllerMetrics`` as ``controller.metrics``
(``create_app`` calls it; it is idempotent). What flows in:

* computed at scrape time from the database and the bridge (nothing to call):
  ``edgefleet_devices{state="online"|"offline"}``, ``edgefleet_devices_stale`` (signed state
  lagging longer than ``stale_after_s``, cloud/trust/freshness.py),
  ``edgefleet_mqtt_messages_total{channel, outcome}`` (``controller.bridge.counters``);
* observed by the HTTP middleware (``HttpMetricsMiddleware``):
  ``edgefleet_http_request_duration_seconds{method, route, status}`` (route = the path
  template, e.g. ``/api/v1/devices/{device_id}``; unmatched paths are ``<unmatched>``);
* incremented by other modules through ``controller.metrics``:
  ``upload_bytes.labels(kind).inc(n)`` → ``edgefleet_upload_bytes_total{kind}``,
  ``rollout_phase_transitions.labels(phase).inc()`` → ``edgefleet_rollout_phase_transitions_total{phase}``,
  ``gate_evaluations.labels(metric, result).inc()`` → ``edgefleet_gate_evaluations_total{metric, result}``,
  ``set_gauge_source(name, fn)`` for a gauge computed at scrape (e.g. rollouts by phase:
  ``fn() -> {("running",): 2.0}`` with ``labelnames``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import col, select

from .tables import Device

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _ScrapeCollector(Collector):
    """Figures read at scrape time: devices by state, MQTT counters, registered gauge sources."""

    def __init__(self, owner: ControllerMetrics):
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        controller = self.owner.controller
        devices = GaugeMetricFamily("edgefleet_devices", "Enrolled devices by online state", labels=["state"])
        if controller is not None:
            with controller.session() as s:
                rows = s.exec(select(Device.online, func.count()).group_by(col(Device.online))).all()
            by = {bool(online): int(n) for online, n in rows}
            devices.add_metric(["online"], by.get(True, 0))
            devices.add_metric(["offline"], by.get(False, 0))
        yield devices
        stale = GaugeMetricFamily("edgefleet_devices_stale",
                                  "Devices whose signed state lags their desired state longer than stale_after_s")
        if controller is not None:
            with controller.session() as s:
                n = s.exec(select(func.count()).select_from(Device).where(col(Device.stale_since).is_not(None))
                           .where(col(Device.revoked_at).is_(None))).one()
            stale.add_metric([], int(n))
        yield stale
        msgs = CounterMetricFamily("edgefleet_mqtt_messages", "MQTT messages handled by the bridge, by channel and outcome",
                                   labels=["channel", "outcome"])
        bridge = getattr(controller, "bridge", None)
        if bridge is not None:
            for (channel, outcome), n in sorted(dict(bridge.counters).items()):
                msgs.add_metric([channel, outcome], n)
        yield msgs
        for name, (doc, labelnames, fn) in sorted(self.owner.gauge_sources.items()):
            g = GaugeMetricFamily(name, doc, labels=list(labelnames))
            for labels, value in fn().items():
                g.add_metric(list(labels), value)
            yield g


class ControllerMetrics:
    def __init__(self, controller: Any | None = None):
        self.controller = controller
        self.registry = CollectorRegistry()  # no auto_describe: nothing is read at registration
        self.gauge_sources: dict[str, tuple[str, Sequence[str], Callable[[], dict[tuple[str, ...], float]]]] = {}
        self.http_latency = Histogram(
            "edgefleet_http_request_duration_seconds", "HTTP request latency by route template",
            ["method", "route", "status"], buckets=HTTP_BUCKETS, registry=self.registry,
        )
        self.upload_bytes = Counter("edgefleet_upload_bytes", "Bytes received in uploads (clips, …)", ["kind"],
                                    registry=self.registry)
        self.rollout_phase_transitions = Counter(
            "edgefleet_rollout_phase_transitions", "Rollout phase transitions, by the phase entered", ["phase"],
            registry=self.registry)
        self.gate_evaluations = Counter(
            "edgefleet_gate_evaluations", "Rollout gate evaluations, by metric and result (passed/failed/pending)",
            ["metric", "result"], registry=self.registry)
        self.registry.register(_ScrapeCollector(self))

    def set_gauge_source(self, name: str, fn: Callable[[], dict[tuple[str, ...], float]], *,
                         doc: str = "", labelnames: Sequence[str] = ()) -> None:
        """Register (or replace) a gauge computed at scrape time by ``fn``."""
        self.gauge_sources[name] = (doc or name, tuple(labelnames), fn)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def ensure_metrics(controller: Any) -> ControllerMetrics:
    """``controller.metrics``, created on first use."""
    existing = getattr(controller, "metrics", None)
    if isinstance(existing, ControllerMetrics):
        return existing
    metrics = ControllerMetrics(controller)
    controller.metrics = metrics
    return metrics


def route_template(scope: dict[str, Any]) -> str:
    """The matched route's full path template, ``<unmatched>`` when nothing matched.

    FastAPI >= 0.12x keeps included routers nested and sets ``scope["route"]`` to the
    inner route (path relative to its router); the full path is in its effective route
    context. Older versions flatten routes, so ``scope["route"].path`` is already full.
    """
    fastapi_scope = scope.get("fastapi")
    ctx = fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    route = scope.get("route")
    for obj, attr in ((ctx, "path_format"), (ctx, "path"), (route, "path_format"), (route, "path")):
        value = getattr(obj, attr, None) if obj is not None else None
        if isinstance(value, str) and value:
            return value
    return "<unmatched>"


class HttpMetricsMiddleware:
    """Pure ASGI middleware: observes each HTTP request's latency under its route template."""

    def __init__(self, app: Any, metrics: ControllerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = route_template(scope)
            self.metrics.http_latency.labels(scope.get("method", "GET"), template, str(status["code"])).observe(
                time.perf_counter() - started)
