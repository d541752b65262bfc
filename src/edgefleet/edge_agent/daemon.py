"""The agent daemon: wires config, state, MQTT, the updater and the inference pipeline.

Threads: the MQTT network loop (paho), the control path, the shadow path, the capture
encoder and the uploader (``capture.py``, ``uploader.py``), and the main loop here, which applies desired state (latest wins), publishes ``reported`` and
``telemetry``, watches the health window of newly activated models and rolls back
locally when one breaks.
"""

from __future__ import annotations

import logging
import platform
import queue
import random
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx

from .. import __version__
from ..hardware import HardwareError, detect_profile
from ..hardware.telemetry import TegrastatsReader, collect_hardware_stats
from ..protocols import SLOTS, Channel, Desired, Phase, Reported, SlotReport, Telemetry
from ..protocols.messages import Inventory
from ..registry.tuf import DeviceVerifier, ResumableFetcher, provision
from .app_output import AppOutput, PredictionServer, parse_address
from .campaigns import Campaigns
from .capture import Capture
from .config import AgentConfig
from .disk import DiskWatch, disk_full, is_disk_full
from .errors import AgentError, ConfigError, DiskFull
from .identity import NEXT, IdentityStore, RotationError, confirm_credentials, fetch_new_credentials
from .inventory import StaticInventory
from .inventory import collect as collect_inventory
from .isolation import ThreadPolicy
from .metrics import start_agent_metrics
from .mqtt_session import AgentMqtt
from .network import LinkProbe, NetworkGate
from .outbox import Outbox
from .pipeline import PeriodStats, Pipeline
from .report_signer import ReportKeyRefused, ReportSigner
from .signal_source import SignalSource, parse_signal_address
from .signals import SignalTable
from .sources import open_source
from .state import AgentState, StateStore
from .tls import http_verify, warn_plain_links
from .updater import Updater

log = logging.getLogger(__name__)

HEALTH_MIN_FRAMES = 10
HEALTH_MAX_BAD_RATIO = 0.05
HEALTH_MIN_SLOW_PERIODS = 2  # latency: the median frame over budget in most periods of the window


def detect_device(configured: str) -> tuple[Any, str]:
    """The hardware profile and the hardware id (``hardware_id`` in config overrides detection)."""
    try:
        profile = detect_profile()
    except HardwareError as exc:
        log.warning("hardware detection failed (%s); assuming a CPU-only device", exc)
        profile = None
    detected = profile.hardware_id if profile else f"cpu-{platform.machine().lower() or 'unknown'}"
    return profile, (detected if configured == "auto" else configured)


