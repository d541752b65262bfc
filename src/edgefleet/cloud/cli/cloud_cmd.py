"""``fleet cloud init|serve``: set up and run the controller (HTTPS and MQTT over TLS by default; docs/tls.md)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ...registry.tuf import KeyringError
from .. import audit
from ..auth import hash_token, new_token
from ..client import write_cli_config
from ..errors import CloudError
from ..runtime import Controller
from ..settings import CONFIG_FILE, load_settings
from ..tables import ApiToken
from .common import DataDirOpt, console, fail, missing_controller_message

app = typer.Typer(help="Set up and run the controller (HTTP API + MQTT bridge).", no_args_is_help=True)


def create_admin_token(controller: Controller, name: str = "admin", role: str = "admin") -> str:
    token = new_token("efk")
    with controller.session() as s:
        s.add(ApiToken(name=name, role=role, token_hash=hash_token(token)))
        s.commit()
    return token


@app.command()
def init(
    data_dir: DataDirOpt = None,
    http_port: Annotated[int, typer.Option(help="port the API will listen on")] = 8080,
    mqtt_host: Annotated[str, typer.Option(help="MQTT broker host, as the controller reaches it")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option(help="MQTT broker port for plain MQTT")] = 1883,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help="postgresql+psycopg://USER:PASSWORD@HOST/DB [default: SQLite in the data dir]")] = None,
    public_url: Annotated[Optional[str], typer.Option("--public-url", help="the URL devices reach the controller at, e.g. https://fleet.example.org (written into device bundles)")] = None,
    mqtt_protocol: Annotated[Optional[str], typer.Option("--mqtt-protocol", help="5 or 3.1.1 [default: 3.1.1]")] = None,
    mqtt_tls: Annotated[Optional[bool], typer.Option("--mqtt-tls/--no-mqtt-tls", help="connect to the broker over TLS on --mqtt-tls-port [default: on with the fleet CA]")] = None,
    mqtt_tls_port: Annotated[Optional[int], typer.Option("--mqtt-tls-port", help="broker port for MQTT over TLS [default: 8883]")] = None,
    mqtt_username: Annotated[Optional[str], typer.Option("--mqtt-username", help="the controller's account on an external broker")] = None,
    mqtt_password_file: Annotated[Optional[Path], typer.Option("--mqtt-password-file", help="file holding that account's password (referenced, not copied)")] = None,
    tls_name: Annotated[Optional[list[str]], typer.Option("--tls-name", help="DNS name or IP address for the server certificate (repeatable) [default: localhost, 127.0.0.1, ::1, this host's name]")] = None,
    no_tls: Annotated[bool, typer.Option("--no-tls", help="no fleet CA and no certificate: plain HTTP/MQTT, loopback only")] = False,
) -> None:
    """Create the data directory, database, fleet CA and server certificate; print a new admin API token (shown once)."""
    from ..tls_setup import default_tls_names, init_tls, write_tls_settings
    from .controller_toml import check_init_options, render_controller_toml

    try:
        check_init_options(public_url=public_url, database_url=database_url, mqtt_protocol=mqtt_protocol,
                           mqtt_port=mqtt_port, mqtt_password_file=mqtt_password_file, mqtt_username=mqtt_username)
        settings = load_settings(data_dir)
    except CloudError as exc:
        fail(str(exc))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cfg = settings.data_dir / CONFIG_FILE
    if not cfg.exists():
        chosen = {"http_port": http_port, "mqtt_host": mqtt_host, "mqtt_port": mqtt_port, "database_url": database_url,
                  "public_url": public_url.rstrip("/") if public_url else None, "mqtt_protocol": mqtt_protocol,
                  "mqtt_tls": mqtt_tls, "mqtt_tls_port": mqtt_tls_port, "mqtt_username": mqtt_username,
                  "mqtt_password_file": mqtt_password_file.resolve() if mqtt_password_file else None}
        cfg.touch(mode=0o600)  # may hold a database password
        cfg.chmod(0o600)
        cfg.write_text(render_controller_toml(chosen))
    elif any(v is not None for v in (database_url, public_url, mqtt_protocol, mqtt_tls, mqtt_username, mqtt_password_file)):
        console.print(f"[yellow]{cfg} exists and is kept as it is: edit it to change settings[/]")
    if not no_tls:
        if public_url and not tls_name:  # devices check the certificate against the host they were given
            from urllib.parse import urlsplit

            host = urlsplit(public_url).hostname
            tls_name = default_tls_names() + ([host] if host and host not in default_tls_names() else [])
        try:
            files = init_tls(settings.data_dir, tls_name or default_tls_names())
        except CloudError as exc:
            fail(str(exc))
        write_tls_settings(cfg, files)
        console.print(f"fleet CA [bold]{files.ca_file}[/] ({'created' if files.created_ca else 'kept'}); "
                      f"server certificate for {', '.join(tls_name or default_tls_names())}")
    try:
        settings = load_settings(data_dir)
    except CloudError as exc:
        fail(str(exc))
    controller = Controller(settings)
    controller.migrate()
    token = create_admin_token(controller)
    audit.record_local(settings, "token.create", "admin", {"role": "admin", "via": "fleet cloud init"}, engine=controller.engine)
    write_cli_config(settings.data_dir, settings.base_url, token, ca_file=settings.tls_ca_file)
    controller.engine.dispose()
    console.print(f"controller data in [bold]{settings.data_dir}[/] (database {settings.db_url.split('://')[0]})")
    console.print("admin API token (stored hashed; this is the only time it is shown):")
    console.print(token, highlight=False, soft_wrap=True)


@app.command()
def serve(
    data_dir: DataDirOpt = None,
    host: Annotated[Optional[str], typer.Option(help="bind address [env: EDGEFLEET_HTTP_HOST]")] = None,
    port: Annotated[Optional[int], typer.Option(help="HTTP port [env: EDGEFLEET_HTTP_PORT]")] = None,
    embedded_broker: Annotated[bool, typer.Option("--embedded-broker", help="also run an MQTT broker: TLS on mqtt_tls_port (8883) when the fleet CA exists, plain on 127.0.0.1:mqtt_port (mosquitto if installed, else amqtt)")] = False,
    require_client_cert: Annotated[bool, typer.Option("--require-client-cert", help="the embedded broker's TLS listener requires a device certificate from the fleet CA")] = False,
    insecure_http: Annotated[bool, typer.Option("--insecure-http", help="serve plain HTTP even with a certificate configured (refused on a non-loopback address unless --force)")] = False,
    force: Annotated[bool, typer.Option("--force", help="with --insecure-http: allow a non-loopback bind")] = False,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Run the HTTP API (HTTPS when a certificate is configured) and the MQTT bridge until Ctrl-C."""
    import uvicorn

    from ..api import create_app
    from ..interpreter import tune_gc
    from ..tls_setup import embedded_broker as make_broker
    from ..tls_setup import http_ssl_options

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        settings = load_settings(data_dir, http_host=host, http_port=port)
    except CloudError as exc:
        fail(str(exc))
    if not (settings.data_dir / "controller.db").exists() and settings.database_url is None:
        fail(missing_controller_message(data_dir, "controller.db"))
    try:
        ssl_options = http_ssl_options(settings, insecure_http=insecure_http, force=force)
    except CloudError as exc:
        fail(str(exc))
    broker = None
    if embedded_broker:
        broker = make_broker(settings, require_client_cert=require_client_cert, auth_dir=settings.broker_auth_path)
        broker.start()
    controller = Controller(settings)
    if broker is not None and controller.broker_auth is not None:
        controller.broker_auth.set_reload(broker.reload)  # enrolment/revocation reach the broker at once
    try:
        controller.start()
    except KeyringError as exc:  # a partial trust setup, named, with how to recover
        if broker:
            broker.stop()
        fail(str(exc))
    app = create_app(controller)
    tune_gc(settings.gc_gen0_threshold)  # after start-up, whose objects it freezes
    try:
        uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level=log_level.lower(),
                    **ssl_options)
    finally:
        controller.stop()
        if broker:
            broker.stop()
