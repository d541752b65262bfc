"""``fleet device add|ls|show`` and ``fleet deploy``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

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
    out: Annotated[Optional[Path], typer.Option("--out", help="write agent.toml and the trusted roots for the device into this directory")] = None,
    mqtt_host: Annotated[str, typer.Option(help="broker host written into agent.toml")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option(help="broker port written into agent.toml")] = 1883,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Enrol a device and print its token; with --out, write its provisioning files."""
    client = api_client(data_dir, url, token)
    res = call(client.enrol_device, device_id, hardware, _tags(tag))
    if out is None:
        console.print(f"device {res['id']} enrolled; its token (shown once):")
        console.print(res["token"], highlight=False, soft_wrap=True)
        return
    roots = call(client.request, "GET", "/trust/roots")
    out.mkdir(parents=True, exist_ok=True)
    (out / "director-root.json").write_text(json.dumps(roots["director_root"]))
    (out / "image-root.json").write_text(json.dumps(roots["image_root"]))
    agent_toml = out / "agent.toml"
    agent_toml.write_text(
        "[agent]\n"
        f'device_id = "{device_id}"\n'
        'data_dir = "/var/lib/edgefleet"\n'
        f'controller_url = "{str(client.http.base_url).removesuffix("/api/v1/").removesuffix("/api/v1")}"\n'
        f'token = "{res["token"]}"\n'
        f'trust_roots = "{out.resolve()}"\n\n'
        f'[mqtt]\nhost = "{mqtt_host}"\nport = {mqtt_port}\n\n'
        '[source]\nkind = "camera"\nuri = "0"\nfps = 15\n'
    )
    agent_toml.chmod(0o600)
    console.print(f"device {res['id']} enrolled; provisioning files in {out}: agent.toml (holds its token), director-root.json, image-root.json")


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
    table = Table("device", "hw", "online", "control", "shadow", "fps", "p99 ms", "agreement", "hardware", "last seen")
    for d in rows:
        t = d.get("telemetry") or {}
        shadow = t.get("shadow") or {}
        agreement = shadow.get("agreement")
        table.add_row(
            d["id"], d["hardware_id"], "[green]yes[/]" if d["online"] else "[red]no[/]",
            _slot_cell(d["slots"]["control"]), _slot_cell(d["slots"]["shadow"]),
            f"{t['fps']:.1f}" if t else "-", f"{t['latency_ms']['p99']:.2f}" if t else "-",
            f"{agreement:.1%}" if agreement is not None else "-", _hw_cell(t.get("hardware") or {}),
            (d.get("last_seen") or "-")[:19],
        )
    console.print(table)


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
