"""Run an MQTT broker for the demo and tests: mosquitto when on PATH, else amqtt in-process.

``EmbeddedBroker`` runs amqtt's asyncio broker on its own event loop in a daemon thread;
``MosquittoBroker`` runs the ``mosquitto`` binary with a generated config (MQTT 5,
persistence, optional password file and ACL ``fleet/v1/devices/%u/#``). Both expose
``host``, ``port``, ``start()``, ``stop()`` and ``kind``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class BrokerError(Exception):
    """The broker could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


class Broker(Protocol):
    host: str
    port: int
    kind: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


class EmbeddedBroker:
    """amqtt (MQTT 3.1.1) in a background thread. Retained messages live in memory."""

    kind = "amqtt"

    def __init__(self, host: str = "127.0.0.1", port: int | None = None):
        self.host = host
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: object | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._thread.start()
        self._started.wait(15)
        if self._error is not None:
            raise BrokerError(f"amqtt failed to start: {self._error}") from self._error
        wait_for_port(self.host, self.port)
        log.info("embedded amqtt broker listening on %s:%d", self.host, self.port)

    def _run(self) -> None:
        from amqtt.broker import Broker as AmqttBroker

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 5000}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        async def main() -> None:
            broker = AmqttBroker(config)
            self._broker = broker
            await broker.start()

        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # surfaced to start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        loop.run_forever()

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None:
            return

        async def shutdown() -> None:
            try:
                await asyncio.wait_for(broker.shutdown(), timeout=5)  # type: ignore[attr-defined]
            except Exception as exc:  # best effort at shutdown
                log.debug("amqtt shutdown: %s", exc)

        fut = asyncio.run_coroutine_threadsafe(shutdown(), loop)
        try:
            fut.result(timeout=8)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(timeout=5)
        self._loop = self._broker = None


class MosquittoBroker:
    """The mosquitto binary with a generated config: MQTT 5, persistence, optional auth + ACL."""

    kind = "mosquitto"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        passwords: dict[str, str] | None = None,
        acl_device_prefix: bool = False,
        admin_users: tuple[str, ...] = (),
    ):
        self.host = host
        self.port = port or free_port(host)
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="edgefleet-mosquitto-"))
        self.passwords = passwords
        self.acl_device_prefix = acl_device_prefix
        self.admin_users = admin_users
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 10000",
        ]
        if self.passwords is None:
            lines.append("allow_anonymous true")
        else:
            pwfile = self.data_dir / "passwd"
            pwfile.write_text("".join(f"{u}:{p}\n" for u, p in self.passwords.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(pwfile)], check=True, capture_output=True)
            os.chmod(pwfile, 0o600)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        if self.acl_device_prefix:
            acl = self.data_dir / "acl"
            rules = ["pattern readwrite fleet/v1/devices/%u/#"]
            for user in self.admin_users:
                rules += [f"user {user}", "topic readwrite fleet/v1/#"]
            acl.write_text("\n".join(rules) + "\n")
            os.chmod(acl, 0o600)
            lines.append(f"acl_file {acl}")
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        if not self.available():
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        conf = self._write_config()
        self._proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_for_port(self.host, self.port)
        except BrokerError:
            self.stop()
            raise
        log.info("mosquitto listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


def start_default_broker(prefer: str = "auto", data_dir: str | os.PathLike[str] | None = None) -> Broker:
    """mosquitto if requested or on PATH (``prefer='auto'``), else embedded amqtt."""
    broker: Broker
    if prefer == "mosquitto" or (prefer == "auto" and MosquittoBroker.available()):
        broker = MosquittoBroker(data_dir=data_dir)
    else:
        broker = EmbeddedBroker()
    broker.start()
    return broker
