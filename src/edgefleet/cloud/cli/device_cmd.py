"""``fleet device add|ls|show`` and ``fleet deploy``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, err_console, fail

app = typer.Typer(help="Enrol and inspect devices.", no_args_is_help=True)

DEFAULT_AGENT_DATA_DIR = "/var/lib/edgefleet"  # the systemd unit's StateDirectory
SOURCE_KINDS = ("camera", "video", "synthetic-digits")
DEVICE_STATES = ("online", "offline", "never_seen", "revoked")  # cloud/devices/views.py
_SLOT_MODEL = re.compile(r"^(control|shadow)=[A-Za-z0-9][A-Za-z0-9_.-]{0,127}:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _tags(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values or []:
        key, sep, val = v.partition("=")
        if not sep:
            fail(f"--tag must be KEY=VALUE, got {v!r}")
        out[key] = val
    return out


@app.command()
def add(
    device_id: Annotated[str, typer.Argument(help="device id (letters, digits, '.', '_', '-')")],
    hardware: Annotated[str, typer.Option("--hw", help="hardware profile id, e.g. jetson-orin-nano")] = "unknown",
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="KEY=VALUE, repeatable")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="write the device's provisioning files into this directory (agent.toml, credentials.json, trusted roots, CA)")] = None,
    cert: Annotated[bool, typer.Option("--cert", help="also issue an X.509 client certificate from the fleet CA (mutual TLS to the broker)")] = False,
    report_key: Annotated[Optional[str], typer.Option("--report-key", help="the device's report public key (FILE or base64, printed by `fleet-agent provision`)")] = None,
    mqtt_host: Annotated[Optional[str], typer.Option(help="broker host written into agent.toml [default: the controller's device_mqtt_host]")] = None,
    mqtt_port: Annotated[Optional[int], typer.Option(help="broker port written into agent.toml [default: the controller's]")] = None,
    mqtt_protocol: Annotated[Optional[str], typer.Option("--mqtt-protocol", help="5 or 3.1.1 [default: the controller's]")] = None,
    mqtt_tls: Annotated[Optional[bool], typer.Option("--mqtt-tls/--no-mqtt-tls", help="device connects to the broker over TLS [default: the controller's]")] = None,
    controller_url: Annotated[Optional[str], typer.Option("--controller-url", help="URL the device reaches the controller at [default: the controller's public_url]")] = None,
    agent_data_dir: Annotated[str, typer.Option("--agent-data-dir", help="the agent's data directory on the device")] = DEFAULT_AGENT_DATA_DIR,
    source: Annotated[str, typer.Option("--source", help="frames: camera:INDEX, camera:rtsp://…, video:PATH or synthetic-digits")] = "camera:0",
    fps: Annotated[float, typer.Option("--fps", min=0.1, max=1000, help="frames per second from the source")] = 15.0,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Enrol a device and print its credentials (HTTP token, broker account); with --out, write a complete
    bundle that `fleet-agent provision DIR` installs without edits."""
    source_kind, source_uri = _source(source)
    client = api_client(data_dir, url, token)
    res = call(client.enrol_device, device_id, hardware, _tags(tag), certificate=cert, report_public_key=_report_key(report_key))
    if out is None:
        console.print(f"device {res['id']} enrolled; its credentials (shown once):")
        console.print(f"token          {res['token']}", highlight=False, soft_wrap=True)
        console.print(f"mqtt username  {res['mqtt_username']}", highlight=False, soft_wrap=True)
        console.print(f"mqtt password  {res['mqtt_password']}", highlight=False, soft_wrap=True)
        if res.get("cert_pem"):
            console.print("a client certificate was issued: use --out DIR to write it with its key")
        return
    endpoints = _device_endpoints(client, controller_url=controller_url, mqtt_host=mqtt_host, mqtt_port=mqtt_port,
                                  mqtt_protocol=mqtt_protocol, mqtt_tls=mqtt_tls)
    write_provisioning(out, res, call(client.request, "GET", "/trust/roots"), endpoints=endpoints,
                       agent_data_dir=agent_data_dir, source_kind=source_kind, source_uri=source_uri, fps=fps)
    mqtt = endpoints["mqtt"]
    console.print(f"device {res['id']} enrolled; bundle in {out}: agent.toml, credentials.json (secret, 0600), "
                  "director-root.json, image-root.json" + (", fleet-ca.pem" if (out / "fleet-ca.pem").exists() else ""))
    console.print(f"the device reaches the controller at {endpoints['controller_url']} and the broker at "
                  f"{mqtt['host']}:{mqtt['port']} (MQTT {mqtt['protocol']}{', TLS' if mqtt['tls'] else ''})", highlight=False)
    if not endpoints.get("public_url_set") and controller_url is None:
        console.print("[yellow]the controller has no public_url: devices on other machines cannot reach "
                      f"{escape(endpoints['controller_url'])}; set public_url in controller.toml or pass --controller-url[/]")
    console.print(f"copy {out} to the device, then: fleet-agent provision {out.name} && "
                  f"fleet-agent run --config {agent_data_dir}/agent.toml", highlight=False)


