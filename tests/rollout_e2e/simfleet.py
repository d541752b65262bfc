"""Simulated devices that speak the real wire protocol, for scale (1,000 devices) and for
the two-replica test: not the agent, but the same MQTT messages an agent sends.

Each ``SimFleet`` multiplexes many devices over a few paho connections. A device publishes
its retained ``status`` (online), answers every ``desired`` hint whose control target
differs from what it runs by walking the lifecycle — ``notified``, ``downloading``,
``verifying``, ``preparing``, ``active`` (one ``reported`` each, ``step_s`` apart) — then
``healthy`` after ``health_s``, and sends ``telemetry`` every period the controller asks
for. It trusts the hint (no TUF, no download): what is measured is the controller side.
Like an agent, each device signs its ``reported`` and ``telemetry`` with its own report key
(``SimKey``, deterministic per device id: enrol it with ``sim_public_key``).
``counter`` counts every message under ``fleet/v1/devices/`` seen by a separate observer
connection (both directions), for "MQTT messages per device".
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import paho.mqtt.client as mqtt

from edgefleet.protocols import (
    Channel,
    Desired,
    LatencyStats,
    ModelRef,
    Phase,
    Reported,
    SlotReport,
    Status,
    Telemetry,
    decode,
    encode,
)
from edgefleet.protocols.topics import device_topic

from ..signed_reports.keys import SimKey


def sim_public_key(device_id: str) -> str:
    """The report public key a simulated device signs with: enrol it with this."""
    return SimKey(device_id).public_key

_STEPS = (Phase.NOTIFIED, Phase.DOWNLOADING, Phase.VERIFYING, Phase.PREPARING, Phase.ACTIVE)


@dataclass
class SimDevice:
    device_id: str
    hardware_id: str
    client: mqtt.Client
    installed: ModelRef | None = None
    target: ModelRef | None = None
    lkg: ModelRef | None = None
    phase: Phase = Phase.IDLE
    generation: int = 0
    telemetry_period_s: float = 10.0
    next_telemetry: float = 0.0
    latency_ms: float = 2.0
    history: list[tuple[float, str, str]] = field(default_factory=list)  # (t, phase, digest)
    key: SimKey = field(init=False)  # its report key (deterministic: enrol with sim_public_key(id))
    period_end: datetime | None = None

    def __post_init__(self) -> None:
        self.key = SimKey(self.device_id)


def _client(client_id: str, host: str, port: int, protocol: str, auth: tuple[str, str] | None = None) -> mqtt.Client:
    proto = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
    kwargs = {} if proto == mqtt.MQTTv5 else {"clean_session": True}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kwargs)
    if auth is not None:
        c.username_pw_set(*auth)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    return c


class SimFleet:
    def __init__(self, host: str, port: int, devices: Iterable[tuple[str, str]], *, protocol: str = "3.1.1",
                 connections: int = 8, step_s: float = 0.05, health_s: float = 0.5, count: bool = True,
                 auth: tuple[str, str] | None = None):
        """``auth``: the broker account the simulator connects with. Broker ACLs allow a device
        account only its own topics, so a simulator of many devices uses the controller's
        account (``controller.mqtt_credentials()``), which may publish under any device."""
        self.host, self.port, self.protocol = host, port, protocol
        self.step_s, self.health_s = step_s, health_s
        self.clients = [_client(f"simfleet-{i}-{time.monotonic_ns()}", host, port, protocol, auth) for i in range(connections)]
        self.devices: dict[str, SimDevice] = {}
        for i, (device_id, hw) in enumerate(devices):
            self.devices[device_id] = SimDevice(device_id, hw, self.clients[i % connections])
        self.counter: Counter[str] = Counter()
        self._observer = _client(f"simfleet-observer-{time.monotonic_ns()}", host, port, protocol, auth) if count else None
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._sign_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simfleet", daemon=True)

    # ----- lifecycle -----

    def start(self) -> None:
        if self._observer is not None:
            self._observer.on_message = self._count
            self._observer.on_connect = lambda c, *_: c.subscribe("fleet/v1/devices/#", qos=0)
            self._observer.connect(self.host, self.port)
            self._observer.loop_start()
        for c in self.clients:
            c.on_message = self._on_message
            c.on_connect = self._on_connect
            c.connect(self.host, self.port, keepalive=60)
            c.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for d in self.devices.values():
            self._publish(d, Channel.STATUS, Status(device_id=d.device_id, online=False, hardware_id=d.hardware_id), retain=True)
        for c in [*self.clients, *([self._observer] if self._observer else [])]:
            c.disconnect()
            c.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        mine = [d for d in self.devices.values() if d.client is client]
        client.subscribe([(device_topic(d.device_id, Channel.DESIRED), 1) for d in mine])
        now = time.monotonic()
        for d in mine:
            self._publish(d, Channel.STATUS, Status(device_id=d.device_id, online=True, hardware_id=d.hardware_id), retain=True)
            self._report(d)
            d.next_telemetry = now + d.telemetry_period_s

    def _count(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        if len(parts) >= 5:
            self.counter[parts[4]] += 1

    # ----- protocol -----

    def _publish(self, d: SimDevice, channel: Channel, msg: object, *, retain: bool = False) -> None:
        qos = 0 if channel == Channel.TELEMETRY else 1
        if channel in (Channel.REPORTED, Channel.TELEMETRY):  # signed by the device's own report key
            with self._sign_lock:  # seq order is wire order
                d.client.publish(device_topic(d.device_id, channel), d.key.sign(msg), qos=qos, retain=retain)  # type: ignore[arg-type]
            return
        d.client.publish(device_topic(d.device_id, channel), encode(msg), qos=qos, retain=retain)  # type: ignore[arg-type]

    def _report(self, d: SimDevice) -> None:
        slot = SlotReport(installed=d.installed, target=d.target, last_known_good=d.lkg, phase=d.phase)
        self._publish(d, Channel.REPORTED, Reported(device_id=d.device_id, generation=d.generation,
                                                   hardware_id=d.hardware_id, slots={"control": slot}))
        d.history.append((time.monotonic(), d.phase.value, d.installed.digest if d.installed else ""))

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            desired = decode(message.payload, Desired)
        except Exception:
            return
        d = self.devices.get(desired.device_id)
        if d is None:
            return
        with self._lock:
            d.telemetry_period_s = desired.settings.telemetry_period_s
            d.generation = desired.generation
            t = desired.slots.get("control")
            want = ModelRef(name=t.name, version=t.version, digest=t.digest) if t else None
            if (want.digest if want else None) == (d.installed.digest if d.installed else None):
                if d.phase in _STEPS[:-1]:
                    d.phase = Phase.IDLE
                d.target = d.installed
                self._report(d)
                return
            if want is None:
                d.installed, d.target, d.phase = None, None, Phase.IDLE
                self._report(d)
                return
            d.target = want
            self._schedule(0.0, d.device_id, "step0")

    def _schedule(self, delay: float, device_id: str, what: str) -> None:
        heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), device_id, what))

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                while self._heap and self._heap[0][0] <= now:
                    _, _, device_id, what = heapq.heappop(self._heap)
                    self._advance(self.devices[device_id], what)
                for d in self.devices.values():
                    if now >= d.next_telemetry:
                        d.next_telemetry = now + d.telemetry_period_s
                        self._telemetry(d)
            self._stop.wait(0.02)

    def _advance(self, d: SimDevice, what: str) -> None:
        if d.target is None:
            return
        if what.startswith("step"):
            i = int(what[4:])
            if i < len(_STEPS) - 1:
                d.phase = _STEPS[i]
                self._report(d)
                self._schedule(self.step_s, d.device_id, f"step{i + 1}")
                return
            if d.installed is not None and d.phase != Phase.ACTIVE:
                d.lkg = d.installed
            d.installed, d.phase = d.target, Phase.ACTIVE
            self._report(d)
            self._schedule(self.health_s, d.device_id, f"healthy:{d.target.digest}")
        elif what.startswith("healthy:") and d.installed is not None and d.installed.digest == what[8:] \
                and d.phase == Phase.ACTIVE:
            d.phase = Phase.HEALTHY
            self._report(d)

    def _telemetry(self, d: SimDevice) -> None:
        now = datetime.now(timezone.utc)
        frames = int(5 * d.telemetry_period_s)
        lat = LatencyStats(p50=d.latency_ms, p95=d.latency_ms * 1.2, p99=d.latency_ms * 1.5,
                           mean=d.latency_ms, max=d.latency_ms * 2)
        start, d.period_end = d.period_end or now, now  # periods follow each other, never overlap
        msg = Telemetry(device_id=d.device_id, period_start=start, period_end=now, control=d.installed,
                        frames=frames if d.installed else 0, fps=5.0, latency_ms=lat)
        self._publish(d, Channel.TELEMETRY, msg)

    # ----- queries -----

    def on(self, digest: str) -> int:
        with self._lock:
            return sum(1 for d in self.devices.values() if d.installed is not None and d.installed.digest == digest)

    def messages(self) -> int:
        return sum(self.counter.values())
