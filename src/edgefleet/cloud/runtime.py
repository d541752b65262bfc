"""The running controller: database, blob store, MQTT bridge and the background sync loop.

``Controller.start()`` migrates the database, connects the bridge and starts a
level-triggered loop that re-publishes desired state to online devices whose reported
generation lags behind, so a lost message, a broker restart (retained state gone) or a
controller restart all converge to the same place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from ..protocols import (
    CapturePolicy,
    Channel,
    Desired,
    DeviceSettings,
    Event,
    Reported,
    Status,
    Telemetry,
    desired_topic,
)
from ..registry import BlobStore, LocalBlobStore
from . import policy, shadow_index
from .bridge import BridgeTls, MqttBridge
from .broker_auth import BrokerAuthFiles
from .campaigns import store as campaign_store
from .db import is_conflict, is_unavailable, make_engine, migrate, ping, secure_data_dir
from .devices import batch, fleet, fleet_settings, identity, ingest, report_verify, telemetry_store
from .devices.assigned import models_assigned
from .devices.labels import LabelBook, catalog_lookup
from .devices.presence import IngestWatch, mark_unheard
from .errors import CloudError, NoFleetCA
from .metrics import ensure_metrics
from .pki import FleetCA, IssuedCert
from .republish import Republisher
from .rollout import store as rollout_store
from .rollout.reconciler import Reconciler
from .rollout.tables import ControllerLease
from .settings import CloudSettings
from .tables import Device
from .trust import freshness, signing
from .trust.repository import Trust
from .webhooks.worker import WebhookWorker

log = logging.getLogger(__name__)

RESEND_AFTER = timedelta(seconds=15)
#: an assigned device nobody has signed for this long: the sync loop signs and sends it
UNSIGNED_GRACE = timedelta(seconds=10)
#: the resend loop waits for an ingest backlog to drain at most this long (well inside any device timeout)
RESEND_MAX_DEFER = timedelta(seconds=30)


def loop_delay(interval_s: float, spent_s: float) -> float:
    """The wait before the controller loop's next pass: the interval, or as long as the last
    pass took when that was longer (the loop takes at most half the interpreter's time)."""
    return max(interval_s, spent_s)


def lagging_clause() -> ColumnElement[bool]:
    """Online and behind: the predicate of the partial index ``ix_device_dirty_lagging``."""
    return and_(col(Device.online), or_(col(Device.reported_generation).is_(None),
                                        col(Device.reported_generation) < col(Device.desired_generation)))


def open_store(settings: CloudSettings) -> BlobStore:
    """The artifact store: ``EDGEFLEET_STORE_URL`` (local path or ``s3://…``), else ``{data_dir}/blobs``."""
    if settings.store_url:
        from ..registry.stores import open_blob_store  # boto3 is imported only for s3:// URLs

        return open_blob_store(settings.store_url)
    return LocalBlobStore(settings.blobs_dir)


class Controller:
    def __init__(self, settings: CloudSettings, *, engine: Engine | None = None, store: BlobStore | None = None):
        self.settings = settings
        secure_data_dir(settings.data_dir)  # 0700; its secret files 0600 (db.py)
        self.engine = engine or make_engine(settings.db_url)
        self.store = store or open_store(settings)
        # keys are loaded on first use (start, or the first signature): `fleet cloud init` makes
        # none, so `fleet keys init` may run before or after it
        self._trust: Trust | None = None
        self._trust_lock = threading.Lock()
        ensure_metrics(self)  # counters exist before the HTTP app does (reconciler, uploads)
        self.bridge: MqttBridge | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sent: dict[str, tuple[int, datetime]] = {}
        self._unsigned_seen: dict[str, tuple[int, datetime]] = {}  # sync_once: assigned, not signed, since
        self._resend_deferred_since: datetime | None = None  # sync_once: put off behind an ingest backlog, since
        self._kick = threading.Event()  # wake() runs the next pass now
        #: CPU seconds of the controller loop's thread, by part ("reconcile", "resend", "other"): benchmarks read it
        self.loop_cpu_s: dict[str, float] = defaultdict(float)
        self._next_trust_refresh = 0.0
        # Rollouts: only the holder of the lease in the database runs reconcile passes.
        # can the controller hear the fleet? (cloud/devices/presence.py): holds rollouts while it cannot
        self.ingest_watch = IngestWatch(started_at=time.time())
        self._db_down_since: float | None = None  # the sync loop's own view (monotonic)
        self.reconciler = Reconciler(self.engine, self, prefix=settings.controller_client_id, hold=self.hold_reason,
                                     heard_from=self.ingest_watch.heard_from,
                                     lease_ttl_s=max(10.0, 5 * settings.reconcile_interval_s))
        # signed webhooks: its own thread and pool, never on the control path (cloud/webhooks)
        self.webhooks = WebhookWorker(self.engine, settings, holder=self.reconciler.holder)
        self.event_handlers: list = [self._index_event, self._count_for_campaign]
        # after a broker connection that lost retained state: every device, paced (cloud/republish.py)
        self.republisher = Republisher(self.session, self.publish_device, publish_many=self.publish_devices,
                                       rate_per_s=settings.republish_rate_per_s)
        # class names from devices are checked against their model's manifest (cloud/devices/labels.py)
        self.labels = LabelBook(catalog_lookup(self.session))
        # sent to devices in Desired.settings until an operator sets one (fleet_settings)
        self.capture_policy: CapturePolicy = settings.capture
        self.upload_store: object | None = None  # set by create_app (uploads router), for expiry
        # the controller's own broker account, and the broker's password file + ACL it writes
        self.mqtt_account = identity.controller_account(settings.data_dir, settings.mqtt_username, settings.mqtt_password)
        self.broker_auth: BrokerAuthFiles | None = (
            BrokerAuthFiles(settings.broker_auth_path, reload_command=settings.broker_reload_command)
            if settings.manage_broker_auth else None
        )

    # ----- lifecycle -----

    def migrate(self) -> None:
        migrate(self.engine)

    def mqtt_credentials(self) -> tuple[str, str]:
        """The controller's broker username and password."""
        return self.mqtt_account.username, self.mqtt_account.password

    def sync_broker_auth(self) -> bool:
        """Write the broker's password file and ACL from the device table (reloading the broker
        when they changed): after enrol, revoke and rotation, and at start."""
        if self.broker_auth is None:
            return False
        with self.session() as s:
            accounts = identity.broker_accounts(s, self.mqtt_account)
        return self.broker_auth.write(accounts)

    @property
    def trust(self) -> Trust:
        """The signing keys and TUF metadata (a 1-of-1 demo setup is created on first use
        when `fleet keys init` has not run; exposed key files are tightened with a WARNING)."""
        if self._trust is None:
            with self._trust_lock:
                if self._trust is None:
                    trust = Trust.open(self.settings.data_dir, self.store)
                    trust.attach_database(self.engine)  # per-device director metadata: the database
                    self._trust = trust
        return self._trust

    def start(self, *, mqtt: bool = True) -> None:
        self.trust  # noqa: B018 - load the keys (and check their permissions) before serving
        self.migrate()
        with self.session() as db:  # an upgraded controller's image metadata files, once (cloud/trust/image_store.py)
            self.trust.import_image_files(db)
        with self.session() as db:  # an upgraded controller's per-device director files (cloud/trust/signing.py)
            signing.import_files(db, self.trust)
        self.sync_broker_auth()
        if mqtt:
            s = self.settings
            tls = BridgeTls(s.mqtt_ca_file, s.mqtt_cert_file, s.mqtt_key_file) if s.mqtt_tls else None
            self.bridge = MqttBridge(
                s.mqtt_host, s.mqtt_tls_port if s.mqtt_tls else s.mqtt_port, tls=tls,
                client_id=s.controller_client_id, protocol=s.mqtt_protocol,
                session_expiry_s=s.mqtt_session_expiry_s, receive_maximum=s.mqtt_receive_maximum,
                retry_max_s=s.ingest_retry_max_s,
                batch_handler=self._on_batch, batch_max=s.ingest_batch_max, batch_wait_s=s.ingest_batch_wait_s,
                username=self.mqtt_account.username, password=self.mqtt_account.password,
                handlers={
                    Channel.STATUS: self._on_status,
                    Channel.REPORTED: self._on_reported,
                    Channel.TELEMETRY: self._on_telemetry,
                    Channel.EVENTS: self._on_event,
                },
                on_connected=self.on_broker_connected,
            )
            self.bridge.start()
        self._register_health_gauges()
        self._thread = threading.Thread(target=self._loop, name="controller-sync", daemon=True)
        self._thread.start()
        self.webhooks.start()

    def ingest_quiet(self) -> bool:
        """Nothing waiting to be applied: no bridge (no MQTT, or not started), or one that is
        connected with no backlog. Background work that holds the interpreter for seconds
        (the Evidently import) waits for this, so a restart into a broker-side backlog of
        queued reports drains it first."""
        b = self.bridge
        return b is None or (b.connected.is_set() and b.backlog == 0)

    def _register_health_gauges(self) -> None:
        """Readiness figures on /metrics, computed at scrape (api/routes/health.py reads the same)."""
        m = ensure_metrics(self)

        def database() -> dict[tuple[str, ...], float]:
            state = self.database_state()
            return {("up",): 1.0 if state["ok"] else 0.0,
                    ("latency_seconds",): (state["latency_ms"] or 0.0) / 1000}  # type: ignore[operator]

        def ingest() -> dict[tuple[str, ...], float]:
            b = self.bridge.health() if self.bridge is not None else None
            out: dict[tuple[str, ...], float] = {("hears_fleet",): 1.0 if self.ingest_watch.healthy else 0.0}
            if b is not None:
                out[("mqtt_connected",)] = 1.0 if b["mqtt_connected"] else 0.0
                out[("consuming",)] = 1.0 if b["consuming"] else 0.0
                out[("backlog",)] = float(b["backlog"])
                if b["last_message_age_s"] is not None:
                    out[("last_message_age_seconds",)] = float(b["last_message_age_s"])
            return out

        m.set_gauge_source("edgefleet_database", database, doc="Database readiness: up (1/0), latency_seconds of SELECT 1",
                           labelnames=("figure",))
        m.set_gauge_source("edgefleet_ingest", ingest, labelnames=("figure",),
                           doc="Ingest readiness: mqtt_connected, consuming, hears_fleet (1/0), backlog, "
                               "last_message_age_seconds")

    def stop(self) -> None:
        self._stop.set()
        self.republisher.stop()
        self._kick.set()
        if self._thread:
            self._thread.join(timeout=5)
        # another replica alive: end our broker session, so the shared subscription's messages
        # go to it rather than wait for us; alone: keep it, the broker queues until we are back
        end_session = self._other_replicas_alive()
        self.webhooks.stop()
        if self.broker_auth is not None:
            self.broker_auth.close()
        if self.bridge:
            self.bridge.stop(end_session=end_session)
        self._release_replica_lease()
        if self._thread is None or not self._thread.is_alive():
            # a clean restart takes over at once, not after the lease's TTL; a pass still
            # running (the join timed out) keeps the lease, so no one acts beside it
            self._release_reconciler_lease()
        self.engine.dispose()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ----- fleet CA (cloud/pki.py; docs/tls.md) -----

    _pki: FleetCA | None = None

    @property
    def pki(self) -> FleetCA | None:
        """The fleet CA in ``<data_dir>/pki``, opened on first use; None when none was created."""
        if self._pki is None:
            self._pki = FleetCA.open_if_exists(self.settings.data_dir / "pki")
        return self._pki

    def issue_device_certificate(self, device_id: str) -> IssuedCert:
        """A client certificate (CN = ``device_id``) and its key from the fleet CA; nothing else is recorded.

        Raises:
            NoFleetCA: this controller has no CA (``fleet cloud init`` creates one).
        """
        ca = self.pki
        if ca is None:
            raise NoFleetCA(f"no fleet CA in {self.settings.data_dir / 'pki'}: run `fleet cloud init`")
        return ca.issue_device_cert(device_id)

    # ----- identity (cloud/devices/identity.py) -----

    def revoke_certificate(self, serial: str) -> None:
        """Put a device certificate on the fleet CA's CRL (brokers re-read it on reload)."""
        if self.pki is None:
            return
        try:
            self.pki.revoke(int(serial))
        except Exception:
            log.exception("could not put certificate %s on the CRL", serial)

    def on_device_revoked(self, session: Session, device: Device) -> None:
        """After ``identity.revoke`` committed: broker account and certificate out, director
        metadata withdrawn (it now names nothing), retained desired state cleared."""
        if device.cert_serial:
            self.revoke_certificate(device.cert_serial)
        self.sync_broker_auth()
        try:
            signing.withdraw(session, self.trust, device)
            device.desired_generation += 1  # re-enrolment signs afresh
            session.add(device)
            session.commit()
        except CloudError as exc:
            log.error("device %s revoked, but its director metadata could not be withdrawn: %s", device.id, exc)
        if self.bridge is not None:
            self.bridge.client.publish(desired_topic(device.id), b"", qos=1, retain=True)

    # ----- ingest handlers (called on the bridge thread) -----

    @contextmanager
    def ingest_session(self) -> Iterator[Session]:
        """One transaction per device message: the handlers' ``commit()`` calls only flush, and
        the message's whole effect (seq, state, aggregates) commits once at the end — or not
        at all, so a retry after a database outage is never refused as a replay of itself."""
        with self.engine.connect() as conn:
            trans = conn.begin()
            s = Session(bind=conn, join_transaction_mode="rollback_only", expire_on_commit=False)
            try:
                yield s
                s.flush()
                trans.commit()
            except BaseException:
                if trans.is_active:
                    try:
                        trans.rollback()
                    except Exception:  # the connection is gone: the original error says why
                        log.debug("rollback after a failed message failed", exc_info=True)
                raise
            finally:
                s.close()

    def _on_status(self, msg: Status) -> None:
        with self.ingest_session() as s:
            ingest.apply_status(s, msg)

    def _on_reported(self, msg: Reported) -> None:
        with self.ingest_session() as s:
            verdict = report_verify.verify_reported(s, msg, self.settings.replay_window)  # signed, fresh seq
            if verdict.late:  # a newer report was applied first: history only, the newest state stands
                ingest.apply_late_reported(s, verdict.device, msg, verdict.placed.seq)
                return
            device = ingest.apply_reported(s, msg)
            if freshness.update(device):  # does its signed state now match what was signed for it?
                s.add(device)
                s.commit()

    def _on_telemetry(self, msg: Telemetry) -> None:
        with self.ingest_session() as s:
            # signed, fresh seq, a period not yet counted: else refused
            verdict = report_verify.verify_telemetry(s, msg, window=self.settings.replay_window)
            msg = self.labels.check_telemetry(msg)  # unknown class names dropped before anything is stored
            if not verdict.late:  # a late period is counted, but the device's latest stays the newest
                ingest.apply_telemetry(s, msg)
            telemetry_store.record_telemetry(s, msg)
            shadow_index.record_pair_stats(s, msg)
            rollout_store.record_telemetry(s, msg)

    def _on_batch(self, msgs: list[Status | Reported | Telemetry]) -> list[BaseException | None]:
        """status/reported/telemetry taken together: one transaction (cloud/devices/batch.py)."""
        return batch.apply(self.ingest_session, msgs, check_labels=self.labels.check_telemetry,
                           replay_window=self.settings.replay_window)

    def _on_event(self, msg: Event) -> None:
        with self.session() as s:
            ingest.admit(s, msg.device_id)  # only enrolled, unrevoked devices (ingest.Refused)
        msg = self.labels.check_event(msg)  # every handler sees only the model's own labels
        for handler in self.event_handlers:
            handler(msg)

    def _index_event(self, msg: Event) -> None:
        with self.session() as s:
            shadow_index.record_event(s, msg, via="mqtt")

    def _count_for_campaign(self, msg: Event) -> None:
        """A capture naming a campaign counts toward its quota (cloud/campaigns)."""
        if msg.campaign is not None:
            with self.session() as s:  # on the ingest thread, which never signs: a quota met bumps the
                campaign_store.record(s, None, msg)  # devices' generation and the sync loop signs and sends

    def on_clip_stored(self, clip: object) -> None:
        """The uploads router's callback: index the clip and its event (upsert)."""
        clip = dataclasses.replace(clip, event=self.labels.check_event(clip.event))  # type: ignore[type-var, attr-defined]
        with self.session() as s:
            shadow_index.record_clip(s, clip)
            campaign_store.record(s, self, clip.event)  # type: ignore[attr-defined]  # offline captures count too

    # ----- desired state -----

    def publish_desired(self, desired: Desired) -> None:
        if self.bridge is not None:
            self.bridge.publish_desired(desired)
            self._last_sent[desired.device_id] = (desired.generation, datetime.now(timezone.utc))

    def device_settings(self, session: Session, device: Device | None = None) -> DeviceSettings:
        """What ``device`` must apply: fleet-wide settings, with scoped policies resolved (cloud/policy)."""
        if device is None:
            capture = fleet_settings.capture_policy(session, default=self.capture_policy)
            return DeviceSettings(telemetry_period_s=self.settings.telemetry_period_s, capture=capture,
                                  network_policy=fleet_settings.network_policy(session))
        return self.devices_settings(session, [device])[device.id]

    def devices_settings(self, session: Session, devices: list[Device]) -> dict[str, DeviceSettings]:
        """``device_settings`` for many devices: policies, fleet settings and running campaigns
        are read once for the batch, then resolved per device in memory (pure logic)."""
        policies = policy.load(session, self.capture_policy)
        campaigns = campaign_store.load_running(session)
        out: dict[str, DeviceSettings] = {}
        for device in devices:
            got = policies.resolve(device)
            out[device.id] = DeviceSettings(telemetry_period_s=self.settings.telemetry_period_s, capture=got.capture,
                                            network_policy=got.network, maintenance=got.maintenance,
                                            campaigns=campaigns.specs_for(device))
        return out

    def publish_device(self, session: Session, device: Device) -> None:
        """Sign the device's assignment with the director (if it changed), then send the hint."""
        self.publish_devices(session, [device])

    def publish_devices(self, session: Session, devices: list[Device]) -> int:
        """Sign the devices' assignments in bulk (those that changed; one transaction per
        batch), then, once committed, send each signed device its hint. Returns how many were sent."""
        if not devices:
            return 0
        settings = self.devices_settings(session, devices)
        try:
            result = signing.sign_devices(session, self.trust, devices, settings)  # settings travel signed
        except CloudError as exc:
            log.error("desired state of %d devices (%s…) not signed, not published: %s", len(devices), devices[0].id, exc)
            return 0
        signed = [d for d in devices if d.id in result.versions]  # the rest: logged; the sync loop retries
        for device in signed:
            if freshness.update(device):
                session.add(device)
        session.commit()
        assigned = models_assigned(session, [d.id for d in signed])
        for device in signed:
            desired = fleet.desired_for(session, device, settings[device.id], assigned=assigned[device.id])
            desired.director_version = result.versions[device.id]
            self.publish_desired(desired)
        return len(signed)

    def republish_all(self) -> None:
        """Publish (retained) desired state for every device: after (re)connecting to the broker
        (on the bridge's resync thread, never its network or ingest thread)."""
        with self.session() as s:
            n = self.publish_devices(s, list(fleet.list_devices(s, include_revoked=False)))
        log.info("desired state re-published for all devices (%d)", n)

    def on_broker_connected(self) -> None:
        """The bridge (re)connected (its resync thread): re-publish what the broker may have lost.

        A resumed MQTT 5 session means the broker kept its state, retained ``desired``
        included: nothing to send (the sync loop re-sends lagging devices). A new session
        may follow a broker that lost everything: every device, paced (cloud/republish.py).
        """
        bridge = self.bridge
        if bridge is not None and bridge.session_present:
            log.info("broker resumed the controller's session: retained desired state kept, nothing re-published")
            return
        self.republisher.run("new broker session")

    def sync_once(self, now: datetime | None = None) -> int:
        """Re-send desired state to online devices that lag behind; returns how many.

        While reports wait in the ingest queue the lag may be ours, not the device's: a
        device that answered long ago looks behind until its answer is applied, and a resend
        then only makes it answer again, deepening the queue (seen at 10,000 devices: 17
        messages per device instead of 10). So the pass is put off while ingest has a
        backlog, for at most ``RESEND_MAX_DEFER`` (30 s)."""
        now = now or datetime.now(timezone.utc)
        bridge = self.bridge
        if bridge is not None and bridge.backlog > 0:
            if self._resend_deferred_since is None:
                self._resend_deferred_since = now
            if now - self._resend_deferred_since < RESEND_MAX_DEFER:
                return 0
        self._resend_deferred_since = None
        due_ids: list[str] = []
        with self.session() as s:
            # only the lagging ones (partial index ix_device_dirty_lagging, migration 0020), and
            # only the columns that decide; whole rows for the devices due alone
            lagging = s.exec(select(Device.id, Device.desired_generation, Device.reported_generation,
                                    Device.director_generation).where(lagging_clause()).order_by(Device.id)).all()
            unsigned_seen, self._unsigned_seen = self._unsigned_seen, {}
            for device in lagging:
                if device.reported_generation is not None and device.reported_generation >= device.desired_generation:
                    continue
                if device.director_generation < device.desired_generation:
                    # assigned, not signed yet: whoever assigned it (an API deploy on another
                    # thread, another replica) is signing it now; signing it here as well only
                    # doubles the work and races it. Taken over once it stays so (a crash
                    # between the assignment and its signing).
                    seen = unsigned_seen.get(device.id)
                    if seen is None or seen[0] != device.desired_generation:
                        seen = (device.desired_generation, now)
                    self._unsigned_seen[device.id] = seen
                    if now - seen[1] < UNSIGNED_GRACE:
                        continue
                last = self._last_sent.get(device.id)
                if last and last[0] == device.desired_generation and now - last[1] < RESEND_AFTER:
                    continue
                due_ids.append(device.id)
            due = sorted(fleet.devices_by_id(s, due_ids, strict=False).values(), key=lambda d: d.id) if due_ids else []
            self.publish_devices(s, due)  # signed in bulk, published after the commit
        return len(due)

    def _expire_uploads(self, now: float) -> None:
        """Drop abandoned upload sessions (7 days) and old completion records (30 days)."""
        store = self.upload_store
        if store is not None:
            store.expire(now=now, open_max_age_s=7 * 86400, completed_max_age_s=30 * 86400)  # type: ignore[attr-defined]

    def _prune_history(self) -> None:
        """Keep telemetry history (sparklines, charts, drift windows) for the configured days."""
        cutoff = datetime.now(timezone.utc) - timedelta(days=self.settings.telemetry_history_days)
        with self.session() as s:
            removed = telemetry_store.prune(s, cutoff)
        if removed:
            log.info("pruned %d telemetry periods older than %s", removed, cutoff.date())

    def wake(self) -> None:
        """Run the next reconcile pass now (after an operator command)."""
        self._kick.set()

    def reconcile_once(self, now: float | None = None) -> object:
        """One rollout reconcile pass (a no-op unless this replica holds the lease)."""
        return self.reconciler.run_once(now)

    # ----- outages (cloud/devices/presence.py) -----

    def ingest_state(self) -> tuple[bool, str | None]:
        """Whether the controller hears the fleet now, and if not, why."""
        if self._db_down_since is not None:
            return False, "database unavailable"
        bridge = self.bridge
        if bridge is None:  # started without MQTT (tests feeding handlers directly): nothing to judge
            return True, None
        if not bridge.connected.is_set():
            return False, "broker unreachable"
        if bridge.db_unavailable_since is not None:
            return False, "database unavailable"
        if not bridge.ingest_alive():
            return False, "bridge not consuming"
        return True, None

    def observe_ingest(self, now: float | None = None) -> bool:
        healthy, reason = self.ingest_state()
        self.ingest_watch.observe(healthy, reason, time.time() if now is None else now)
        return healthy

    def hold_reason(self, now: float, device_timeout_s: float) -> str | None:
        """Why a rollout must not count device silence now (the reconciler asks, per rollout)."""
        self.observe_ingest(now)
        grace = self.settings.ingest_hold_grace_s
        return self.ingest_watch.hold_reason(now, 2 * device_timeout_s if grace is None else grace)

    def offline_window_s(self) -> float:
        """Not heard for this long: offline (k signed telemetry periods, at least 30 s)."""
        s = self.settings
        return max(s.offline_after_periods * s.telemetry_period_s, s.offline_after_min_s)

    def mark_unheard(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        if not self.observe_ingest(now):
            return []  # it cannot hear anyone: silence says nothing about the devices
        with self.session() as s:
            return mark_unheard(s, now, self.offline_window_s(), heard_from=self.ingest_watch.heard_from())

    def database_state(self) -> dict[str, object]:
        """``{"ok": bool, "latency_ms": float | None, "error": str | None}`` from one ``SELECT 1``."""
        try:
            latency = ping(self.engine)
        except Exception as exc:
            return {"ok": False, "latency_ms": None, "error": str(exc).splitlines()[0][:300]}
        return {"ok": True, "latency_ms": round(latency * 1000, 3), "error": None}

    # ----- replicas: each one heartbeats a lease row of its own (rollout.store leases) -----

    @property
    def _replica_lease(self) -> str:
        return "replica/" + hashlib.sha256(self.settings.controller_client_id.encode()).hexdigest()[:24]

    def _replica_heartbeat(self) -> None:
        ttl = max(10.0, 5 * self.settings.reconcile_interval_s)
        with self.session() as s:
            rollout_store.acquire_lease(s, self._replica_lease, self.settings.controller_client_id[:128], ttl, time.time())

    def _other_replicas_alive(self) -> bool:
        try:
            with self.session() as s:
                rows = s.exec(select(ControllerLease.name).where(col(ControllerLease.name).startswith("replica/"))
                              .where(ControllerLease.name != self._replica_lease)
                              .where(ControllerLease.expires_at > time.time())).all()
            return bool(rows)
        except Exception:  # no database: keep the session (the safe default for one replica)
            return False

    def _release_replica_lease(self) -> None:
        try:
            with self.session() as s:
                rollout_store.release_lease(s, self._replica_lease, self.settings.controller_client_id[:128])
        except Exception:
            log.debug("replica lease not released", exc_info=True)

    def _release_reconciler_lease(self) -> None:
        from .rollout.reconciler import LEASE_NAME

        try:
            with self.session() as s:
                rollout_store.release_lease(s, LEASE_NAME, self.reconciler.holder)
        except Exception:
            log.debug("reconciler lease not released", exc_info=True)

    def _loop(self) -> None:
        next_expiry = time.time() + 60
        delay = self.settings.reconcile_interval_s
        while not self._stop.is_set():
            self._kick.wait(delay)
            self._kick.clear()
            if self._stop.is_set():
                break
            delay = self.settings.reconcile_interval_s
            started, cpu = time.monotonic(), time.thread_time()
            try:
                self.observe_ingest()
                self._replica_heartbeat()
                t = time.thread_time()
                self.reconcile_once()
                self.loop_cpu_s["reconcile"] += time.thread_time() - t
                with self.session() as s:  # rollouts that ended: their own window/network policy ends (cloud/policy)
                    policy.release_finished(s, self)
                t = time.thread_time()
                self.sync_once()
                self.loop_cpu_s["resend"] += time.thread_time() - t
                self.mark_unheard()
                with self.session() as s:  # signed state lagging too long: stale (cloud/trust/freshness.py)
                    freshness.mark_stale(s, datetime.now(timezone.utc), self.settings.stale_after_s)
                if time.time() >= next_expiry:
                    next_expiry = time.time() + 3600
                    self._expire_uploads(time.time())
                    self._prune_history()
                if time.time() >= self._next_trust_refresh:
                    self._next_trust_refresh = time.time() + 300
                    self.trust.refresh_expiring()  # timestamps are re-signed well before they expire
                    if self.pki is not None:
                        self.pki.refresh_crl()  # the CRL too (brokers reject every client once it expires)
                if self._db_down_since is not None:
                    log.warning("database reachable again after %.1fs", time.monotonic() - self._db_down_since)
                    self._db_down_since = None
                # at most half the time in this loop: a pass over a large fleet that takes longer
                # than the interval would otherwise run back to back and starve ingest (an
                # operator's command still wakes it at once)
                delay = loop_delay(delay, time.monotonic() - started)
                self.loop_cpu_s["pass"] += time.thread_time() - cpu
            except Exception as exc:
                if not is_unavailable(exc) or is_conflict(exc):  # a lost race (deadlock) is no outage
                    log.exception("sync pass failed; retrying")
                    time.sleep(1)
                    continue
                if self._db_down_since is None:  # one line per outage, then backoff (no traceback flood)
                    self._db_down_since = time.monotonic()
                    log.error("database unavailable: %s; reconcile and sync paused, retrying with backoff",
                              str(exc).splitlines()[0][:300])
                self.observe_ingest()
                down_for = time.monotonic() - self._db_down_since
                delay = min(max(self.settings.reconcile_interval_s, down_for / 4), self.settings.ingest_retry_max_s)