def _source(text: str) -> tuple[str, str]:
    kind, _, uri = text.partition(":")
    if kind not in SOURCE_KINDS:
        fail(f"--source {text!r}: use camera:INDEX, camera:rtsp://HOST/PATH, video:PATH or synthetic-digits")
    if kind in ("camera", "video") and not uri:
        fail(f"--source {text!r}: {kind} needs a {'camera index or URL' if kind == 'camera' else 'file path'} after ':'")
    return kind, uri


def _device_endpoints(client, *, controller_url: str | None, mqtt_host: str | None, mqtt_port: int | None,  # type: ignore[no-untyped-def]
                      mqtt_protocol: str | None, mqtt_tls: bool | None) -> dict:
    """The controller's view of how devices reach it and the broker, with the operator's overrides."""
    if mqtt_protocol is not None and mqtt_protocol not in ("5", "3.1.1"):
        fail(f"--mqtt-protocol {mqtt_protocol!r}: use 5 or 3.1.1")
    if controller_url is not None and not controller_url.startswith(("http://", "https://")):
        fail(f"--controller-url {controller_url!r}: give an http:// or https:// URL")
    ep = call(client.request, "GET", "/provisioning/endpoints")
    mqtt = dict(ep["mqtt"])
    mqtt.update({k: v for k, v in (("host", mqtt_host), ("port", mqtt_port), ("protocol", mqtt_protocol),
                                   ("tls", mqtt_tls)) if v is not None})
    return {"controller_url": (controller_url or ep["controller_url"]).rstrip("/"),
            "public_url_set": ep.get("public_url_set", False), "mqtt": mqtt}


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_provisioning(out: Path, creds: dict, roots: dict, *, endpoints: dict, agent_data_dir: str = DEFAULT_AGENT_DATA_DIR,
                       source_kind: str = "camera", source_uri: str = "0", fps: float = 15.0) -> None:
    """A complete device bundle: agent.toml (no secrets; paths relative to the bundle), credentials.json
    (0600), the trusted roots and the fleet CA. ``fleet-agent provision DIR`` installs it as it is."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    (out / "director-root.json").write_text(json.dumps(roots["director_root"]))
    (out / "image-root.json").write_text(json.dumps(roots["image_root"]))
    secret = out / "credentials.json"
    secret.touch(mode=0o600)
    secret.chmod(0o600)
    secret.write_text(json.dumps(creds))
    ca = roots.get("fleet_ca_pem")
    if ca:
        (out / "fleet-ca.pem").write_text(ca)
    mqtt, url = endpoints["mqtt"], endpoints["controller_url"]
    lines = [
        f"# edgefleet agent for device {creds['id']}, written by `fleet device add --out`.",
        "# Install on the device with `fleet-agent provision DIR` (copies the roots, CA and credentials into",
        "# data_dir and writes data_dir/agent.toml). Relative paths here are relative to this file.",
        "# Secrets are only in credentials.json; unknown keys are refused.",
        "[agent]",
        f"device_id = {_toml_str(creds['id'])}",
        f"data_dir = {_toml_str(agent_data_dir)}",
        "# the controller as this device reaches it",
        f"controller_url = {_toml_str(url)}",
        'trust_roots = "."  # director-root.json and image-root.json',
    ]
    if ca and url.startswith("https://"):
        lines.append('ca_file = "fleet-ca.pem"  # the controller\'s certificate chains to the fleet CA')
    lines += ["", "[mqtt]", f"host = {_toml_str(mqtt['host'])}", f"port = {int(mqtt['port'])}",
              f"protocol = {_toml_str(mqtt['protocol'])}"]
    if creds.get("mqtt_username"):
        lines.append(f"username = {_toml_str(creds['mqtt_username'])}  # password: credentials.json")
    if mqtt.get("tls"):
        lines.append("tls = true")
        if ca:
            lines.append('ca_file = "fleet-ca.pem"')
    lines += ["", "[source]", f"kind = {_toml_str(source_kind)}"]
    if source_uri:
        lines.append(f"uri = {_toml_str(source_uri)}")
    lines += [f"fps = {fps:g}", ""]
    agent_toml = out / "agent.toml"
    agent_toml.write_text("\n".join(lines))
    agent_toml.chmod(0o600)


@app.command()
def revoke(
    device_id: Annotated[str, typer.Argument(help="the device to cut off")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Revoke a device at once: token, broker account and certificate refused, director metadata withdrawn."""
    if not yes and not typer.confirm(f"revoke device {device_id}? It can then neither publish, download nor upload"):
        raise typer.Exit(1)
    res = call(api_client(data_dir, url, token).revoke_device, device_id)
    console.print(f"device {res['id']} revoked at {(res.get('revoked_at') or '')[:19]}; "
                  "`fleet device add` readmits it with new credentials")


