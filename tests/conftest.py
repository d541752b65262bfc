"""Shared fixtures: a real MQTT broker, a real controller on loopback HTTP, real agents.

Nothing here is a stand-in: the broker is amqtt (or mosquitto), the controller is the
FastAPI app on uvicorn with SQLite, and agents are the daemon's own ``Agent`` class
running ONNX Runtime on the synthetic digits camera, each in a thread of this process.
"""

from __future__ import annotations

import os

# CLI tables are read by tests: one width everywhere (a terminal, CI, an xdist worker)
os.environ["COLUMNS"] = "200"

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.cloud.api import create_app
from edgefleet.cloud.broker import EmbeddedBroker, MosquittoBroker, free_port
from edgefleet.cloud.cli.cloud_cmd import create_admin_token
from edgefleet.cloud.client import ApiClient
from edgefleet.cloud.demo.orchestrator import UvicornThread
from edgefleet.cloud.demo.train import TrainedModel, train_digit_models
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings

# The suite runs three tests at a time on two cores (README): a request queued behind another
# test's CPU for a few seconds is load, not a defect, yet httpx's 5 s default read timeout turns
# it into a failure. Lengthen only the default; a test that checks a timeout passes its own.
httpx._config.DEFAULT_TIMEOUT_CONFIG.read = 30.0
httpx._config.DEFAULT_TIMEOUT_CONFIG.write = 30.0
httpx._config.DEFAULT_TIMEOUT_CONFIG.pool = 30.0


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile ``src/`` once per run, in the controlling process. It is installed editable,
    so pip compiled none of it, and where ``PYTHONDONTWRITEBYTECODE`` is set (as on this
    project's CI machines) no process writes a cache either: every xdist worker and every
    ``fleet cloud serve``, simulator or agent process a test starts would compile the same
    modules from source, about 1 s of CPU each. Python checks each cached file against its
    source's size and mtime, so an edited module is never run from a stale one."""
    if hasattr(config, "workerinput"):
        return
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "src"), quiet=1)


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last value: {last!r})")


@pytest.fixture(scope="session")
def digit_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainedModel, TrainedModel]:
    return train_digit_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(auth_dir=tmp_path / "broker-auth")  # the controller writes passwd + acl here
    b.start()
    yield b
    b.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if not MosquittoBroker.available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); MQTT 5 / ACL tests need it")
    b = MosquittoBroker(data_dir=tmp_path / "mosquitto", auth_dir=tmp_path / "broker-auth")
    b.start()
    yield b
    b.stop()


@dataclass
class Stack:
    controller: Controller
    http: UvicornThread
    client: ApiClient
    token: str
    url: str
    broker: Any
    data_dir: Path

    def stop(self) -> None:
        self.http.stop()
        self.controller.stop()
        self.client.close()


def start_stack(data_dir: Path, broker: Any, *, token: str | None = None, http_port: int | None = None) -> Stack:
    protocol = "5" if getattr(broker, "kind", "") == "mosquitto" else "3.1.1"
    port = http_port or free_port()
    settings = load_settings(
        data_dir, env={}, http_port=port, mqtt_port=broker.port, mqtt_protocol=protocol,
        telemetry_period_s=0.5, reconcile_interval_s=0.5, broker_auth_dir=broker.auth_dir,
    )
    controller = Controller(settings)
    if controller.broker_auth is not None:
        controller.broker_auth.set_reload(broker.reload)
    controller.migrate()
    token = token or create_admin_token(controller)
    controller.start()
    http = UvicornThread(create_app(controller), settings.http_host, port)
    http.start()
    return Stack(controller, http, ApiClient(settings.base_url, token), token, settings.base_url, broker, data_dir)


@pytest.fixture
def stack(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[Stack]:
    s = start_stack(tmp_path / "controller", broker)
    yield s
    s.stop()


def write_roots(stack: Stack, directory: Path) -> Path:
    """The trusted roots a device is provisioned with (as `fleet device add --out` writes them)."""
    roots = stack.controller.trust.roots()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "director-root.json").write_bytes(roots.director)
    (directory / "image-root.json").write_bytes(roots.image)
    return directory


