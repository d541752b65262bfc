"""Run an MQTT broker for the demo and tests: mosquitto when on PATH, else amqtt in-process.

Neither accepts anonymous clients. Both read the controller's ``passwd`` and ``acl`` files
in ``auth_dir`` (``cloud/broker_auth.py``): ``EmbeddedBroker`` runs amqtt's asyncio
broker on its own event loop in a daemon thread with our auth and topic plugins;
``MosquittoBroker`` runs the ``mosquitto`` binary with a generated config (MQTT 5,
persistence, ``password_file`` and ``acl_file``). ``reload()`` makes either re-read the
files at once (SIGHUP for mosquitto, which also disconnects clients whose password no
longer matches). Both expose ``host``, ``port``, ``auth_dir``, ``start()``, ``stop()``,
``reload()`` and ``kind``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class BrokerError(Exception):
    """The broker could not be started."""


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener: the broker's certificate and key, the CA clients' certificates must chain to,
    the CRL to check them against, and whether a client certificate is required (its CN is then
    the client's username on mosquitto)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    crl_file: Path | None = None
    require_certificate: bool = False

    @classmethod
    def from_pki(cls, pki_dir: str | os.PathLike[str], *, require_certificate: bool = False) -> BrokerTls:
        """The fleet CA's files (``cloud/pki.py`` layout) as a listener's TLS settings."""
        d = Path(pki_dir)
        crl = d / "crl.pem"
        return cls(d / "ca.pem", d / "server.pem", d / "server.key", crl if crl.is_file() else None,
                   require_certificate)

    def ssl_context(self) -> ssl.SSLContext:
        """A server-side context: our certificate, client certificates checked against the CA and CRL."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        ctx.verify_mode = ssl.CERT_REQUIRED if self.require_certificate else ssl.CERT_OPTIONAL
        if self.crl_file is not None:
            ctx.load_verify_locations(cafile=str(self.crl_file))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        return ctx

    def mosquitto_lines(self) -> list[str]:
        lines = [f"cafile {self.ca_file}", f"certfile {self.cert_file}", f"keyfile {self.key_file}",
                 "tls_version tlsv1.2"]
        if self.crl_file is not None:
            lines.append(f"crlfile {self.crl_file}")
        if self.require_certificate:
            lines += ["require_certificate true", "use_identity_as_username true"]
        else:
            lines.append("require_certificate false")
        return lines


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
    auth_dir: Path

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def reload(self) -> None: ...


def _auth_dir(owner: object, auth_dir: str | os.PathLike[str] | None) -> Path:
    """The broker-auth directory (created with deny-all files if new). A temporary one made
    here is removed when ``owner`` (the broker) is collected or the process exits."""
    from .broker_auth import BrokerAuthFiles

    if auth_dir is not None:
        path = Path(auth_dir)
    else:
        path = Path(tempfile.mkdtemp(prefix="edgefleet-broker-auth-"))
        weakref.finalize(owner, shutil.rmtree, path, ignore_errors=True)
    BrokerAuthFiles(path).ensure()
    return path


class EmbeddedBroker:
    """amqtt (MQTT 3.1.1) in a background thread. Retained messages live in memory."""

    kind = "amqtt"
    bind_retry_s = 15.0  # how long start() retries a port that is still in use

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *,
                 auth_dir: str | os.PathLike[str] | None = None,
                 tls: BrokerTls | None = None, tls_port: int | None = None, tls_host: str | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.tls, self.tls_host = tls, tls_host or host  # a TLS listener besides the plain one
        self.tls_port = (tls_port or free_port(self.tls_host)) if tls else None
        self.auth_dir = _auth_dir(self, auth_dir)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: object | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        deadline = time.monotonic() + self.bind_retry_s
        while True:
            self._error = None
            self._started.clear()
            self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
            self._thread.start()
            self._started.wait(15)
            if self._error is None:
                break
            # A restart on the same port may find it still held for a moment (the old listener's
            # socket closing, or a client's connection in TIME_WAIT on some kernels): try again.
            if not _address_in_use(self._error) or time.monotonic() > deadline:
                raise BrokerError(f"amqtt failed to start: {self._error}") from self._error
            log.info("embedded amqtt broker: %s:%d still in use, retrying", self.host, self.port)
            time.sleep(0.5)
        wait_for_port(self.host, self.port)
        log.info("embedded amqtt broker listening on %s:%d", self.host, self.port)
        if self.tls_port is not None:
            wait_for_port(self.tls_host, self.tls_port)
            log.info("embedded amqtt broker: TLS on %s:%d", self.tls_host, self.tls_port)

    def _run(self) -> None:
        from amqtt.broker import Broker as AmqttBroker

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 5000}},
            "plugins": {
                "edgefleet.cloud.amqtt_plugins.FleetAuthPlugin": {"auth_dir": str(self.auth_dir)},
                "edgefleet.cloud.amqtt_plugins.FleetTopicPlugin": {"auth_dir": str(self.auth_dir)},
            },
        }

        tls = self.tls
        if tls is not None:
            config["listeners"]["tls"] = {  # type: ignore[index]
                "type": "tcp", "bind": f"{self.tls_host}:{self.tls_port}", "max_connections": 5000, "ssl": True,
                "cafile": str(tls.ca_file), "certfile": str(tls.cert_file), "keyfile": str(tls.key_file),
            }

        async def main() -> None:
            broker = AmqttBroker(config)
            if tls is not None:  # amqtt's own context never requires a client certificate, nor reads a CRL
                broker._create_ssl_context = lambda _listener: tls.ssl_context()  # type: ignore[method-assign]
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

    def reload(self) -> None:
        """Re-read ``passwd`` and ``acl`` now (they are also re-read when they change)."""
        from .amqtt_plugins import RulesCache

        RulesCache.for_dir(self.auth_dir).rules(force=True)

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
        # If the shutdown timed out, its listeners are still bound: close them so the port is free.
        loop.call_soon_threadsafe(_close_listeners, broker)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(timeout=5)
        self._loop = self._broker = None