@app.command("rotate-credentials")
def rotate_credentials(
    device_id: Annotated[str, typer.Argument(help="the device whose credentials to rotate")],
    now: Annotated[bool, typer.Option("--now", help="issue new credentials here and invalidate the old at once (the device must be re-provisioned with them)")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="with --now: write the new provisioning files here")] = None,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Rotate a device's token and broker password. By default the running agent fetches and confirms new
    credentials itself (it keeps its state); --now replaces them here, for a device that must be re-provisioned."""
    client = api_client(data_dir, url, token)
    res = call(client.rotate_device_credentials, device_id, now=now)
    if not now:
        console.print(f"device {device_id}: rotation {res['credentials_epoch']} requested; the agent fetches new "
                      "credentials on its next desired update, the old ones stop working once it confirms")
        return
    if out is not None:
        endpoints = _device_endpoints(client, controller_url=None, mqtt_host=None, mqtt_port=None,
                                      mqtt_protocol=None, mqtt_tls=None)
        write_provisioning(out, res, call(client.request, "GET", "/trust/roots"), endpoints=endpoints)
        console.print(f"device {device_id}: new credentials in {out / 'credentials.json'}; the old ones no longer work")
        return
    console.print(f"device {device_id}: new credentials (shown once; the old ones no longer work):")
    console.print(f"token          {res['token']}", highlight=False, soft_wrap=True)
    console.print(f"mqtt password  {res['mqtt_password']}", highlight=False, soft_wrap=True)


def _slot_cell(slot: dict) -> str:
    if not slot.get("desired") and not slot.get("installed"):
        return "-"
    text = escape(slot.get("installed") or "-")  # the device's words: text, never markup
    if slot.get("desired") and slot.get("desired") != slot.get("installed"):
        text += f" → {escape(slot['desired'])}"
    if slot.get("phase") and slot["phase"] not in ("idle",):
        text += " " + escape(f"[{slot['phase']}]")
    if slot.get("window_opens_at"):  # downloaded; switches when its maintenance window opens
        text += " " + escape(f"(window opens {str(slot['window_opens_at'])[:16].replace('T', ' ')}Z)")
    if slot.get("error_code"):
        text += f" {escape(slot['error_code'])}"
    if slot.get("model_status") == "blocked":  # still running a blocked version (fleet model yank)
        text += " [bold red]BLOCKED[/]"
    elif slot.get("model_status") == "deprecated":
        text += " [yellow]deprecated[/]"
    return text


def _hw_cell(hw: dict) -> str:
    parts = []
    for key, fmt in (("temp_max_c", "{:.0f}°C"), ("power_total_mw", "{:.1f} W"), ("cpu_percent", "cpu {:.0f}%")):
        if isinstance(hw.get(key), (int, float)):
            value = hw[key] / 1000 if key == "power_total_mw" else hw[key]
            parts.append(fmt.format(value))
    if hw.get("throttled"):
        parts.append("THROTTLED")
    return " ".join(parts) or "-"


@app.command("ls")
def list_devices(
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="KEY=VALUE; repeatable, all must match")] = None,
    profile: Annotated[Optional[str], typer.Option("--profile", help="hardware profile id, e.g. jetson-orin-nano")] = None,
    state: Annotated[Optional[str], typer.Option("--state", help="online, offline (seen before), never_seen or revoked")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="SLOT=NAME:VERSION assigned, e.g. control=digits:2.0; repeatable")] = None,
    installed: Annotated[Optional[list[str]], typer.Option("--installed", help="SLOT=NAME:VERSION the device reports installed; repeatable")] = None,
    stale: Annotated[Optional[bool], typer.Option("--stale/--fresh", help="only stale devices (signed state lags) / only fresh ones")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="show at most this many devices (pages of up to 1000 are followed)")] = 100,
    all_devices: Annotated[bool, typer.Option("--all", help="every matching device, however many (overrides --limit)")] = False,
    cursor: Annotated[Optional[str], typer.Option("--cursor", help="start at this cursor (printed under a listing that was cut)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (a list of devices)")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Show devices (online state, slots, last telemetry) in id order, a page at a time: the first --limit
    (100) that match the filters, or --all."""
    if state is not None and state not in DEVICE_STATES:
        fail(f"--state must be one of {', '.join(DEVICE_STATES)}, got {state!r}")
    _tags(tag)  # KEY=VALUE, said clearly before asking
    for value in (model or []) + (installed or []):
        if not _SLOT_MODEL.match(value):
            fail(f"--model/--installed must be SLOT=NAME:VERSION with SLOT control or shadow, got {value!r}")
    client = api_client(data_dir, url, token)
    filters = {"tag": tag, "profile": profile, "state": state, "model": model, "installed": installed, "stale": stale}
    rows: list[dict] = []
    next_cursor = cursor
    while True:
        want = 1000 if all_devices else min(1000, limit - len(rows))
        page = call(client.list_devices_page, limit=want, cursor=next_cursor, **filters)
        rows.extend(page["items"])
        next_cursor = page.get("next_cursor")
        if not next_cursor or (not all_devices and len(rows) >= limit):
            break
    if as_json:
        console.print_json(json.dumps(rows))
        return
    _print_devices(rows)
    if next_cursor:
        total = call(client.device_counts, **filters)["total"]
        console.print(f"{len(rows)} of {total} matching devices shown; the next ones: add --cursor {next_cursor} "
                      "(or --all)", highlight=False, soft_wrap=True)
    elif not rows:
        console.print("no devices match" if any(v for v in filters.values() if v is not None)
                      else "no devices; enrol one with `fleet device add ID`")


