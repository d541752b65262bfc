"""Benchmark: controller MQTT ingest over TLS + auth ÷ over plain TCP + auth, same broker, same run.

One broker (mosquitto when installed, else the embedded amqtt) with two listeners — plain
TCP and TLS with a server certificate from a fresh fleet CA — and the controller's password
file + ACL on both (no broker accepts anonymous clients, so "plain" is plain TCP with the
same authentication). The controller (SQLite, its real handlers) gets ``--devices``
enrolled devices. Each round starts an ``MqttBridge`` with the controller's ``status`` and
``events`` handlers on one listener; a separate process (the devices) connects every device
with its own credentials on the same listener and has each publish ``--messages`` QoS 1 ``status`` messages as fast as it can,
and times until the bridge has applied them all (its ``ok`` counter). Rounds alternate
plain, TLS, plain, TLS … (``--rounds`` each) so a busy machine hurts both alike; the
figure is the median over rounds of TLS rate ÷ the plain rate measured just before it. A second figure uses handlers that do
nothing, i.e. the transport alone (the upper bound of TLS's share). Goal: ratio ≥ 0.8.

    python bench/bench_mqtt_tls.py [--devices 20] [--messages 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edgefleet.cloud.bridge import BridgeTls, MqttBridge  # noqa: E402
from edgefleet.cloud.broker import BrokerTls, EmbeddedBroker, MosquittoBroker  # noqa: E402
from edgefleet.cloud.devices import fleet  # noqa: E402
from edgefleet.cloud.pki import FleetCA  # noqa: E402
from edgefleet.cloud.runtime import Controller  # noqa: E402
from edgefleet.cloud.settings import load_settings  # noqa: E402
from edgefleet.protocols import Channel, Status, device_topic, encode  # noqa: E402


def _device_client(port: int, device: tuple[str, str, str], ca_file: str | None, v5: bool) -> mqtt.Client:
    device_id, username, password = device
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    c.username_pw_set(username, password)
    c.max_inflight_messages_set(100)
    if ca_file is not None:
        c.tls_set(ca_certs=ca_file)
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    return c


def publisher(port: int, devices: list[tuple[str, str, str]], ca_file: str | None, v5: bool, messages: int,
              ready: Any, go: Any, done: Any) -> None:
    """In its own process (the devices are not the controller): connect every device, wait for
    ``go``, publish ``messages`` QoS 1 status messages per device, wait for the broker's acks."""
    try:
        clients = [_device_client(port, d, ca_file, v5) for d in devices]
    except Exception as exc:
        ready.put(f"device clients could not connect: {exc!r}")
        return
    deadline = time.monotonic() + 60
    while not all(c.is_connected() for c in clients):
        if time.monotonic() > deadline:
            ready.put("device clients did not connect")
            return
        time.sleep(0.02)
    payloads = {d[0]: [encode(Status(device_id=d[0], online=i % 2 == 0, agent_version="bench")) for i in range(messages)]
                for d in devices}
    ready.put("ok")
    go.wait()
    infos = []

    def run(client: mqtt.Client, device_id: str) -> None:
        topic = device_topic(device_id, Channel.STATUS)
        infos.extend(client.publish(topic, p, qos=1, retain=False) for p in payloads[device_id])

    threads = [threading.Thread(target=run, args=(c, d[0])) for c, d in zip(clients, devices)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for info in infos:
        info.wait_for_publish(60)
    for c in clients:
        c.disconnect()
        c.loop_stop()
    done.put("ok")


def one_round(controller: Controller, broker: Any, devices: list[tuple[str, str, str]], ca: FleetCA, *, tls: bool,
              messages: int, noop: bool, v5: bool, n: int) -> float:
    """Messages applied per second by the bridge, over TLS or plain TCP."""
    port = broker.tls_port if tls else broker.port
    username, password = controller.mqtt_credentials()
    applied = (lambda _m: None) if noop else None
    bridge = MqttBridge(
        "127.0.0.1", port, tls=BridgeTls(ca.ca_file) if tls else None, client_id=f"bench-bridge-{n}",
        protocol="5" if v5 else "3.1.1", username=username, password=password,
        handlers={Channel.STATUS: applied or controller._on_status, Channel.EVENTS: applied or controller._on_event},
    )
    bridge.start()
    assert bridge.connected.wait(10), "bridge did not connect"
    ctx = multiprocessing.get_context("spawn")
    ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=publisher, args=(port, devices, str(ca.ca_file) if tls else None, v5, messages,
                                               ready, go, done))
    proc.start()
    answer = None
    started = time.monotonic()
    while answer is None:
        try:
            answer = ready.get(timeout=1)
        except queue.Empty:
            if not proc.is_alive() or time.monotonic() - started > 180:
                raise SystemExit(f"publisher process did not get ready (exit code {proc.exitcode})") from None
    if answer != "ok":
        raise SystemExit(answer)
    base = bridge.counters[("status", "ok")]
    total = messages * len(devices)
    start = time.perf_counter()
    go.set()
    deadline = time.monotonic() + 300
    while bridge.counters[("status", "ok")] - base < total:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {bridge.counters[('status', 'ok')] - base} of {total} applied; counters {dict(bridge.counters)}")
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    done.get(timeout=60)
    proc.join(10)
    bridge.stop()
    return total / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--messages", type=int, default=100, help="per device per round")
    ap.add_argument("--rounds", type=int, default=5, help="per transport")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-tls-") as d:
        tmp = Path(d)
        ca = FleetCA.create(tmp / "controller" / "pki")
        ca.issue_server_cert(["localhost"], ["127.0.0.1"])
        tls = BrokerTls.from_pki(ca.dir)
        broker: Any = (MosquittoBroker(data_dir=tmp / "mosquitto", auth_dir=tmp / "broker-auth", tls=tls)
                       if MosquittoBroker.available() else EmbeddedBroker(auth_dir=tmp / "broker-auth", tls=tls))
        broker.start()
        v5 = broker.kind == "mosquitto"
        try:
            settings = load_settings(tmp / "controller", env={}, mqtt_port=broker.port, broker_auth_dir=broker.auth_dir,
                                     mqtt_protocol="5" if v5 else "3.1.1")
            controller = Controller(settings)
            if controller.broker_auth is not None:
                controller.broker_auth.set_reload(broker.reload)
            controller.migrate()
            with controller.session() as s:
                creds = [fleet.enrol(s, f"bench-{i:03d}", "cpu-x86_64") for i in range(args.devices)]
            devices = [(c.device_id, c.mqtt_username, c.mqtt_password) for c in creds]
            controller.sync_broker_auth()
            time.sleep(0.5)  # the broker re-reads its password file
            results: dict[tuple[bool, bool], list[float]] = {}
            n = 0
            for noop in (False, True):
                for _ in range(args.rounds):
                    for use_tls in (False, True):
                        n += 1
                        rate = one_round(controller, broker, devices, ca, tls=use_tls, messages=args.messages,
                                         noop=noop, v5=v5, n=n)
                        results.setdefault((noop, use_tls), []).append(rate)
            controller.engine.dispose()
        finally:
            broker.stop()
    total = args.devices * args.messages
    print(f"broker: {broker.kind} (MQTT {'5' if v5 else '3.1.1'}), {args.devices} devices × {args.messages} "
          f"status messages = {total} per round, {args.rounds} rounds per transport, interleaved")
    for noop, label in ((False, "controller handlers (SQLite)"), (True, "no-op handlers (transport only)")):
        plain, over_tls = statistics.median(results[(noop, False)]), statistics.median(results[(noop, True)])
        print(f"{label}: plain {plain:,.0f} msg/s, TLS {over_tls:,.0f} msg/s "
              f"(rounds: plain {[round(r) for r in results[(noop, False)]]}, TLS {[round(r) for r in results[(noop, True)]]})")
        paired = statistics.median(t / p for p, t in zip(results[(noop, False)], results[(noop, True)]))
        print(f"  ratio TLS+auth / plain+auth = {paired:.2f} (median of adjacent pairs; of medians {over_tls / plain:.2f})"
              + ("   goal >= 0.8" if not noop else ""))


if __name__ == "__main__":
    main()
