"""``fleet device add|ls|show`` and ``fleet deploy``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, err_console, fail

app = typer.Typer(help="Enrol and inspect devices.", no_args_is_help=True)


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
    mqtt_host: Annotated[str, typer.Option(help="broker host written into agent.toml")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option(help="broker port written into agent.toml (8883: MQTT over TLS)")] = 1883,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Enrol a device and print its credentials (HTTP token, broker account); with --out, write its provisioning files."""
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
    write_provisioning(out, res, call(client.request, "GET", "/trust/roots"),
                       controller_url=str(client.http.base_url).removesuffix("/").removesuffix("/api/v1"),
                       mqtt_host=mqtt_host, mqtt_port=mqtt_port)
    console.print(f"device {res['id']} enrolled; provisioning files in {out}: agent.toml, credentials.json (secret, 0600), "
                  "director-root.json, image-root.json" + (", fleet-ca.pem" if (out / "fleet-ca.pem").exists() else ""))
    console.print("on the device: fleet-agent provision --config agent.toml --director-root director-root.json "
                  "--image-root image-root.json --credentials credentials.json")


def write_provisioning(out: Path, creds: dict, roots: dict, *, controller_url: str, mqtt_host: str, mqtt_port: int) -> None:
    """The files a device is provisioned from. Secrets go only into credentials.json (0600)."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    (out / "director-root.json").write_text(json.dumps(roots["director_root"]))
    (out / "image-root.json").write_text(json.dumps(roots["image_root"]))
    secret = out / "credentials.json"
    secret.touch(mode=0o600)
    secret.chmod(0o600)
    secret.write_text(json.dumps(creds))
    ca = roots.get("fleet_ca_pem")
    tls_lines = ""
    if ca:
        (out / "fleet-ca.pem").write_text(ca)
        tls_lines = 'ca_file = "/etc/edgefleet/fleet-ca.pem"\n'
    mqtt_tls = "tls = true\nca_file = \"/etc/edgefleet/fleet-ca.pem\"\n" if ca and mqtt_port == 8883 else ""
    agent_toml = out / "agent.toml"
    agent_toml.write_text(
        "# credentials: `fleet-agent provision --credentials credentials.json` stores them in data_dir/identity\n"
        "[agent]\n"
        f'device_id = "{creds["id"]}"\n'
        'data_dir = "/var/lib/edgefleet"\n'
        f'controller_url = "{controller_url}"\n'
        f"{tls_lines}\n"
        f'[mqtt]\nhost = "{mqtt_host}"\nport = {mqtt_port}\n{mqtt_tls}\n'
        '[source]\nkind = "camera"\nuri = "0"\nfps = 15\n'
    )
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
        write_provisioning(out, res, call(client.request, "GET", "/trust/roots"),
                           controller_url=str(client.http.base_url).removesuffix("/").removesuffix("/api/v1"),
                           mqtt_host="127.0.0.1", mqtt_port=1883)
        console.print(f"device {device_id}: new credentials in {out / 'credentials.json'}; the old ones no longer work")
        return
    console.print(f"device {device_id}: new credentials (shown once; the old ones no longer work):")
    console.print(f"token          {res['token']}", highlight=False, soft_wrap=True)
    console.print(f"mqtt password  {res['mqtt_password']}", highlight=False, soft_wrap=True)


def _slot_cell(slot: dict) -> str:
    if not slot.get("desired") and not slot.get("installed"):
        return "-"
    text = slot.get("installed") or "-"
    if slot.get("desired") and slot.get("desired") != slot.get("installed"):
        text += f" → {slot['desired']}"
    if slot.get("phase") and slot["phase"] not in ("idle",):
        text += f" [{slot['phase']}]"
    if slot.get("error_code"):
        text += f" {slot['error_code']}"
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
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Show each device's online state, slots and last telemetry."""
    rows = call(api_client(data_dir, url, token).list_devices)
    if as_json:
        console.print_json(json.dumps(rows))
        return
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
            d["id"], d["hardware_id"] + (f" [yellow](reports {d['hardware_id_reported']}, not approved)[/]"
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
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Assign a model version to a slot on devices now (no waves; see `fleet rollout` for staged rollouts)."""
    if not device and not all_devices:
        fail("name devices with --device ID (repeatable) or use --all")
    if device and all_devices:
        fail("use either --device or --all, not both")
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
