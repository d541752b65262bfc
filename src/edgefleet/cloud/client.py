"""A small typed client for the admin API, used by the ``fleet`` CLI and the demo.

Errors come back as ``ApiError`` carrying the HTTP status, the server's message and its
stable ``code`` (``E_…``). Every operation of ``/api/v1/openapi.json`` has a method, marked
with ``@operation(operationId)``; ``operations()`` lists them (tests/contract checks both ways).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CLI_CONFIG = "cli.toml"


class ApiError(Exception):
    def __init__(self, status_code: int, detail: str, code: str | None = None):
        self.status_code, self.detail, self.code = status_code, detail, code  # code: E_… when the server gave one
        super().__init__(f"HTTP {status_code}: {detail}")


def _error_of(resp: httpx.Response) -> ApiError:
    """The server's error body (``{"code", "message", "detail"}``, api/problems.py) as an ``ApiError``."""
    try:
        body = resp.json()
    except ValueError:
        return ApiError(resp.status_code, resp.text)
    if not isinstance(body, dict):
        return ApiError(resp.status_code, resp.text)
    message = body.get("message", body.get("detail", resp.text))
    fields = body.get("detail")
    if isinstance(fields, list) and fields and all(isinstance(f, dict) for f in fields):  # a 422: every field
        message = "the request does not match the schema: " + "; ".join(
            f"{'.'.join(str(p) for p in f.get('loc', ()))}: {f.get('msg', 'invalid')}" for f in fields)
    code = body.get("code") if isinstance(body.get("code"), str) else None
    return ApiError(resp.status_code, message if isinstance(message, str) else json.dumps(message), code)


F = TypeVar("F", bound=Callable[..., Any])


NEXT_CURSOR_HEADER = "X-Next-Cursor"  # the rollout list's next page (api/routes/rollouts.py)


def operation(*operation_ids: str) -> Callable[[F], F]:
    """Mark a client method as the caller of these OpenAPI operations (``operationId``)."""

    def mark(fn: F) -> F:
        fn.operation_ids = operation_ids  # type: ignore[attr-defined]
        return fn

    return mark


def operations() -> dict[str, str]:
    """operationId → the ``ApiClient`` method that calls it."""
    return {op: name for name, fn in vars(ApiClient).items() for op in getattr(fn, "operation_ids", ())}


def device_filter_params(*, tag: list[str] | None = None, profile: str | None = None, state: str | None = None,
                         stale: bool | None = None, model: list[str] | None = None,
                         installed: list[str] | None = None) -> dict[str, Any]:
    """Query parameters of the device views (``GET /devices``, ``/devices/counts``)."""
    params: dict[str, Any] = {}
    for key, value in (("tag", tag), ("model", model), ("installed", installed)):
        if value:
            params[key] = list(value)
    for key, one in (("profile", profile), ("state", state)):
        if one:
            params[key] = one
    if stale is not None:
        params["stale"] = "true" if stale else "false"
    return params