class Agent:
    def __init__(self, config: AgentConfig):
        self.device_id = config.agent.device_id
        self.data_dir = config.agent.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # credentials provisioned into (and rotated in) <data_dir>/identity win over agent.toml's
        self.identity = IdentityStore(self.data_dir)
        config = self.identity.apply(config)
        self.config = config
        self._credentials_epoch = self.identity.epoch()
        self._rotation_wanted: int | None = None
        self._rotation_retry_at = 0.0
        self.profile, self.hardware_id = detect_device(config.agent.hardware_id)
        # device-wide writes a full disk refused (state, outbox, report seq): sent in reported.disk
        self.disk_watch = DiskWatch(on_change=self._disk_changed)
        self.store = StateStore(self.data_dir, self.disk_watch)
        self.state: AgentState = self.store.load()
        # link kind + signed network policy + bandwidth caps (network.py): fetchers and uploader share its buckets
        self.network = NetworkGate(LinkProbe.from_config(config.network), max_download_bps=config.network.max_download_bps,
                                   max_upload_bps=config.network.max_upload_bps)
        self.network.set_policy(self.state.settings.network_policy)
        src = config.source
        cap = config.capture
        self.outbox: Outbox | None = None
        if cap.enabled:
            outbox_dir = cap.outbox_dir or self.data_dir / "outbox"
            try:
                self.outbox = Outbox(outbox_dir, max_bytes=cap.max_bytes, min_free_bytes=cap.min_free_bytes)
            except Exception as exc:  # a full disk at start: inference and reports go on without clips
                if not isinstance(exc, (OSError, sqlite3.Error)):
                    raise
                if is_disk_full(exc) or "disk I/O" in str(exc):  # SQLite: no room for its shared memory file
                    self.disk_watch.note(disk_full("outbox", outbox_dir, 256 * 1024, exc))
                log.error("device %s: outbox %s cannot be opened (%s); capture is off until the agent "
                          "restarts with room on the disk", self.device_id, outbox_dir, exc)
        self.capture = Capture(
            self.device_id, self.outbox, self._publish_event, policy=self.state.settings.capture,
            work_dir=self.data_dir / "capture-work", max_side=cap.max_side, fps_hint=src.fps,
            cooldown_s=cap.cooldown_s, dedupe_threshold=cap.dedupe_threshold, near_band=cap.near_band,
        )
        self.capture.disk_watch = self.disk_watch
        self.campaigns = Campaigns(self.data_dir, device_id=self.device_id)  # capture campaigns from the signed settings
        self.capture.campaigns = self.campaigns if self.capture.recording else None
        self.pipeline = Pipeline(
            open_source(src.kind, src.uri, seed=src.seed if src.seed is not None else hash(self.device_id) & 0xFFFF, loop=src.loop),
            src.fps, shadow_queue=cap.shadow_queue, capture=self.capture,
            isolation=ThreadPolicy.from_settings(
                shadow_cpus=config.pipeline.shadow_cpus, control_cpus=config.pipeline.control_cpus,
                sched_idle=config.pipeline.shadow_sched_idle, nice=config.pipeline.shadow_nice,
            ),
        )
        address = parse_address(config.output.socket, self.data_dir)
        self.app_output = AppOutput(
            self.device_id, PredictionServer(address, client_queue=config.output.client_queue) if address else None
        )
        self.pipeline.app_output = self.app_output
        if self.app_output.server is not None:  # the application's per-frame context
            self.app_output.server.on_context = self.campaigns.set_context
        signals_at = parse_signal_address(config.signals.socket, self.data_dir)  # sidecar signals (CAN, ROS, GPS)
        self.signal_source: SignalSource | None = None
        if signals_at is not None:
            self.signal_source = SignalSource(signals_at, SignalTable(config.signals.max_age_s, config.signals.max_keys),
                                              max_rate_hz=config.signals.max_rate_hz)
        headers = {"Authorization": f"Bearer {config.agent.token}"} if config.agent.token else {}
        warn_plain_links(config)
        self.http_verify = http_verify(config.agent.ca_file)  # every HTTP client verifies the controller
        self.http = httpx.Client(base_url=config.agent.controller_url, headers=headers, timeout=httpx.Timeout(30.0, connect=5.0),
                                 verify=self.http_verify)
        self.mqtt = AgentMqtt(
            self.device_id, config.mqtt, on_desired=self._on_desired, on_connect=self._on_connect,
            agent_version=__version__, hardware_id=self.hardware_id,
        )
        self.signer = ReportSigner(self.data_dir, self.device_id)  # signs every reported and telemetry
        self.mqtt.signer = self.signer.sign
        self._report_key_tried = threading.Event()
        self._lock = threading.RLock()
        self.verifier = self._verifier(config)
        self.updater = Updater(
            device_id=self.device_id, data_dir=self.data_dir, state=self.state, store=self.store,
            pipeline=self.pipeline, report=self.publish_reported, threads=config.inference.threads,
            profile=self.profile, verifier=self.verifier,
        )
        self.updater.shadow_spinning = config.pipeline.ort_allow_spinning
        self.updater.network = self.network
        self._desired_q: queue.Queue[Desired] = queue.Queue()
        self._last_desired: Desired | None = None
        self._stop = threading.Event()
        self._health: dict[str, dict[str, float]] = {}
        self.uploader: Any = None
        if self.outbox is not None and cap.upload:
            from .uploader import Uploader

            self.uploader = Uploader(
                config.agent.controller_url, self.device_id, config.agent.token, self.outbox,
                max_bytes_per_day=self.state.settings.capture.max_bytes_per_day,
                chunk_size=cap.upload_chunk_bytes, poll_interval_s=cap.upload_poll_s,
                backoff_max_s=cap.backoff_max_s, verify=self.http_verify,
                limiter=self.network.upload, link_refusal=self.network.upload_refusal,
            )
        self.tegrastats: TegrastatsReader | None = None
        self.hardware_stats: Callable[[], dict[str, Any]] | None = None
        if self.profile is not None:
            profile = self.profile
            if profile.is_jetson and shutil.which("tegrastats"):
                self.tegrastats = TegrastatsReader()
            self.hardware_stats = lambda: collect_hardware_stats(profile, tegrastats=self.tegrastats)

    def _verifier(self, config: AgentConfig) -> DeviceVerifier:
        """TUF verification against the controller, from the roots provisioned with the device."""
        trust_dir = self.data_dir / "trust"
        roots = config.agent.trust_roots
        if roots is not None and not (trust_dir / "trusted" / "director-root.json").exists():
            try:
                provision(
                    trust_dir, director_root=(roots / "director-root.json").read_bytes(),
                    image_root=(roots / "image-root.json").read_bytes(),
                )
                log.info("device %s provisioned with trusted roots from %s", self.device_id, roots)
            except OSError as exc:
                log.error("device %s: cannot read trusted roots in %s: %s", self.device_id, roots, exc)
        headers = {"Accept-Encoding": "identity"}
        if config.agent.token:
            headers["Authorization"] = f"Bearer {config.agent.token}"
        self._fetch_http = httpx.Client(headers=headers, follow_redirects=False, timeout=httpx.Timeout(30.0, connect=5.0),
                                        verify=self.http_verify)
        fetcher = ResumableFetcher(
            client=self._fetch_http,
            gap_timeout=config.agent.download_gap_timeout_s, deadline=config.agent.download_deadline_s,
            limiter=self.network.download,
        )
        if config.agent.cache_url:  # a depot cache first (edge_agent/depot.py); never sent the token
            from .depot import CacheFirstVerifier

            cache = ResumableFetcher(gap_timeout=config.agent.download_gap_timeout_s, max_stalls=2, backoff=0.1,
                                     verify=self.http_verify, limiter=self.network.download)
            return CacheFirstVerifier.for_controller(config.agent.controller_url, self.device_id, self.hardware_id,
                                                     trust_dir, fetcher=fetcher, cache_url=config.agent.cache_url,
                                                     cache_fetcher=cache)
        return DeviceVerifier.for_controller(config.agent.controller_url, self.device_id, self.hardware_id, trust_dir, fetcher=fetcher)

    # ----- callbacks from MQTT -----

    def _on_desired(self, desired: Desired) -> None:
        self._desired_q.put(desired)

    # ----- credentials rotation (edge_agent/identity.py) -----

    def _set_token(self, token: str) -> None:
        """Every HTTP client of the agent uses ``token`` from now on."""
        auth = f"Bearer {token}"
        self.http.headers["Authorization"] = auth
        self._fetch_http.headers["Authorization"] = auth
        if self.uploader is not None:
            self.uploader.set_token(token)

    def _rotate_credentials(self) -> None:
        """Fetch, store and confirm new credentials; on any failure the old ones stay and we retry."""
        epoch = self._rotation_wanted
        if epoch is None:
            return
        current = self.identity.load()
        try:
            pending = self.identity.load(NEXT) or fetch_new_credentials(self.http, epoch)
            self.identity.save(pending, NEXT)
            if pending.mqtt_username:
                self.mqtt.set_credentials(pending.mqtt_username, pending.mqtt_password)  # used from the next connect
            if confirm_credentials(self.http, pending.token):
                self.identity.promote_next()
                self._set_token(pending.token)
                self._credentials_epoch, self._rotation_wanted = epoch, None
                log.info("device %s: credentials rotated (epoch %d)", self.device_id, epoch)
                return
            self.identity.discard_next()  # superseded: ask again
            raise RotationError("the new credentials were superseded")
        except (RotationError, ConfigError, OSError) as exc:  # OSError: a full disk; retried
            if current is not None and current.mqtt_username:
                self.mqtt.set_credentials(current.mqtt_username, current.mqtt_password)
            elif self.config.mqtt.username:
                self.mqtt.set_credentials(self.config.mqtt.username, self.config.mqtt.password)
            self._rotation_retry_at = time.time() + 10.0
            log.warning("device %s: credentials rotation %d not done yet (%s); retrying", self.device_id, epoch, exc)

    def _on_connect(self) -> None:
        self.publish_reported()

    # ----- report key (edge_agent/report_signer.py) -----

    def _register_report_key(self) -> None:
        """Bind the report key to this device (until then the controller refuses our reports):
        retried with backoff; once it is taken, ``reported`` is sent again."""
        delay, first = 2.0, True
        while not self._stop.is_set():
            try:
                done = self.signer.register(self.http)
            except ReportKeyRefused as exc:
                done = False
                log.error("device %s: %s; reports stay refused until an admin runs `fleet device reset-report-key %s`",
                          self.device_id, exc, self.device_id)
            self._report_key_tried.set()
            if done:
                if not first and self.mqtt.connected.is_set():
                    self.publish_reported()
                return
            first = False
            if self._stop.wait(delay * random.uniform(0.8, 1.2)):
                return
            delay = min(delay * 2, 300.0)

    # ----- reports -----

    def reported(self) -> Reported:
        slots: dict[str, SlotReport] = {}
        for name in SLOTS:
            s = self.state.slot(name)
            slots[name] = SlotReport(
                installed=s.installed, target=s.target, last_known_good=s.last_known_good, phase=s.phase,
                error_code=s.error_code, error=s.error,
                release_counter=s.installed.release_counter if s.installed else 0, progress=s.progress,
                bytes_needed=s.bytes_needed if s.error_code == DiskFull.code else None,
                bytes_free=s.bytes_free if s.error_code == DiskFull.code else None,
                window_opens_at=s.window_opens_at if s.phase == Phase.WAITING_FOR_WINDOW else None,
            )
        held = self.updater.held  # the signed metadata held, and why an update did not happen
        return Reported(
            device_id=self.device_id, generation=self.state.generation, hardware_id=self.hardware_id,
            agent_version=__version__, slots=slots,  # type: ignore[arg-type]
            director=held.get("director"), image=held.get("image"), update_blocked=self.updater.update_blocked,
            inventory=self.inventory(), disk=self.disk_watch.current(),
        )

    _static_inventory: StaticInventory | None = None

    def inventory(self) -> Inventory:
        """Agent, OS/JetPack, runtimes (probed once), disk and memory (read now)."""
        if self._static_inventory is None:
            self._static_inventory = StaticInventory.probe(__version__)
        return collect_inventory(self._static_inventory, self.data_dir)

    def publish_reported(self) -> None:
        """Publish ``reported``; one that cannot be signed now (the disk is full and the
        sequence reservation cannot be written) is logged and goes with the next report."""
        try:
            self.mqtt.publish(Channel.REPORTED, self.reported())
        except (DiskFull, OSError) as exc:
            if not is_disk_full(exc):
                raise
            self._report_not_signed(exc)

    def _report_not_signed(self, exc: BaseException) -> None:
        if isinstance(exc, DiskFull):
            self.disk_watch.note(exc)
        log.error("device %s: report not sent (disk full: %s)", self.device_id, exc)

    def _disk_changed(self) -> None:
        """A disk condition appeared or cleared: the controller hears of it at once."""
        mqtt = getattr(self, "mqtt", None)
        if mqtt is not None and getattr(self, "updater", None) is not None and mqtt.connected.is_set():
            self.publish_reported()

    def telemetry(self, period: PeriodStats, now: float) -> Telemetry:
        elapsed = max(now - period.started, 1e-6)
        hardware: dict[str, Any] = {}
        if self.hardware_stats is not None:
            try:
                hardware = self.hardware_stats()
            except Exception as exc:
                log.debug("hardware stats unavailable: %s", exc)
        shadow = period.shadow.to_shadow_stats(period.candidate) if period.candidate or period.shadow.compared else None
        return Telemetry(
            device_id=self.device_id,
            period_start=datetime.fromtimestamp(period.started, timezone.utc),
            period_end=datetime.fromtimestamp(now, timezone.utc),
            control=period.control, frames=period.frames, fps=round(period.frames / elapsed, 2),
            errors=period.errors, nan_outputs=period.nan_outputs, latency_ms=period.latency_stats(),
            class_counts=dict(period.class_counts), confidence_histogram=period.confidence.to_list(),
            shadow=shadow, hardware=hardware, link=self.network.link(),
        )

    # ----- health window -----

    def _check_health(self, period: PeriodStats) -> None:
        window = self.config.agent.health_window_s
        for slot in SLOTS:
            s = self.state.slot(slot)
            started = self.updater.activated_at.get(slot)
            if s.phase != Phase.ACTIVE or started is None:
                self._health.pop(slot, None)
                continue
            h = self._health.get(slot)
            if h is None or h["started"] != started:  # a new activation opens a new window
                h = self._health[slot] = {"started": started, "frames": 0, "bad": 0, "nan": 0, "periods": 0, "slow": 0}
            if slot == "control":
                h["frames"] += period.frames
                h["bad"] += period.errors + period.nan_outputs
                h["nan"] += period.nan_outputs
                runner = self.pipeline.control
                if period.frames > 0 and runner is not None:  # latency only matters on the control path
                    h["periods"] += 1
                    if period.latency_stats().p50 > runner.manifest.latency_budget_ms:
                        h["slow"] += 1
            else:  # the candidate's own NaN outputs and failures (not the control model's)
                h["frames"] += period.shadow.compared + period.shadow.errors
                h["bad"] += period.shadow.nan_outputs + period.shadow.errors
                h["nan"] += period.shadow.nan_outputs
            if h["frames"] >= HEALTH_MIN_FRAMES and h["bad"] / h["frames"] > HEALTH_MAX_BAD_RATIO:
                code = "E_HEALTH_NAN" if h["nan"] * 2 >= h["bad"] else "E_HEALTH_ERRORS"
                self.updater.rollback(slot, f"{h['bad']} of {h['frames']} frames failed or gave NaN in the health window", code)
                self._health.pop(slot, None)
            elif h["periods"] >= HEALTH_MIN_SLOW_PERIODS and h["slow"] * 2 > h["periods"]:
                budget = self.pipeline.control.manifest.latency_budget_ms if self.pipeline.control else 0.0
                self.updater.rollback(slot, f"median latency beyond the manifest's budget of {budget:g} ms in "
                                      f"{h['slow']} of {h['periods']} periods of the health window", "E_HEALTH_LATENCY")
                self._health.pop(slot, None)
            elif time.monotonic() - started >= window and h["frames"] >= HEALTH_MIN_FRAMES:
                self.updater.mark_healthy(slot)
                self._health.pop(slot, None)

    # ----- capture -----

    def _publish_event(self, event: Any) -> None:
        """Capture's encoder thread: the event record on MQTT ``events`` (QoS 1)."""
        self.mqtt.publish(Channel.EVENTS, event)

    def _apply_capture_settings(self) -> None:
        policy = self.state.settings.capture
        self.capture.update_policy(policy)
        self.campaigns.update(self.state.settings.campaigns)
        if self.uploader is not None:
            self.uploader.max_bytes_per_day = policy.max_bytes_per_day

    # ----- main loop -----

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        log.info("device %s starting (hardware %s, data %s)", self.device_id, self.hardware_id, self.data_dir)
        self.updater.restore()
        if self.tegrastats is not None:
            self.tegrastats.start()
        self._apply_capture_settings()
        metrics = None
        if self.config.agent.metrics_port is not None:
            metrics = start_agent_metrics(
                self.config.agent.metrics_port, lambda: {**self.pipeline.totals, **self.mqtt.counters(),
                                                         **(self.signal_source.counters() if self.signal_source else {})},
                lambda: {slot: self.state.slot(slot).phase.value for slot in SLOTS}, device_id=self.device_id,
            )
            self.metrics_server = metrics
            log.info("device %s serves Prometheus metrics on 127.0.0.1:%d/metrics", self.device_id, metrics.port)
        if self.config.inference.switch_interval_ms > 0:
            sys.setswitchinterval(self.config.inference.switch_interval_ms / 1000.0)
        try:
            self.app_output.start()
        except OSError as exc:  # the application socket is a convenience, not a reason to stop
            log.error("device %s: cannot open the prediction socket %s: %s", self.device_id, self.config.output.socket, exc)
            self.app_output.server = None
        if self.signal_source is not None:
            try:
                self.signal_source.start()
                self.campaigns.signals = self.signal_source.table
            except OSError as exc:  # like the prediction socket: frames go on without sidecar context
                log.error("device %s: cannot open the signal socket %s: %s", self.device_id, self.config.signals.socket, exc)
                self.signal_source = None
        self.pipeline.start()
        self.inventory()  # the runtimes probed once, here, not inside the first report
        threading.Thread(target=self._register_report_key, name="report-key", daemon=True).start()
        self._report_key_tried.wait(5.0)  # the first reported is then already verifiable
        self.mqtt.start()
        uploader_thread: threading.Thread | None = None
        if self.uploader is not None:
            uploader_thread = threading.Thread(target=self.uploader.run_forever, args=(self._stop,), name="uploader", daemon=True)
            uploader_thread.start()
        last_telemetry = time.time()
        next_telemetry = last_telemetry + self.state.settings.telemetry_period_s
        retry_at: float | None = None
        backoff = 2.0
        last_apply = 0.0
        try:
            while not self._stop.is_set():
                try:
                    desired = self._desired_q.get(timeout=0.2)
                    while not self._desired_q.empty():  # latest wins
                        desired = self._desired_q.get_nowait()
                except queue.Empty:
                    desired = None
                if desired is None and retry_at is not None and self._last_desired and (
                        time.time() >= retry_at
                        or (time.time() >= last_apply + 1.0 and self.updater.space_ready())  # room again
                        or (time.time() >= last_apply + 1.0 and self.updater.link_ready())  # the link allows it now
                        or (time.time() >= last_apply + 1.0 and self.updater.window_ready())):  # a window opened
                    desired = self._last_desired
                if desired is not None:
                    self._last_desired = desired
                    period_s = self.state.settings.telemetry_period_s
                    last_apply = time.time()
                    try:
                        self.updater.apply(desired)  # applies only the settings signed metadata confirms
                    except Exception:  # never let one update end the daemon: it keeps its model and retries
                        log.exception("device %s: applying desired generation %d failed; keeping the running "
                                      "models and retrying", self.device_id, desired.generation)
                        self.updater.retry_pending = True
                    self._apply_capture_settings()
                    if self.state.settings.telemetry_period_s != period_s:  # timers follow at once
                        next_telemetry = last_telemetry + self.state.settings.telemetry_period_s
                    signed_epoch = self.updater.credentials_epoch  # the signed epoch, never the hint's
                    if signed_epoch is not None and signed_epoch > self._credentials_epoch:
                        self._rotation_wanted = max(self._rotation_wanted or 0, signed_epoch)
                    if self.updater.retry_pending:
                        retry_at = time.time() + backoff * random.uniform(0.8, 1.2)
                        backoff = min(backoff * 2, 300.0)
                    else:
                        retry_at, backoff = None, 2.0
                if self._rotation_wanted is not None and time.time() >= self._rotation_retry_at:
                    self._rotate_credentials()
                now = time.time()
                if now >= next_telemetry:
                    period = self.pipeline.take_period()
                    try:
                        self.mqtt.publish(Channel.TELEMETRY, self.telemetry(period, now))
                    except (AgentError, OSError) as exc:  # a full disk: this period is not sent
                        if not is_disk_full(exc):
                            raise
                        self._report_not_signed(exc)
                    self._check_health(period)
                    last_telemetry = now
                    next_telemetry = now + self.state.settings.telemetry_period_s
        finally:
            log.info("device %s stopping", self.device_id)
            self._stop.set()
            self.pipeline.stop()  # the encoder finishes the clips it has: they reach the outbox
            if metrics is not None:
                metrics.stop()
            self.app_output.stop()
            if self.signal_source is not None:
                self.signal_source.stop()
            if uploader_thread is not None:
                uploader_thread.join(timeout=10)
                self.uploader.close()
            if self.tegrastats is not None:
                self.tegrastats.stop()
            self.mqtt.stop()
            self.http.close()
            if self.outbox is not None:
                self.outbox.close()