def _print_devices(rows: list[dict]) -> None:
    table = Table("device", "hw", "online", "signed state", "control", "shadow", "fps", "p99 ms", "agreement", "hardware",
                  "last seen")
    stale: list[tuple[str, str]] = []
    for d in rows:
        if d.get("stale"):
            stale.append((d["id"], d.get("stale_reason") or "signed state lags desired state"))
        t = d.get("telemetry") or {}
        shadow = t.get("shadow") or {}
        agreement = shadow.get("agreement")
        table.add_row(
            escape(d["id"]), escape(d["hardware_id"]) + (
                f" [yellow](reports {escape(d['hardware_id_reported'])}, not approved)[/]"
                if d.get("hardware_id_reported") else ""),
            "[green]yes[/]" if d["online"] else "[red]no[/]",
            "[red]STALE[/]" if d.get("stale") else "fresh",
            _slot_cell(d["slots"]["control"]), _slot_cell(d["slots"]["shadow"]),
            f"{t['fps']:.1f}" if t else "-", f"{t['latency_ms']['p99']:.2f}" if t else "-",
            f"{agreement:.1%}" if agreement is not None else "-", _hw_cell(t.get("hardware") or {}),
            (d.get("last_seen") or "-")[:19],
        )
    console.print(table)
    for device_id, reason in stale:  # the reason, never as markup (the device chose part of it)
        console.print(f"[red]stale[/] {escape(device_id)}: {escape(reason)}")


