"""The agent's own Prometheus counters on a local port (stdlib only: no prometheus_client
on devices).

``start_agent_metrics(port, totals_fn, state_fn)`` serves ``GET /metrics`` in the text
exposition format 0.0.4 from a daemon thread, bound to 127.0.0.1 by default (a node
exporter or a local Prometheus agent scrapes it; nothing leaves the device). Each scrape
calls the two functions — nothing is cached:

* ``totals_fn() -> {"frames": n, "errors": n, "nan_outputs": n, "shadow_frames": n,
  "shadow_dropped": n, "shadow_errors": n, "disagreements": n}`` (``Pipeline.totals``) plus
  the MQTT session's ``{"invalid_desired": n, "handler_errors": n}`` (``AgentMqtt.counters``),
* ``state_fn() -> {"control": "healthy", "shadow": "downloading", …}`` (slot → phase).

``render`` (pure) builds the text, so it is tested without sockets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..protocols import Phase

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# totals key → (metric name, help)
COUNTERS: dict[str, tuple[str, str]] = {
    "frames": ("edgefleet_agent_frames_total", "Frames run through the control model"),
    "errors": ("edgefleet_agent_errors_total", "Control inference errors"),
    "nan_outputs": ("edgefleet_agent_nan_outputs_total", "Control outputs with NaN or Inf"),
    "shadow_frames": ("edgefleet_agent_shadow_compared_total", "Frames compared between control and shadow"),
    "shadow_dropped": ("edgefleet_agent_shadow_dropped_total", "Frames the shadow path dropped (queue full)"),
    "shadow_errors": ("edgefleet_agent_shadow_errors_total", "Shadow inference errors"),
    "disagreements": ("edgefleet_agent_shadow_disagreements_total", "Compared frames where the models disagreed"),
    "invalid_desired": ("edgefleet_agent_mqtt_invalid_desired_total", "Desired messages refused (invalid or not for this device)"),
    "handler_errors": ("edgefleet_agent_mqtt_handler_errors_total", "MQTT messages whose handling raised (caught; session kept)"),
    "signal_samples": ("edgefleet_agent_signal_samples_total", "Sidecar signal samples kept"),
    "signal_dropped": ("edgefleet_agent_signal_dropped_total", "Sidecar signal samples dropped (malformed, oversize, not finite)"),
}
PHASE_METRIC = "edgefleet_agent_slot_phase"

TotalsFn = Callable[[], Mapping[str, int]]
StateFn = Callable[[], Mapping[str, str]]


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(totals: Mapping[str, int], phases: Mapping[str, str], device_id: str | None = None) -> str:
    """The exposition text for one scrape."""
    base = f'device="{_esc(device_id)}"' if device_id else ""
    lines: list[str] = []
    for key, (name, doc) in COUNTERS.items():
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} counter", f"{name}{{{base}}} {int(totals.get(key, 0))}"]
    lines += [f"# HELP {PHASE_METRIC} 1 for each slot's current deployment phase, 0 for the others",
              f"# TYPE {PHASE_METRIC} gauge"]
    for slot in sorted(phases):
        for phase in Phase:
            labels = ",".join(x for x in (base, f'slot="{_esc(slot)}"', f'phase="{phase.value}"') if x)
            lines.append(f"{PHASE_METRIC}{{{labels}}} {1 if phases[slot] == phase.value else 0}")
    return "\n".join(lines) + "\n"


class AgentMetricsServer:
    """A tiny HTTP server for ``/metrics``; ``stop()`` shuts it down."""

    def __init__(self, totals_fn: TotalsFn, state_fn: StateFn, *, host: str = "127.0.0.1", port: int = 9101,
                 device_id: str | None = None):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                try:
                    body = owner.scrape().encode()
                except Exception as exc:  # a broken source must not kill the server
                    log.warning("agent metrics scrape failed: %s", exc)
                    self.send_error(500)
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.totals_fn, self.state_fn, self.device_id = totals_fn, state_fn, device_id
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = host, int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="agent-metrics", daemon=True)

    def scrape(self) -> str:
        return render(self.totals_fn(), self.state_fn(), self.device_id)

    def start(self) -> AgentMetricsServer:
        self._thread.start()
        log.info("agent metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def start_agent_metrics(port: int, totals_fn: TotalsFn, state_fn: StateFn, *, host: str = "127.0.0.1",
                        device_id: str | None = None) -> AgentMetricsServer:
    """Serve the agent's counters on ``host:port`` (port 0 picks a free one: read ``.port``)."""
    return AgentMetricsServer(totals_fn, state_fn, host=host, port=port, device_id=device_id).start()
