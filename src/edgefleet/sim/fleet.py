"""Many simulated devices over a few MQTT connections, speaking the real protocol.

``SimFleet`` holds up to tens of thousands of ``SimDevice`` (device.py) in one process and
multiplexes them over ``connections`` paho clients (MQTT 5): many devices per connection
keeps a 100,000-device fleet within a few processes, while every message stays what an
agent sends — the same topics under each device's own id, the same schemas, ``reported``
and ``telemetry`` signed by each device's own Ed25519 report key with its own sequence
numbers, and the ``desired → reported`` lifecycle. What differs from real agents:

* a connection subscribes to the ``desired`` topic of each of its devices and publishes for
  all of them, so it logs in with an account allowed to do that for many devices (a
  bench-only account on its own listener, ``bench/sim_broker.py``), not a device's own;
* ``status`` is published per device on (re)connect and at ``stop``, but the broker's last
  will is per connection, so a killed simulator leaves its devices "online" until the
  controller stops hearing them;
* no TUF, no download, no inference: a device trusts the hint and walks the phases.

Data flow: the paho network threads only queue what they receive (``_inbox``); one
scheduler thread owns every device: it applies desired hints, runs lifecycle steps and
staggered telemetry from one heap, signs and publishes. ``stats()`` counts messages per
channel in both directions (``desired`` received, the rest sent) for "MQTT messages per
device", and when each device last got a desired hint (the broker-restart benchmark).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt

from ..protocols import Channel, Desired, decode, encode
from ..protocols.topics import device_topic
from .device import HEALTHY, STEPS, SimDevice
from .keys import DEFAULT_SEED

log = logging.getLogger(__name__)

TELEMETRY = -1  # heap item kind: a telemetry period ends
SUBSCRIBE_CHUNK = 500  # topics per SUBSCRIBE packet


class SimFleet:
    def __init__(self, host: str, port: int, devices: Iterable[tuple[str, str]], *, auth: tuple[str, str],
                 connections: int = 8, step_s: float = 0.05, health_s: float = 0.5, telemetry: bool = True,
                 telemetry_period_s: float = 60.0, seed: str = DEFAULT_SEED, name: str = "simfleet",
                 goodbye: bool = True):
        """Args:
            devices: ``(device_id, hardware_id)`` pairs, enrolled with ``keys.public_key(id, seed)``.
            auth: the broker account the connections log in with (see the module docstring).
            telemetry: send telemetry each period (the period the controller's desired says;
                ``telemetry_period_s`` until the first hint), first ones staggered over a period.
            goodbye: publish ``status`` offline for every device at ``stop``.
        """
        self.host, self.port, self.auth = host, port, auth
        self.step_s, self.health_s, self.send_telemetry, self.goodbye = step_s, health_s, telemetry, goodbye
        self.devices: list[SimDevice] = []
        self.index: dict[str, int] = {}
        for i, (device_id, hw) in enumerate(devices):
            self.index[device_id] = i
            self.devices.append(SimDevice(device_id, hw, i % connections, seed=seed,
                                          telemetry_period_s=telemetry_period_s))
        self.by_conn: list[list[int]] = [[] for _ in range(connections)]
        for i, d in enumerate(self.devices):
            self.by_conn[d.conn].append(i)
        stamp = time.monotonic_ns()
        self.clients = [self._client(f"{name}-{i}-{stamp}") for i in range(connections)]
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.refused_publish = 0  # telemetry skipped while a connection was down
        self._subacks_due = [0] * connections
        self._greeted = [False] * connections
        self._inbox: deque[tuple[str, Any]] = deque()
        self._heap: list[tuple[float, int, int, int, int]] = []  # (due, tie, device index, step, epoch)
        self._tie = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-scheduler", daemon=True)

    def _client(self, client_id: str) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(*self.auth)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, 5)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        return c

    # ----- lifecycle -----

    def start(self) -> None:
        for i, c in enumerate(self.clients):
            c.user_data_set(i)
            c.connect_async(self.host, self.port, keepalive=60, clean_start=True)
            c.loop_start()
        self._thread.start()

    def ready(self) -> bool:
        """Every connection is up, has its subscriptions acknowledged and its devices announced."""
        return all(c.is_connected() for c in self.clients) and not any(self._subacks_due) and all(self._greeted)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"simulated fleet not connected after {timeout:.0f}s "
                                   f"({sum(c.is_connected() for c in self.clients)}/{len(self.clients)} connections)")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.goodbye:
            self._inbox.append(("goodbye", None))
            deadline = time.monotonic() + 30
            while self._inbox and time.monotonic() < deadline and self._thread.is_alive():
                time.sleep(0.05)
        self._stop.set()
        self._thread.join(timeout=10)
        for c in self.clients:
            c.disconnect()
            c.loop_stop()

    # ----- paho network threads: only queue -----

    def _on_connect(self, client: mqtt.Client, conn: int, _flags: Any, reason: Any, _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("simulator connection %d refused by the broker: %s", conn, reason)
            return
        self._greeted[conn] = False
        topics = [(device_topic(self.devices[i].device_id, Channel.DESIRED), 1) for i in self.by_conn[conn]]
        chunks = [topics[k:k + SUBSCRIBE_CHUNK] for k in range(0, len(topics), SUBSCRIBE_CHUNK)]
        self._subacks_due[conn] = len(chunks)
        for chunk in chunks:
            client.subscribe(chunk)
        self._inbox.append(("hello", conn))

    def _on_subscribe(self, _c: mqtt.Client, conn: int, _mid: int, reasons: Any, _props: Any = None) -> None:
        failed = [r for r in reasons if getattr(r, "is_failure", False)]
        if failed:
            log.warning("simulator connection %d: %d subscriptions refused (%s)", conn, len(failed), failed[0])
        self._subacks_due[conn] = max(0, self._subacks_due[conn] - 1)

    def _on_message(self, _c: mqtt.Client, _conn: int, message: mqtt.MQTTMessage) -> None:
        self._inbox.append(("desired", message.payload))

    # ----- the scheduler thread: owns every device -----

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._drain()
                self._due(time.monotonic())
            except Exception:  # a simulator bug must show, not stop the fleet
                log.exception("simulated fleet scheduler")
            self._stop.wait(0.005)

    def _drain(self) -> None:
        while self._inbox:
            kind, arg = self._inbox.popleft()
            if kind == "desired":
                self._desired(arg)
            elif kind == "hello":
                self._hello(arg)
            elif kind == "goodbye":
                for d in self.devices:
                    self._publish(d, Channel.STATUS, encode(d.status(False)), retain=True)

    def _hello(self, conn: int) -> None:
        """A connection came up: each of its devices says it is online and what it runs."""
        now, wall = time.monotonic(), time.time()
        for i in self.by_conn[conn]:
            d = self.devices[i]
            self._publish(d, Channel.STATUS, encode(d.status(True)), retain=True)
            self._publish(d, Channel.REPORTED, d.sign(d.reported(), wall))
            if self.send_telemetry and d.period_end is None:  # first period: staggered over one period
                frac = (zlib.crc32(d.device_id.encode()) % 10_000) / 10_000
                self._push(now + frac * d.telemetry_period_s, i, TELEMETRY, 0)
        self._greeted[conn] = True

    def _desired(self, payload: bytes) -> None:
        if not payload:
            return  # a retained hint cleared (revocation)
        try:
            desired = decode(payload, Desired)
        except Exception:
            self.received["invalid"] += 1
            return
        i = self.index.get(desired.device_id)
        if i is None:
            return
        self.received[Channel.DESIRED.value] += 1
        d = self.devices[i]
        report, step = d.on_desired(desired, time.monotonic())
        if report:
            self._publish(d, Channel.REPORTED, d.sign(d.reported(), time.time()))
        if step is not None:
            self._push(time.monotonic(), i, step, d.epoch)

    def _due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, i, step, epoch = heapq.heappop(heap)
            d = self.devices[i]
            if step == TELEMETRY:
                self._publish(d, Channel.TELEMETRY, d.sign(d.telemetry(time.time()), time.time()))
                self._push(now + d.telemetry_period_s, i, TELEMETRY, 0)
                continue
            if d.advance(step, epoch):
                self._publish(d, Channel.REPORTED, d.sign(d.reported(), time.time()))
                if step < len(STEPS) - 1:
                    self._push(now + self.step_s, i, step + 1, epoch)
                elif step == len(STEPS) - 1:
                    self._push(now + self.health_s, i, HEALTHY, epoch)

    def _push(self, due: float, i: int, step: int, epoch: int) -> None:
        heapq.heappush(self._heap, (due, next(self._tie), i, step, epoch))

    def _publish(self, d: SimDevice, channel: Channel, payload: bytes, *, retain: bool = False) -> None:
        client = self.clients[d.conn]
        if channel == Channel.TELEMETRY and not client.is_connected():
            self.refused_publish += 1  # QoS 0: an agent would keep it in its outbox; we count it
            return
        client.publish(device_topic(d.device_id, channel), payload, qos=0 if channel == Channel.TELEMETRY else 1,
                       retain=retain)
        self.sent[channel.value] += 1

    # ----- queries (any thread; reads of plain counters) -----

    def on(self, digest: str) -> int:
        """How many devices run ``digest`` in their control slot."""
        return sum(1 for d in self.devices if d.installed is not None and d.installed.digest == digest)

    def healthy_on(self, digest: str) -> int:
        return sum(1 for d in self.devices if d.installed is not None and d.installed.digest == digest
                   and d.phase.value == "healthy")

    def desired_since(self, t: float) -> tuple[int, float | None]:
        """(devices that got a desired hint at or after monotonic ``t``, seconds from ``t`` to the
        last of them when every device has one, else None)."""
        times = [d.desired_at for d in self.devices]
        got = [x for x in times if x is not None and x >= t]
        return len(got), (max(got) - t if got and len(got) == len(times) else None)

    def stats(self) -> dict[str, Any]:
        return {"devices": len(self.devices), "sent": dict(self.sent), "received": dict(self.received),
                "telemetry_skipped": self.refused_publish,
                "connected": sum(c.is_connected() for c in self.clients), "connections": len(self.clients)}
