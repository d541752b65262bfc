"""The demo run: broker, controller, N agent processes, two models, a live table, a summary.

Everything is real: an MQTT broker on loopback (mosquitto when installed, else amqtt
in-process), the controller's HTTP API on uvicorn, and ``fleet-agent run`` subprocesses
that download, verify and run the models with ONNX Runtime on the synthetic digits camera.

Capture: the controller sends a capture policy (disagreements only, at most 6 clips a
minute per device, 2 s before to 1 s after the trigger; the agents add a 10 s cool-down
per class), so the candidate's weak class shows up as disagreement clips that the agents
upload and the controller stores and indexes; the table and the summary count them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ...protocols import CapturePolicy
from ..api import create_app
from ..broker import Broker, free_port, start_default_broker
from ..cli.cloud_cmd import create_admin_token
from ..client import ApiClient, ApiError
from ..runtime import Controller
from ..settings import load_settings
from .train import train_digit_models

log = logging.getLogger(__name__)


DEMO_CAPTURE = CapturePolicy(low_confidence=False, disagreement=True, max_per_minute=6, max_per_hour=60,
                             pre_seconds=2.0, post_seconds=1.0)


class DemoError(Exception):
    """The demo could not reach a state it needs (a model never became active, …)."""


@dataclass
class Totals:
    """Cumulative figures, folded from each device's telemetry periods."""

    frames: int = 0
    shadow_frames: int = 0
    disagreements: int = 0
    per_class_compared: Counter[str] = field(default_factory=Counter)
    per_class_disagreements: Counter[str] = field(default_factory=Counter)
    seen: dict[str, str] = field(default_factory=dict)

    def fold(self, devices: list[dict[str, Any]]) -> None:
        for d in devices:
            t = d.get("telemetry")
            if not t or self.seen.get(d["id"]) == t["period_end"]:
                continue
            self.seen[d["id"]] = t["period_end"]
            self.frames += t["frames"]
            shadow = t.get("shadow") or {}
            self.shadow_frames += shadow.get("frames", 0)
            self.disagreements += shadow.get("disagreements", 0)
            for label, row in (shadow.get("confusion") or {}).items():
                self.per_class_compared[label] += sum(row.values())
            self.per_class_disagreements.update(shadow.get("per_class_disagreements") or {})

    def rate(self, label: str) -> float:
        n = self.per_class_compared.get(label, 0)
        return self.per_class_disagreements.get(label, 0) / n if n else 0.0


def to_toml(sections: dict[str, dict[str, Any]]) -> str:
    """A flat two-level TOML writer for agent configs (the demo must not import the agent)."""
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, (int, float)):
                lines.append(f"{key} = {value}")
            else:
                text = str(value).replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'{key} = "{text}"')
        lines.append("")
    return "\n".join(lines)


