"""Benchmark: from `fleet device revoke` to the device's next publish being refused.

A real controller (SQLite, HTTP API on uvicorn) writes the broker's password file and ACL;
the broker is the embedded amqtt and, when installed, mosquitto. One enrolled device
publishes a numbered telemetry message every 10 ms on its own connection; an observer on
the controller's account records what the broker delivers. At t0 the operator's API call
``DELETE /api/v1/devices/{id}`` is sent; the figure is the time from t0 to the last
message the broker still delivered (after it, every publish is refused), and also the
time until the broker dropped the connection (mosquitto does on reload; amqtt refuses each
publish instead). Baseline in the same run: the publish → delivery latency of the same
connection before the revoke. Goal: ≤ 2 s.

    python bench/bench_revoke.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from local_stack import local_stack  # noqa: E402


def _client(broker: Any, protocol: str, user: str, password: str, client_id: str) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311)
    c.username_pw_set(user, password)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def one_round(stack: Any, i: int) -> dict[str, float]:
    device = f"bench-revoke-{i}"
    creds = stack.client.enrol_device(device, "cpu-x86_64")
    delivered: dict[int, float] = {}
    sent: dict[int, float] = {}
    lock = threading.Lock()

    def on_message(_c: Any, _u: Any, m: Any) -> None:
        n = int(m.payload)
        with lock:
            delivered[n] = time.perf_counter()

    user, password = stack.controller.mqtt_credentials()
    obs = _client(stack.broker, stack.protocol, user, password, f"bench-observer-{i}")
    obs.on_message = on_message
    obs.subscribe(f"fleet/v1/devices/{device}/telemetry", qos=0)
    dev = _client(stack.broker, stack.protocol, device, creds["mqtt_password"], device)
    time.sleep(0.5)
    disconnected_at: list[float] = []
    dev.on_disconnect = lambda *_a: disconnected_at.append(time.perf_counter())
    stop = threading.Event()

    def pump() -> None:
        n = 0
        while not stop.is_set():
            sent[n] = time.perf_counter()
            dev.publish(f"fleet/v1/devices/{device}/telemetry", str(n).encode(), qos=0)
            n += 1
            time.sleep(0.01)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    time.sleep(1.0)
    with lock:
        baseline = statistics.median(delivered[n] - sent[n] for n in list(delivered)[-50:])
    t0 = time.perf_counter()
    stack.client.revoke_device(device)
    time.sleep(3.0)
    stop.set()
    t.join()
    with lock:
        last = max(delivered.values())
    dev.loop_stop()
    obs.loop_stop()
    obs.disconnect()
    return {"refused_after_s": max(0.0, last - t0), "baseline_s": baseline,
            "disconnected_after_s": (disconnected_at[0] - t0) if disconnected_at else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from edgefleet.cloud.broker import MosquittoBroker

    kinds = ["amqtt"] + (["mosquitto"] if MosquittoBroker.available() else [])
    for kind in kinds:
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-revoke-{kind}-"))
        with local_stack(tmp, prefer_broker=kind) as stack:
            rows = [one_round(stack, i) for i in range(args.rounds)]
        refused = statistics.median(r["refused_after_s"] for r in rows)
        base = statistics.median(r["baseline_s"] for r in rows)
        disc = [r["disconnected_after_s"] for r in rows if r["disconnected_after_s"] == r["disconnected_after_s"]]
        print(f"{kind}: revoke → next publish refused: median {refused * 1000:.0f} ms "
              f"(max {max(r['refused_after_s'] for r in rows) * 1000:.0f} ms over {args.rounds} rounds; goal ≤ 2000 ms); "
              f"publish→delivery baseline {base * 1000:.1f} ms; ratio {refused / base:.0f}× the baseline; "
              f"connection dropped: {'median %.0f ms' % (statistics.median(disc) * 1000) if disc else 'no (each publish refused)'}")


if __name__ == "__main__":
    main()