class ApiClient:
    def __init__(self, url: str, token: str | None, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None,
                 ca_file: str | os.PathLike[str] | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # an https:// controller is verified against ca_file (the fleet CA) when given, else the system CAs
        verify: Any = ssl.create_default_context(cafile=os.fspath(ca_file)) if ca_file else True
        self._root = url.rstrip("/")
        self.http = httpx.Client(base_url=url.rstrip("/") + "/api/v1", headers=headers, timeout=timeout, transport=transport,
                                 verify=verify)

    def close(self) -> None:
        self.http.close()

    def _response(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The controller's answer; ``ApiError`` when it cannot be reached or says no."""
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the controller at {self.http.base_url}: {exc}") from None
        if resp.status_code >= 400:
            raise _error_of(resp)
        return resp

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._response(method, path, **kwargs)
        return resp.json() if resp.content else None

    @operation("health_health")
    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    @operation("models_push_model")
    def push_model(
        self, path: Path, *, name: str, version: str, manifest: dict | None = None,
        labels: list[str] | None = None, provenance: dict | None = None,
    ) -> dict[str, Any]:
        data: dict[str, str] = {"name": name, "version": version}
        if provenance is not None:
            data["provenance"] = json.dumps(provenance, default=str)
        if manifest is not None:
            data["manifest"] = json.dumps(manifest)
        if labels:
            data["labels"] = ",".join(labels)
        with open(path, "rb") as f:
            return self._call("POST", "/models", data=data, files={"model": (path.name, f, "application/octet-stream")})

    @operation("models_list_models")
    def list_models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/models")

    @operation("models_get_model")
    def get_model(self, model: str) -> dict[str, Any]:
        name, _, version = model.partition(":")
        return self._call("GET", f"/models/{name}/versions/{version}")

    @operation("models_deprecate", "models_block", "models_unblock")
    def set_model_status(self, model: str, action: str, reason: str | None = None) -> dict[str, Any]:
        """``action``: deprecate | block | unblock."""
        name, _, version = model.partition(":")
        return self._call("POST", f"/models/{name}/{version}/{action}", json={"reason": reason})

    @operation("models_yank_version")
    def yank_model(self, model: str, *, reason: str, to: str | None = None, waves: str = "1,10,50,100",
                   soak: str = "30m", gates: list[str] | None = None, on_breach: str = "pause",
                   device_timeout: str = "30m", max_concurrent: int | None = None) -> dict[str, Any]:
        name, _, version = model.partition(":")
        body = {"reason": reason, "to": to, "waves": waves, "soak": soak, "gates": gates, "on_breach": on_breach,
                "device_timeout": device_timeout, "max_concurrent": max_concurrent}
        return self._call("POST", f"/models/{name}/{version}/yank", json=body)

    @operation("devices_enrol")
    def enrol_device(self, device_id: str, hardware_id: str = "unknown", tags: dict[str, str] | None = None,
                     *, certificate: bool = False, report_public_key: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": device_id, "hardware_id": hardware_id, "tags": tags or {}}
        if certificate:
            body["certificate"] = True
        if report_public_key:
            body["report_public_key"] = report_public_key
        return self._call("POST", "/devices", json=body)

    @operation("devices_reset_report_key")
    def reset_report_key(self, device_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/devices/{device_id}/report-key")

    @operation("devices_approve_hardware")
    def approve_hardware(self, device_id: str) -> dict[str, Any]:
        return self._call("POST", f"/devices/{device_id}/approve-hardware")

    @operation("devices_revoke")
    def revoke_device(self, device_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/devices/{device_id}")

    @operation("devices_rotate")
    def rotate_device_credentials(self, device_id: str, *, now: bool = False) -> dict[str, Any]:
        return self._call("POST", f"/devices/{device_id}/rotate-credentials", params={"now": "true"} if now else None)

    @operation("devices_list_devices")
    def list_devices_page(self, *, limit: int = 100, cursor: str | None = None, **filters: Any) -> dict[str, Any]:
        """One page (``items``, ``next_cursor``, ``prev_cursor``); ``filters``: tag=[KEY=VALUE…],
        profile, state, stale, model=[SLOT=NAME:VERSION…], installed=[…] (see ``device_filter_params``)."""
        params = device_filter_params(**filters)
        params["limit"] = limit
        if cursor:
            params["cursor"] = cursor
        return self._call("GET", "/devices", params=params)

    def iter_devices(self, *, page_size: int = 1000, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every matching device, page after page (id order)."""
        cursor: str | None = None
        while True:
            page = self.list_devices_page(limit=page_size, cursor=cursor, **filters)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def list_devices(self, **filters: Any) -> list[dict[str, Any]]:
        """Every matching device (follows the cursors; for a big fleet prefer ``iter_devices``)."""
        return list(self.iter_devices(**filters))

    @operation("devices_device_counts")
    def device_counts(self, **filters: Any) -> dict[str, Any]:
        """Totals by state, hardware profile and model version per slot, for the same filters."""
        return self._call("GET", "/devices/counts", params=device_filter_params(**filters))

    @operation("devices_get_device")
    def get_device(self, device_id: str) -> dict[str, Any]:
        return self._call("GET", f"/devices/{device_id}")

    @operation("deployments_deploy")
    def deploy(self, model: str, slot: str, devices: list[str] | None) -> dict[str, Any]:
        body = {"model": model, "slot": slot, "devices": devices or [], "all": devices is None}
        return self._call("POST", "/deployments", json=body)

    @operation("settings_get_capture")
    def capture_settings(self) -> dict[str, Any]:
        return self._call("GET", "/settings/capture")

    @operation("settings_patch_capture")
    def change_capture_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", "/settings/capture", json=changes)

    @operation("settings_reset_capture")
    def reset_capture_settings(self) -> dict[str, Any]:
        return self._call("DELETE", "/settings/capture")

    # capture campaigns (issue 17): cloud/campaigns
    @operation("campaigns_start_campaign")
    def start_campaign(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/campaigns", json=body)

    @operation("campaigns_list_campaigns")
    def campaigns(self, state: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/campaigns", params={"state": state} if state else None)

    @operation("campaigns_get_campaign")
    def campaign(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/campaigns/{name}")

    @operation("campaigns_stop_campaign")
    def stop_campaign(self, name: str) -> dict[str, Any]:
        return self._call("POST", f"/campaigns/{name}/stop")

    @operation("settings_get_network")
    def network_settings(self) -> dict[str, Any]:
        return self._call("GET", "/settings/network")

    @operation("settings_put_network")
    def set_network_settings(self, policy: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", "/settings/network", json=policy)

    @operation("settings_reset_network")
    def reset_network_settings(self) -> dict[str, Any]:
        return self._call("DELETE", "/settings/network")

    # scoped policies (capture, network, maintenance windows per selector): cloud/policy
    @operation("policies_list_policies")
    def policies(self) -> dict[str, Any]:
        return self._call("GET", "/policies")

    @operation("policies_get_policy")
    def get_policy(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/policies/{name}")

    @operation("policies_put_policy")
    def put_policy(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"/policies/{name}", json=body)

    @operation("policies_delete_policy")
    def delete_policy(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/policies/{name}")

    @operation("policies_get_fleet_windows")
    def fleet_windows(self) -> dict[str, Any]:
        return self._call("GET", "/settings/windows")

    @operation("policies_put_fleet_windows")
    def set_fleet_windows(self, windows: list[dict[str, Any]]) -> dict[str, Any]:
        return self._call("PUT", "/settings/windows", json={"windows": windows})

    @operation("policies_device_policy")
    def device_policy(self, device_id: str) -> dict[str, Any]:
        return self._call("GET", f"/devices/{device_id}/policy")

    @operation("tokens_create")
    def create_token(self, name: str, role: str, expires_in_s: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "role": role}
        if expires_in_s:
            body["expires_in_s"] = expires_in_s
        return self._call("POST", "/tokens", json=body)

    @operation("tokens_list_all")
    def list_tokens(self) -> list[dict[str, Any]]:
        return self._call("GET", "/tokens")

    @operation("tokens_revoke")
    def revoke_token(self, token_id: int) -> dict[str, Any]:
        return self._call("DELETE", f"/tokens/{token_id}")

    @operation("models_get_drift")
    def model_drift(self, model: str, **params: Any) -> dict[str, Any]:
        name, _, version = model.partition(":")
        return self._call("GET", f"/models/{name}/versions/{version}/drift", params=params)

    @operation("devices_get_offline_bundle")
    def offline_bundle(self, device_id: str, out: Any) -> int:
        """Stream ``device_id``'s offline bundle (a tar) into the binary file ``out``; returns bytes written."""
        try:
            with self.http.stream("GET", f"/devices/{device_id}/offline-bundle") as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error_of(resp)
                n = 0
                for chunk in resp.iter_bytes(1024 * 1024):
                    out.write(chunk)
                    n += len(chunk)
                return n
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the controller at {self.http.base_url}: {exc}") from None

    @operation("bundles_get_bundle")
    def download_bundle(self, digest: str) -> bytes:
        try:
            resp = self.http.get(f"/bundles/{digest}")
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the controller at {self.http.base_url}: {exc}") from None
        if resp.status_code >= 400:
            raise _error_of(resp)
        return resp.content

    @operation("review_get_queue")
    def review_queue(self, **params: Any) -> dict[str, Any]:
        return self._call("GET", "/review/queue", params=params)

    @operation("review_post_label")
    def review_label(self, event_id: str, verdict: str, *, note: str = "", device_id: str | None = None,
                     corrected_label: str | None = None) -> dict[str, Any]:
        body = {"verdict": verdict, "note": note, "device_id": device_id, "corrected_label": corrected_label}
        return self._call("POST", f"/review/{event_id}/label", json=body)

    @operation("review_export")
    def review_export(self, target: Any, **params: Any) -> int:
        """Stream the export zip (``format=`` zip by default, or a training format) into the
        binary file ``target``; returns the number of labels."""
        try:
            with self.http.stream("GET", "/review/export", params={"format": "zip", **params}) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error_of(resp)
                for chunk in resp.iter_bytes():
                    target.write(chunk)
                return int(resp.headers.get("x-edgefleet-labels", "0"))
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the controller at {self.http.base_url}: {exc}") from None

    @operation("shadow_list_pairs")
    def shadow_pairs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/shadow/pairs")

    @operation("shadow_get_pair")
    def shadow_pair(self, control: str, candidate: str) -> dict[str, Any]:
        return self._call("GET", f"/shadow/pairs/{control}/{candidate}")

    @operation("shadow_list_events")
    def shadow_events(self, **params: Any) -> list[dict[str, Any]]:
        return self._call("GET", "/events", params=params)

    @operation("rollouts_start")
    def start_rollout(self, model: str, *, slot: str = "control", select: str = "all",
                      waves: str = "1,10,50,100", soak: str = "30m", gates: list[str] | None = None,
                      on_breach: str = "rollback", device_timeout: str = "30m",
                      max_concurrent: int | None = None, start_at: str | None = None,
                      rate: str | None = None, ramp: str | None = None,
                      windows: list[dict[str, Any]] | None = None, network: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "slot": slot, "select": select, "waves": waves, "soak": soak,
                "gates": gates, "on_breach": on_breach, "device_timeout": device_timeout,
                "max_concurrent": max_concurrent, "start_at": start_at, "rate": rate, "ramp": ramp}
        if windows is not None or network is not None:  # the rollout's own policy (cloud/policy)
            body.update(windows=windows, network=network)
        return self._call("POST", "/rollouts", json=body)

    @operation("rollouts_list_rollouts")
    def list_rollouts_page(self, *, state: str | None = None, limit: int = 100,
                           cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of rollouts, newest first, and the next (older) page's cursor (the
        ``X-Next-Cursor`` header; None on the last page)."""
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        if cursor:
            params["cursor"] = cursor
        resp = self._response("GET", "/rollouts", params=params)
        return resp.json(), resp.headers.get(NEXT_CURSOR_HEADER) or None

    def list_rollouts(self, state: str | None = None, *, limit: int | None = None,
                      page_size: int = 100) -> list[dict[str, Any]]:
        """Rollouts, newest first, page after page: the newest ``limit``, or every one (None)."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while limit is None or len(out) < limit:
            size = page_size if limit is None else max(1, min(page_size, limit - len(out)))
            rows, cursor = self.list_rollouts_page(state=state, limit=size, cursor=cursor)
            out += rows
            if not cursor:
                break
        return out if limit is None else out[:limit]

    @operation("rollouts_get_status")
    def rollout_status(self, rollout_id: str, *, devices: bool = True, events: int = 30) -> dict[str, Any]:
        return self._call("GET", f"/rollouts/{rollout_id}", params={"devices": devices, "events": events})

    @operation("rollouts_rollout_devices")
    def rollout_devices(self, rollout_id: str, *, limit: int = 100, cursor: str | None = None,
                        status: str | None = None, wave: int | None = None) -> dict[str, Any]:
        """One page of a rollout's member devices (``items``, ``next_cursor``, ``total``); ``wave`` counts from 1."""
        params: dict[str, Any] = {"limit": limit}
        for key, value in (("cursor", cursor), ("status", status), ("wave", wave)):
            if value is not None:
                params[key] = value
        return self._call("GET", f"/rollouts/{rollout_id}/devices", params=params)

    @operation("rollouts_pause_rollout", "rollouts_resume_rollout", "rollouts_abort_rollout", "rollouts_rollback_rollout",
               "rollouts_cancel_rollout")
    def rollout_command(self, rollout_id: str, command: str, reason: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/rollouts/{rollout_id}/{command}", json={"reason": reason})

    @operation("rollouts_reschedule_rollout")
    def reschedule_rollout(self, rollout_id: str, start_at: str) -> dict[str, Any]:
        return self._call("POST", f"/rollouts/{rollout_id}/reschedule", json={"start_at": start_at})

    # ----- webhooks, device history, tags, inventory -----

    @operation("webhooks_add")
    def add_webhook(self, url: str, events: list[str], *, secret: str | None = None,
                    description: str = "") -> dict[str, Any]:
        body = {"url": url, "events": events, "secret": secret, "description": description}
        return self._call("POST", "/webhooks", json=body)

    @operation("webhooks_list_all")
    def list_webhooks(self) -> list[dict[str, Any]]:
        return self._call("GET", "/webhooks")

    @operation("webhooks_remove")
    def remove_webhook(self, webhook_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/webhooks/{webhook_id}")

    @operation("webhooks_test")
    def test_webhook(self, webhook_id: str) -> dict[str, Any]:
        return self._call("POST", f"/webhooks/{webhook_id}/test")

    @operation("webhooks_deliveries")
    def webhook_deliveries(self, webhook_id: str, *, limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, **({"state": state} if state else {})}
        return self._call("GET", f"/webhooks/{webhook_id}/deliveries", params=params)

    @operation("webhooks_get_delivery")
    def webhook_delivery(self, delivery_id: str) -> dict[str, Any]:
        return self._call("GET", f"/webhooks/deliveries/{delivery_id}")

    @operation("webhooks_redeliver")
    def redeliver_webhook(self, delivery_id: str) -> dict[str, Any]:
        return self._call("POST", f"/webhooks/deliveries/{delivery_id}/redeliver")

    @operation("devices_device_history")
    def device_history(self, device_id: str, *, since: str | None = None, limit: int = 100,
                       kinds: list[str] | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, **({"since": since} if since else {}), **({"kind": kinds} if kinds else {})}
        return self._call("GET", f"/devices/{device_id}/history", params=params)

    @operation("devices_patch_tags")
    def tag_device(self, device_id: str, set_tags: dict[str, str] | None = None,
                   remove: list[str] | None = None) -> dict[str, Any]:
        return self._call("PATCH", f"/devices/{device_id}/tags", json={"set": set_tags or {}, "remove": remove or []})

    @operation("devices_get_inventory")
    def device_inventory(self, device_id: str) -> dict[str, Any]:
        return self._call("GET", f"/devices/{device_id}/inventory")

    # ----- the rest of the API (every operationId has a method: tests/contract) -----

    @operation("health_live")
    def health_live(self) -> dict[str, Any]:
        return self._call("GET", "/health/live")

    @operation("health_ready")
    def health_ready(self) -> dict[str, Any]:
        """Readiness; a 503 (not ready) raises ``ApiError`` like any other error."""
        return self._call("GET", "/health/ready")

    @operation("metrics_metrics")
    def metrics(self) -> str:
        """The Prometheus exposition (``/metrics``, outside ``/api/v1``)."""
        return self._bytes("GET", self._root + "/metrics").decode()

    @operation("models_get_manifest")
    def model_manifest(self, model: str) -> dict[str, Any]:
        name, _, version = model.partition(":")
        return self._call("GET", f"/models/{name}/versions/{version}/manifest")

    @operation("devices_endpoints")
    def provisioning_endpoints(self) -> dict[str, Any]:
        return self._call("GET", "/provisioning/endpoints")

    @operation("devices_start_rotation")
    def start_credentials_rotation(self) -> dict[str, Any]:
        """Device token: new credentials for a requested rotation (pending until confirmed)."""
        return self._call("POST", "/devices/self/credentials")

    @operation("devices_confirm_rotation")
    def confirm_credentials_rotation(self) -> dict[str, Any]:
        """With the *new* device token: the new credentials replace the old."""
        return self._call("POST", "/devices/self/credentials/confirm")

    @operation("devices_register_report_key")
    def register_report_key(self, public_key: str, rotation_signature: str | None = None) -> dict[str, Any]:
        """Device token: register (or, signed by the current key, rotate) the report key."""
        return self._call("PUT", "/devices/self/report-key",
                          json={"public_key": public_key, "rotation_signature": rotation_signature})

    @operation("rollouts_get_events")
    def rollout_events(self, rollout_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
        return self._call("GET", f"/rollouts/{rollout_id}/events", params={"limit": limit})

    @operation("webhooks_get_one")
    def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        return self._call("GET", f"/webhooks/{webhook_id}")

    @operation("audit_list_audit")
    def audit_entries(self, *, actor: str | None = None, action: str | None = None, since: str | None = None,
                      until: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        params = {"actor": actor, "action": action, "since": since, "until": until, "limit": limit, "offset": offset}
        return self._call("GET", "/audit", params={k: v for k, v in params.items() if v is not None})

    @operation("audit_export_audit")
    def audit_export(self, *, actor: str | None = None, action: str | None = None, since: str | None = None,
                     until: str | None = None) -> list[dict[str, Any]]:
        """Every matching entry, oldest first, hashes included (the JSON lines, parsed)."""
        params = {"actor": actor, "action": action, "since": since, "until": until}
        text = self._bytes("GET", "/audit/export", params={k: v for k, v in params.items() if v is not None})
        return [json.loads(line) for line in text.decode().splitlines() if line.strip()]

    @operation("audit_verify_audit")
    def audit_verify(self) -> dict[str, Any]:
        return self._call("GET", "/audit/verify")

    @operation("clips_get_clip")
    def clip(self, clip_id: str) -> bytes:
        return self._bytes("GET", f"/clips/{clip_id}")

    @operation("clips_get_keyframe")
    def clip_keyframe(self, clip_id: str) -> bytes:
        return self._bytes("GET", f"/clips/{clip_id}/keyframe")

    @operation("clips_get_meta")
    def clip_meta(self, clip_id: str) -> dict[str, Any]:
        return self._call("GET", f"/clips/{clip_id}/meta")

    @operation("trust_roots")
    def trust_roots(self) -> dict[str, Any]:
        return self._call("GET", "/trust/roots")

    @operation("trust_keys")
    def trust_keys(self) -> dict[str, Any]:
        return self._call("GET", "/trust/keys")

    @operation("trust_rotate")
    def rotate_key(self, role: str, repo: str = "both") -> dict[str, Any]:
        """Rotate a key the controller holds (``root``/``targets``/``snapshot``/``timestamp``)."""
        return self._call("POST", f"/trust/rotate/{role}", params={"repo": repo})

    @operation("trust_rotate_prepare")
    def prepare_rotation(self, role: str, *, repo: str = "both",
                         new_root_keys: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._call("POST", f"/trust/rotate/{role}/prepare", json={"repo": repo, "new_root_keys": new_root_keys})

    @operation("trust_rotate_commit")
    def commit_rotation(self, role: str, signatures: dict[str, list[dict[str, str]]],
                        root_location: str = "") -> dict[str, Any]:
        return self._call("POST", f"/trust/rotate/{role}/commit",
                          json={"signatures": signatures, "root_location": root_location})

    @operation("trust_resign_prepare")
    def prepare_resign_root(self, repo: str = "both") -> dict[str, Any]:
        return self._call("POST", f"/trust/resign-root/{repo}/prepare")

    @operation("trust_resign_commit")
    def commit_resign_root(self, repo: str, signatures: dict[str, list[dict[str, str]]],
                           root_location: str = "") -> dict[str, Any]:
        return self._call("POST", f"/trust/resign-root/{repo}/commit",
                          json={"signatures": signatures, "root_location": root_location})

    # the device side of clip uploads (docs/uploads.md), with a device token

    @operation("uploads_create_upload")
    def create_upload(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/uploads", json=body)

    @operation("uploads_get_upload")
    def upload_status(self, upload_id: str) -> dict[str, Any]:
        return self._call("GET", f"/uploads/{upload_id}")

    @operation("uploads_put_chunk")
    def put_upload_chunk(self, upload_id: str, part: str, start: int, total: int, data: bytes) -> dict[str, Any]:
        headers = {"Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}",
                   "Content-Type": "application/octet-stream"}
        return self._call("PUT", f"/uploads/{upload_id}/{part}", content=data, headers=headers)

    @operation("uploads_complete_upload")
    def complete_upload(self, upload_id: str) -> dict[str, Any]:
        return self._call("POST", f"/uploads/{upload_id}/complete")

    def _bytes(self, method: str, path: str, **kwargs: Any) -> bytes:
        """A call whose answer is not JSON (bytes, text); errors as ``_call``'s."""
        return self._response(method, path, **kwargs).content

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._call(method, path, **kwargs)


def load_cli_config(data_dir: Path) -> dict[str, str]:
    path = data_dir / CLI_CONFIG
    if not path.is_file():
        return {}
    with open(path, "rb") as f:
        return dict(tomllib.load(f).get("cli", {}))


def write_cli_config(data_dir: Path, url: str, token: str, ca_file: Path | None = None) -> Path:
    path = data_dir / CLI_CONFIG
    ca_line = f"ca_file = {json.dumps(str(ca_file))}\n" if ca_file else ""
    path.write_text(f'[cli]\nurl = "{url}"\ntoken = "{token}"\n{ca_line}')
    os.chmod(path, 0o600)
    return path