def deploy(
    model: Annotated[str, typer.Option("--model", help="NAME:VERSION")],
    device: Annotated[Optional[list[str]], typer.Option("--device", help="device id, repeatable")] = None,
    all_devices: Annotated[bool, typer.Option("--all", help="every enrolled device")] = False,
    slot: Annotated[str, typer.Option("--slot", help="control or shadow")] = "control",
    at: Annotated[Optional[str], typer.Option("--at", help="deploy later: ISO 8601 with an offset or +10m (becomes a one-wave rollout, scheduled; see `fleet rollout ls --scheduled`)")] = None,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Assign a model version to a slot on devices now, or --at a time (no waves; see `fleet rollout` for staged rollouts)."""
    if not device and not all_devices:
        fail("name devices with --device ID (repeatable) or use --all")
    if device and all_devices:
        fail("use either --device or --all, not both")
    if at is not None:  # a scheduled direct deploy is a one-wave rollout, no soak, no gate
        import time

        from ..rollout import SpecError, parse_start_at

        try:
            parse_start_at(at, time.time())
        except SpecError as exc:
            fail(f"--at: {exc}")
        select = "all" if all_devices else "device:" + "|".join(device or [])
        res = call(api_client(data_dir, url, token).start_rollout, model, slot=slot, select=select,
                   waves="100", soak="0", gates=[], start_at=at)
        when = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(res["start_at"]))
        console.print(f"{res['model']} scheduled for the {res['slot']} slot at {when}: rollout {res['id']} "
                      f"(fleet rollout reschedule|cancel {res['id']})")
        for warning in res.get("warnings") or []:
            err_console.print(f"[yellow]warning:[/] {escape(warning)}")
        return
    res = call(api_client(data_dir, url, token).deploy, model, slot, None if all_devices else device)
    console.print(f"{res['model']} assigned to the {res['slot']} slot of {len(res['devices'])} device(s)")
    for warning in res.get("warnings") or []:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")


# ----- signed reports (docs/signed-reports.md) -----


def _report_key(value: str | None) -> str | None:
    """``--report-key``: a file holding the public key (base64 or PEM), or the base64 itself."""
    if value is None:
        return None
    path = Path(value)
    try:
        if path.is_file():
            return path.read_text().strip()
    except OSError as exc:
        fail(f"cannot read --report-key {value}: {exc}")
    return value.strip()


@app.command("reset-report-key")
def reset_report_key(
    device_id: Annotated[str, typer.Argument(help="the device whose report key is forgotten")],
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Forget a device's report key (admin): the next key it registers is taken, and until then its reports are refused."""
    call(api_client(data_dir, url, token).reset_report_key, device_id)
    console.print(f"device {device_id}: report key cleared; the agent registers its key on its next start or retry")


@app.command("approve-hardware")
def approve_hardware(
    device_id: Annotated[str, typer.Argument(help="the device whose reported hardware id becomes its enrolled one")],
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Accept the hardware id a device reported (shown in `fleet device ls`); the director re-signs for it."""
    res = call(api_client(data_dir, url, token).approve_hardware, device_id)
    console.print(f"device {device_id}: hardware {res['hardware_id']} approved; its desired state is re-signed")
