"""A small typed client for the admin API, used by the ``fleet`` CLI and the demo.

Errors come back as ``ApiError`` carrying the HTTP status and the server's ``detail``.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

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


class ApiClient:
    def __init__(self, url: str, token: str | None, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None,
                 ca_file: str | os.PathLike[str] | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # an https:// controller is verified against ca_file (the fleet CA) when given, else the system CAs
        verify: Any = ssl.create_default_context(cafile=os.fspath(ca_file)) if ca_file else True
        self.http = httpx.Client(base_url=url.rstrip("/") + "/api/v1", headers=headers, timeout=timeout, transport=transport,
                                 verify=verify)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the controller at {self.http.base_url}: {exc}") from None
        if resp.status_code >= 400:
            code = None
            try:
                body = resp.json()
                detail = body.get("detail", resp.text)
                code = body.get("code") if isinstance(body.get("code"), str) else None
            except (ValueError, AttributeError):
                detail = resp.text
            raise ApiError(resp.status_code, detail if isinstance(detail, str) else json.dumps(detail), code)
        return resp.json() if resp.content else None

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

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

    def list_models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/models")

    def get_model(self, model: str) -> dict[str, Any]:
        name, _, version = model.partition(":")
        return self._call("GET", f"/models/{name}/versions/{version}")

    def set_model_status(self, model: str, action: str, reason: str | None = None) -> dict[str, Any]:
        """``action``: deprecate | block | unblock."""
        name, _, version = model.partition(":")
        return self._call("POST", f"/models/{name}/{version}/{action}", json={"reason": reason})

    def yank_model(self, model: str, *, reason: str, to: str | None = None, waves: str = "1,10,50,100",
                   soak: str = "30m", gates: list[str] | None = None, on_breach: str = "pause",
                   device_timeout: str = "30m", max_concurrent: int | None = None) -> dict[str, Any]:
        name, _, version = model.partition(":")
        body = {"reason": reason, "to": to, "waves": waves, "soak": soak, "gates": gates, "on_breach": on_breach,
                "device_timeout": device_timeout, "max_concurrent": max_concurrent}
        return self._call("POST", f"/models/{name}/{version}/yank", json=body)

    def enrol_device(self, device_id: str, hardware_id: str = "unknown", tags: dict[str, str] | None = None,
                     *, certificate: bool = False, report_public_key: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": device_id, "hardware_id": hardware_id, "tags": tags or {}}
        if certificate:
            body["certificate"] = True
        if report_public_key:
            body["report_public_key"] = report_public_key
        return self._call("POST", "/devices", json=body)

    def reset_report_key(self, device_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/devices/{device_id}/report-key")

    def approve_hardware(self, device_id: str) -> dict[str, Any]:
        return self._call("POST", f"/devices/{device_id}/approve-hardware")

    def revoke_device(self, device_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/devices/{device_id}")

    def rotate_device_credentials(self, device_id: str, *, now: bool = False) -> dict[str, Any]:
        return self._call("POST", f"/devices/{device_id}/rotate-credentials", params={"now": "true"} if now else None)

    def list_devices(self) -> list[dict[str, Any]]:
        return self._call("GET", "/devices")

    def get_device(self, device_id: str) -> dict[str, Any]:
        return self._call("GET", f"/devices/{device_id}")

    def deploy(self, model: str, slot: str, devices: list[str] | None) -> dict[str, Any]:
        body = {"model": model, "slot": slot, "devices": devices or [], "all": devices is None}
        return self._call("POST", "/deployments", json=body)

    def capture_settings(self) -> dict[str, Any]:
        return self._call("GET", "/settings/capture")

    def change_capture_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", "/settings/capture", json=changes)

    def reset_capture_settings(self) -> dict[str, Any]:
        return self._call("DELETE", "/settings/capture")

    def create_token(self, name: str, role: str, expires_in_s: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "role": role}
        if expires_in_s:
            body["expires_in_s"] = expires_in_s
        return self._call("POST", "/tokens", json=body)

    def list_tokens(self) -> list[dict[str, Any]]:
        return self._call("GET", "/tokens")

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        return self._call("DELETE", f"/tokens/{token_id}")

    def model_drift(self, model: str, **params: Any) -> dict[str, Any]:
        name, _, version = model.partition(":")
        return self._call("GET", f"/models/{name}/versions/{version}/drift", params=params)

    def download_bundle(self, digest: str) -> bytes:
        try:
            resp = self.http.get(f"/bundles/{digest}")
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the controller at {self.http.base_url}: {exc}") from None
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, resp.text)
        return resp.content

    def review_queue(self, **params: Any) -> dict[str, Any]:
        return self._call("GET", "/review/queue", params=params)

    def review_label(self, event_id: str, verdict: str, *, note: str = "", device_id: str | None = None) -> dict[str, Any]:
        body = {"verdict": verdict, "note": note, "device_id": device_id}
        return self._call("POST", f"/review/{event_id}/label", json=body)

    def review_export(self, target: Any, **params: Any) -> int:
        """Stream the export zip into the binary file ``target``; returns the number of labels."""
        try:
            with self.http.stream("GET", "/review/export", params={**params, "format": "zip"}) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    try:
                        detail = resp.json().get("detail", resp.text)
                    except ValueError:
                        detail = resp.text
                    raise ApiError(resp.status_code, detail if isinstance(detail, str) else json.dumps(detail))
                for chunk in resp.iter_bytes():
                    target.write(chunk)
                return int(resp.headers.get("x-edgefleet-labels", "0"))
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the controller at {self.http.base_url}: {exc}") from None

    def shadow_pairs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/shadow/pairs")

    def shadow_pair(self, control: str, candidate: str) -> dict[str, Any]:
        return self._call("GET", f"/shadow/pairs/{control}/{candidate}")

    def shadow_events(self, **params: Any) -> list[dict[str, Any]]:
        return self._call("GET", "/events", params=params)

    def start_rollout(self, model: str, *, slot: str = "control", select: str = "all",
                      waves: str = "1,10,50,100", soak: str = "30m", gates: list[str] | None = None,
                      on_breach: str = "rollback", device_timeout: str = "30m",
                      max_concurrent: int | None = None) -> dict[str, Any]:
        body = {"model": model, "slot": slot, "select": select, "waves": waves, "soak": soak,
                "gates": gates, "on_breach": on_breach, "device_timeout": device_timeout,
                "max_concurrent": max_concurrent}
        return self._call("POST", "/rollouts", json=body)

    def list_rollouts(self, state: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/rollouts", params={"state": state} if state else None)

    def rollout_status(self, rollout_id: str, *, devices: bool = True, events: int = 30) -> dict[str, Any]:
        return self._call("GET", f"/rollouts/{rollout_id}", params={"devices": devices, "events": events})

    def rollout_command(self, rollout_id: str, command: str, reason: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/rollouts/{rollout_id}/{command}", json={"reason": reason})

    # ----- webhooks, device history, tags, inventory -----

    def add_webhook(self, url: str, events: list[str], *, secret: str | None = None,
                    description: str = "") -> dict[str, Any]:
        body = {"url": url, "events": events, "secret": secret, "description": description}
        return self._call("POST", "/webhooks", json=body)

    def list_webhooks(self) -> list[dict[str, Any]]:
        return self._call("GET", "/webhooks")

    def remove_webhook(self, webhook_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/webhooks/{webhook_id}")

    def test_webhook(self, webhook_id: str) -> dict[str, Any]:
        return self._call("POST", f"/webhooks/{webhook_id}/test")

    def webhook_deliveries(self, webhook_id: str, *, limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, **({"state": state} if state else {})}
        return self._call("GET", f"/webhooks/{webhook_id}/deliveries", params=params)

    def webhook_delivery(self, delivery_id: str) -> dict[str, Any]:
        return self._call("GET", f"/webhooks/deliveries/{delivery_id}")

    def redeliver_webhook(self, delivery_id: str) -> dict[str, Any]:
        return self._call("POST", f"/webhooks/deliveries/{delivery_id}/redeliver")

    def device_history(self, device_id: str, *, since: str | None = None, limit: int = 100,
                       kinds: list[str] | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, **({"since": since} if since else {}), **({"kind": kinds} if kinds else {})}
        return self._call("GET", f"/devices/{device_id}/history", params=params)

    def tag_device(self, device_id: str, set_tags: dict[str, str] | None = None,
                   remove: list[str] | None = None) -> dict[str, Any]:
        return self._call("PATCH", f"/devices/{device_id}/tags", json={"set": set_tags or {}, "remove": remove or []})

    def device_inventory(self, device_id: str) -> dict[str, Any]:
        return self._call("GET", f"/devices/{device_id}/inventory")

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