def _close_listeners(broker: object) -> None:
    for server in getattr(broker, "_servers", {}).values():
        instance = getattr(server, "instance", None)
        if instance is not None:
            try:
                instance.close()
            except Exception as exc:  # best effort at shutdown
                log.debug("amqtt listener close: %s", exc)


def _address_in_use(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (98, 48):  # EADDRINUSE (Linux, BSD)
            return True
        if "address already in use" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class MosquittoBroker:
    """The mosquitto binary with a generated config: MQTT 5, persistence, optional auth + ACL."""

    kind = "mosquitto"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        auth_dir: str | os.PathLike[str] | None = None,
        tls: BrokerTls | None = None,
        tls_port: int | None = None,
        tls_host: str | None = None,
    ):
        self.host = host
        self.port = port or free_port(host)
        self.tls, self.tls_host = tls, tls_host or host  # a TLS listener besides the plain one
        self.tls_port = (tls_port or free_port(self.tls_host)) if tls else None
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="edgefleet-mosquitto-"))
        self.auth_dir = _auth_dir(self, auth_dir if auth_dir is not None else self.data_dir / "auth")
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
            "max_queued_messages 1000000",  # the controller's queue holds a whole wave's reports (see docs/outages.md)
        ]
        from .broker_auth import ACL_FILE, PASSWD_FILE

        # never anonymous; the files are written by the controller (broker_auth.BrokerAuthFiles)
        lines += [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.auth_dir / PASSWD_FILE}",
            f"acl_file {self.auth_dir / ACL_FILE}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # the 0600 files belong to the controller's user
        if self.tls is not None:  # settings after a `listener` line belong to that listener
            lines += [f"listener {self.tls_port} {self.tls_host}", *self.tls.mosquitto_lines()]
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        if not self.available():
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        conf = self._write_config()
        # its log goes to a file, never to a pipe nobody reads (a flood of refusals would block it)
        with open(self.data_dir / "mosquitto.log", "ab") as log_file:
            self._proc = subprocess.Popen(
                ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log_file
            )
        try:
            wait_for_port(self.host, self.port)
            if self.tls_port is not None:
                wait_for_port(self.tls_host, self.tls_port)
        except BrokerError:
            self.stop()
            raise
        log.info("mosquitto listening on %s:%d%s", self.host, self.port,
                 f", TLS on {self.tls_host}:{self.tls_port}" if self.tls_port else "")

    def reload(self) -> None:
        """SIGHUP: re-read password file and ACL; clients whose password changed are dropped."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


def start_default_broker(prefer: str = "auto", data_dir: str | os.PathLike[str] | None = None,
                         auth_dir: str | os.PathLike[str] | None = None) -> Broker:
    """mosquitto if requested or on PATH (``prefer='auto'``), else embedded amqtt."""
    broker: Broker
    if prefer == "mosquitto" or (prefer == "auto" and MosquittoBroker.available()):
        broker = MosquittoBroker(data_dir=data_dir, auth_dir=auth_dir)
    else:
        broker = EmbeddedBroker(auth_dir=auth_dir)
    broker.start()
    return broker