class UvicornThread:
    def __init__(self, app: Any, host: str, port: int):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                                                   # longer than clients' idle pools: no request races a keep-alive close
                                                   timeout_keep_alive=75))
        self.thread = threading.Thread(target=self.server.run, name="demo-http", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 45  # a loaded machine imports and builds the app slowly
        while not self.server.started:
            if not self.thread.is_alive():
                cfg = self.server.config
                raise DemoError(f"the controller's HTTP server exited before serving on {cfg.host}:{cfg.port} "
                                "(is the port in use? its error is logged above)")
            if time.monotonic() > deadline:
                raise DemoError("the controller's HTTP server did not start within 45 s")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


class Demo:
    def __init__(self, *, agents: int = 3, duration: float = 60.0, data_dir: Path | None = None, ui: bool = True, fps: float = 15.0, console: Console | None = None):
        self.agents = agents
        self.duration = duration
        self.ui = ui
        self.fps = fps
        self.console = console or Console()
        self.workdir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.broker: Broker | None = None
        self.controller: Controller | None = None
        self.http: UvicornThread | None = None
        self.client: ApiClient | None = None
        self.totals = Totals()
        self.stop_requested = threading.Event()
        self.clips: dict[str, int] = {}

    # ----- output -----

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    # ----- steps -----

    def run(self) -> int:
        started = time.monotonic()
        try:
            self._start_everything()
            devices = self._deploy_and_watch(started)
            code, final_line = self._summary(devices)
        finally:
            self._shutdown()
        self.say(final_line)  # the last line, after everything has stopped
        return code

    def _start_everything(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.say(f"demo: working directory {self.workdir}")
        with self.console.status("training control and candidate digit classifiers…"):
            self.control, self.candidate = train_digit_models(self.workdir / "models")
        self.say(
            f"demo: trained control (accuracy {self.control.accuracy:.1%}) and candidate "
            f"(accuracy {self.candidate.accuracy:.1%}; class 8 accuracy {self.candidate.per_class_accuracy['8']:.0%})"
        )
        controller_dir = self.workdir / "controller"
        # credentials, not anonymous access: the broker reads the accounts and ACL the controller writes
        self.broker = start_default_broker(data_dir=self.workdir / "broker", auth_dir=controller_dir / "broker-auth")
        self.say(f"demo: MQTT broker ({self.broker.kind}) on {self.broker.host}:{self.broker.port}")
        protocol = "5" if self.broker.kind == "mosquitto" else "3.1.1"
        http_port = free_port()
        settings = load_settings(
            controller_dir, env={}, http_port=http_port, mqtt_port=self.broker.port,
            mqtt_protocol=protocol, telemetry_period_s=2.0, reconcile_interval_s=1.0,
            broker_auth_dir=self.broker.auth_dir,
        )
        self.controller = Controller(settings)
        if self.controller.broker_auth is not None:
            self.controller.broker_auth.set_reload(self.broker.reload)
        self.controller.capture_policy = DEMO_CAPTURE
        self.controller.migrate()
        token = create_admin_token(self.controller, name="demo")
        self.controller.start()
        self.http = UvicornThread(create_app(self.controller), settings.http_host, http_port)
        self.http.start()
        self.client = ApiClient(settings.base_url, token)
        self.say(f"demo: controller on {settings.base_url} (API docs at {settings.base_url}/api/v1/docs)")
        self._start_agents(settings.base_url, protocol)

    def _start_agents(self, url: str, protocol: str) -> None:
        assert self.client and self.broker
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        roots_dir = self.workdir / "trusted-roots"  # what `fleet device add --out` provisions a device with
        roots_dir.mkdir(exist_ok=True)
        roots = self.client.request("GET", "/trust/roots")
        (roots_dir / "director-root.json").write_text(json.dumps(roots["director_root"]))
        (roots_dir / "image-root.json").write_text(json.dumps(roots["image_root"]))
        for i in range(1, self.agents + 1):
            device_id = f"demo-cam-{i:02d}"
            creds = self.client.enrol_device(device_id, "unknown", {"site": "demo", "index": str(i)})
            data_dir = self.workdir / "agents" / device_id
            secret = self.workdir / "provisioning" / device_id / "credentials.json"
            secret.parent.mkdir(parents=True, exist_ok=True)
            secret.touch(mode=0o600)
            secret.write_text(json.dumps(creds))  # as `fleet device add --out` writes it
            cfg: dict[str, dict[str, Any]] = {
                "agent": {"device_id": device_id, "data_dir": str(data_dir),
                          "controller_url": url, "health_window_s": 4.0,
                          "trust_roots": str(roots_dir)},
                "mqtt": {"host": self.broker.host, "port": self.broker.port, "protocol": protocol},
                "source": {"kind": "synthetic-digits", "fps": self.fps, "seed": i},
                "capture": {"upload_poll_s": 1.0, "backoff_max_s": 5.0},
            }
            path = self.workdir / f"{device_id}.toml"
            path.write_text(to_toml(cfg))
            # what an installer does on the device: store the credentials 0600 in its data dir
            subprocess.run([sys.executable, "-m", "edgefleet.edge_agent.cli", "provision", "--config", str(path),
                            "--credentials", str(secret), "--force"], check=True, capture_output=True)
            log_file = open(logs / f"{device_id}.log", "ab")  # noqa: SIM115 - lives as long as the process
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "edgefleet.edge_agent.cli", "run", "--config", str(path)],
                stdout=log_file, stderr=subprocess.STDOUT, env=env,
            ))
        self.say(f"demo: started {self.agents} agents (logs in {logs})")

    def _wait_online(self, timeout: float) -> None:
        """Every agent connected and reported its hardware (the director signs for that hardware)."""
        assert self.client
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop_requested.is_set():
            devices = self.client.list_devices()
            if devices and all(d["online"] and d["hardware_id"] != "unknown" for d in devices):
                self.say(f"demo: {len(devices)} agents online ({', '.join(sorted({d['hardware_id'] for d in devices}))})")
                return
            self._check_agents()
            time.sleep(0.3)
        raise DemoError(f"not every agent came online within {timeout:.0f}s; see {self.workdir / 'logs'}")

    def _wait_slot(self, slot: str, model: str, timeout: float) -> list[dict[str, Any]]:
        assert self.client
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop_requested.is_set():
            devices = self.client.list_devices()
            done = [d for d in devices if d["slots"][slot]["installed"] == model]
            failed = [d for d in devices if d["slots"][slot]["phase"] == "failed"]
            if failed:
                d = failed[0]["slots"][slot]
                raise DemoError(f"{failed[0]['id']}: {model} failed in the {slot} slot: {d['error_code']} {d['error']}")
            if len(done) == len(devices):
                return devices
            self._check_agents()
            time.sleep(0.3)
        raise DemoError(f"{model} did not become active in the {slot} slot of every device within {timeout:.0f}s")

    def _check_agents(self) -> None:
        for i, p in enumerate(self.procs, 1):
            if p.poll() is not None:
                raise DemoError(f"agent demo-cam-{i:02d} exited with code {p.returncode}; see {self.workdir / 'logs'}")

    def _deploy_and_watch(self, started: float) -> list[dict[str, Any]]:
        assert self.client
        c, k = self.control, self.candidate
        self._wait_online(60)
        mv = self.client.push_model(c.path, name=c.manifest.name, version=c.manifest.version, manifest=c.manifest.model_dump(mode="json", by_alias=True))
        self.say(f"demo: pushed {mv['name']}:{mv['version']} sha256:{mv['digest'][:16]}…")
        self.client.deploy(c.manifest.label, "control", None)
        self._wait_slot("control", c.manifest.label, 120)
        self.say(f"demo: {c.manifest.label} active in the control slot on every device")
        mv = self.client.push_model(k.path, name=k.manifest.name, version=k.manifest.version, manifest=k.manifest.model_dump(mode="json", by_alias=True))
        self.say(f"demo: pushed {mv['name']}:{mv['version']} sha256:{mv['digest'][:16]}…")
        self.client.deploy(k.manifest.label, "shadow", None)
        self._wait_slot("shadow", k.manifest.label, 120)
        self.say(f"demo: {k.manifest.label} running in shadow on every device")
        end = max(started + self.duration, time.monotonic() + 10)
        devices = self.client.list_devices()
        if self.ui:
            with Live(self._table(devices, end), console=self.console, refresh_per_second=2, transient=False) as live:
                while time.monotonic() < end and not self.stop_requested.is_set():
                    time.sleep(1)
                    devices = self.client.list_devices()
                    self.totals.fold(devices)
                    self._refresh_clips()
                    self._check_agents()
                    live.update(self._table(devices, end))
        else:
            next_line = 0.0
            while time.monotonic() < end and not self.stop_requested.is_set():
                time.sleep(1)
                devices = self.client.list_devices()
                self.totals.fold(devices)
                self._refresh_clips()
                self._check_agents()
                if time.monotonic() >= next_line:
                    next_line = time.monotonic() + 5
                    for d in devices:
                        self.say(self._line(d))
        time.sleep(2.5)  # one more telemetry period
        devices = self.client.list_devices()
        self.totals.fold(devices)
        deadline = time.monotonic() + 15  # clips of the last disagreements are still on their way
        while not self._refresh_clips() and time.monotonic() < deadline and not self.stop_requested.is_set():
            time.sleep(0.5)
        return devices

    def _refresh_clips(self) -> int:
        """Clips the controller has stored per device for the demo pair; returns the total."""
        assert self.client
        try:
            detail = self.client.shadow_pair(self.control.manifest.label, self.candidate.manifest.label)
            self.clips = {d["device_id"]: d["clips"] for d in detail["devices"]}
        except ApiError:  # no telemetry for the pair yet
            pass
        return sum(self.clips.values())

    def _line(self, d: dict[str, Any]) -> str:
        t = d.get("telemetry") or {}
        shadow = t.get("shadow") or {}
        agreement = shadow.get("agreement")
        return (
            f"{d['id']}: online={d['online']} control={d['slots']['control']['installed']} "
            f"shadow={d['slots']['shadow']['installed']} fps={t.get('fps', 0):.1f} "
            f"p99={t.get('latency_ms', {}).get('p99', 0):.2f}ms "
            f"agreement={'-' if agreement is None else f'{agreement:.1%}'} clips={self.clips.get(d['id'], 0)}"
        )

    def _table(self, devices: list[dict[str, Any]], end: float) -> Table:
        remaining = max(0, end - time.monotonic())
        table = Table(title=f"edgefleet demo — {remaining:.0f}s left — frames {self.totals.frames:,}, disagreements {self.totals.disagreements:,}")
        for col in ("device", "online", "control", "shadow", "fps", "p99 ms", "agreement", "disagreements (period)", "clips stored"):
            table.add_column(col)
        for d in devices:
            t = d.get("telemetry") or {}
            shadow = t.get("shadow") or {}
            agreement = shadow.get("agreement")
            per_class = ", ".join(f"{k}:{v}" for k, v in sorted((shadow.get("per_class_disagreements") or {}).items(), key=lambda kv: -kv[1])[:3])
            table.add_row(
                d["id"], "[green]yes[/]" if d["online"] else "[red]no[/]",
                d["slots"]["control"]["installed"] or "-", d["slots"]["shadow"]["installed"] or "-",
                f"{t.get('fps', 0):.1f}", f"{t.get('latency_ms', {}).get('p99', 0):.2f}",
                "-" if agreement is None else f"{agreement:.1%}", per_class or "-", str(self.clips.get(d["id"], 0)),
            )
        return table

    def _summary(self, devices: list[dict[str, Any]]) -> tuple[int, str]:
        tot = self.totals
        active = [d for d in devices if d["online"] and d["slots"]["control"]["installed"] and d["slots"]["shadow"]["installed"]]
        labels = sorted(tot.per_class_compared, key=lambda c: -tot.rate(c))
        table = Table(title="shadow disagreement by class (control's label)")
        table.add_column("class")
        table.add_column("compared", justify="right")
        table.add_column("disagreements", justify="right")
        table.add_column("rate", justify="right")
        for c in labels:
            table.add_row(c, f"{tot.per_class_compared[c]:,}", f"{tot.per_class_disagreements.get(c, 0):,}", f"{tot.rate(c):.1%}")
        self.console.print(table)
        clips = sum(self.clips.values())
        self.say("demo: clips stored by the controller: " + (", ".join(
            f"{device}={n}" for device, n in sorted(self.clips.items())) or "none"))
        ok = len(active) == self.agents and tot.frames > 0 and tot.shadow_frames > 0 and clips > 0
        rates = " ".join(f"{c}={tot.rate(c):.1%}" for c in labels)
        overall = tot.disagreements / tot.shadow_frames if tot.shadow_frames else 0.0
        status = "ok" if ok else "FAILED"
        line = (
            f"demo: {status} devices_active={len(active)}/{self.agents} frames={tot.frames} "
            f"shadow_frames={tot.shadow_frames} disagreement={overall:.1%} clips={clips} by_class: {rates}"
        )
        return (0 if ok else 1), line

    def _shutdown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.http:
            self.http.stop()
        if self.controller:
            self.controller.stop()
        if self.broker:
            self.broker.stop()
        if self.client:
            self.client.close()