class RunningAgent:
    def __init__(self, agent: Any):
        self.agent = agent
        self.thread = threading.Thread(target=agent.run, name=f"agent-{agent.device_id}", daemon=True)

    def start(self) -> RunningAgent:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(timeout=15)

    @property
    def device_id(self) -> str:
        return str(self.agent.device_id)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., RunningAgent]]:
    """Factory: ``agents(stack, "cam-1")`` enrols the device and runs a real agent in a thread."""
    from edgefleet.edge_agent.config import AgentConfig
    from edgefleet.edge_agent.daemon import Agent

    running: list[RunningAgent] = []

    def make(stack: Stack, device_id: str, *, token: str | None = None, data_dir: Path | None = None, fps: float = 30.0,
             mqtt_password: str | None = None, **agent_opts: Any) -> RunningAgent:
        if token is None:
            creds = stack.client.enrol_device(device_id, "cpu-x86_64", {"test": "yes"})
            token, mqtt_password = creds["token"], creds["mqtt_password"]
        cfg = AgentConfig.model_validate({
            "agent": {"device_id": device_id, "data_dir": str(data_dir or tmp_path / "agents" / device_id),
                      "controller_url": stack.url, "token": token, "health_window_s": 1.0,
                      "trust_roots": str(write_roots(stack, tmp_path / "roots")), **agent_opts},
            "mqtt": {"host": stack.broker.host, "port": stack.broker.port, "username": device_id, "password": mqtt_password,
                     "protocol": "5" if getattr(stack.broker, "kind", "") == "mosquitto" else "3.1.1"},
            "source": {"kind": "synthetic-digits", "fps": fps, "seed": 1},
        })
        ra = RunningAgent(Agent(cfg)).start()
        running.append(ra)
        return ra

    yield make
    for ra in running:
        ra.stop()


def mqtt_client(broker: Any, username: str | None = None, password: str | None = None, *,
                client_id: str = "test-client", protocol: str | None = None) -> Any:
    """A connected paho client (loop started) on the test broker, with the given credentials.

    Use a device's credentials (``device_credentials``) or the controller's
    (``stack.controller.mqtt_credentials()``); anonymous clients are refused by every broker.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    v5 = (protocol or ("5" if getattr(broker, "kind", "") == "mosquitto" else "3.1.1")) == "5"
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    if username:
        c.username_pw_set(username, password)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def device_credentials(stack: Stack, device_id: str, hardware_id: str = "cpu-x86_64",
                       tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Enrol a device through the API; returns its one-time credentials
    (``token``, ``mqtt_username``, ``mqtt_password``)."""
    return stack.client.enrol_device(device_id, hardware_id, tags or {"test": "yes"})


def push(stack: Stack, model: TrainedModel) -> dict[str, Any]:
    m = model.manifest
    return stack.client.push_model(model.path, name=m.name, version=m.version, manifest=m.model_dump(mode="json", by_alias=True))


def slot_of(stack: Stack, device_id: str, slot: str = "control") -> dict[str, Any]:
    return stack.client.get_device(device_id)["slots"][slot]


@pytest.fixture(autouse=True)
def _no_leftover_files(tmp_path: Path) -> Iterator[None]:
    yield
    shutil.rmtree(tmp_path / "agents", ignore_errors=True)


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return None


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL (initdb + pg_ctl on a free port); yields its URL.

    ``DATABASE_URL`` pointing at PostgreSQL wins if set (CI). Skips with the reason when no
    server binaries are installed. As root, the server runs as the ``postgres`` user.
    """
    import os
    import subprocess

    env_url = os.environ.get("DATABASE_URL", "")
    if env_url.startswith(("postgres://", "postgresql")):
        from sqlalchemy import text

        from edgefleet.cloud.db import make_engine

        engine = make_engine(env_url)
        with engine.begin() as conn:  # a clean schema for this test
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
        yield env_url
        return
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin")
    import tempfile

    run_as: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="edgefleet-pg-"))  # pytest's tmp dirs are private to root
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the PostgreSQL server as")
        root.chmod(0o777)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if run_as:
        os.chown(sock, pw.pw_uid, pw.pw_gid)
    port = free_port()
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "edgefleet", "-A", "trust", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://edgefleet@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
