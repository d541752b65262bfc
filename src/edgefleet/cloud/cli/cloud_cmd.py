"""``fleet cloud init|serve``: set up and run the controller."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Optional

import typer

from ..auth import hash_token, new_token
from ..client import write_cli_config
from ..models import ApiToken
from ..runtime import Controller
from ..settings import CONFIG_FILE, load_settings
from .common import DataDirOpt, console, fail

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
    mqtt_host: Annotated[str, typer.Option(help="MQTT broker host")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option(help="MQTT broker port")] = 1883,
) -> None:
    """Create the data directory and database, and print a new admin API token (shown once)."""
    settings = load_settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cfg = settings.data_dir / CONFIG_FILE
    if not cfg.exists():
        cfg.write_text(
            "[controller]\n"
            f"http_port = {http_port}\n"
            f'mqtt_host = "{mqtt_host}"\n'
            f"mqtt_port = {mqtt_port}\n"
        )
    settings = load_settings(data_dir)
    controller = Controller(settings)
    controller.migrate()
    token = create_admin_token(controller)
    write_cli_config(settings.data_dir, settings.base_url, token)
    controller.engine.dispose()
    console.print(f"controller data in [bold]{settings.data_dir}[/] (database {settings.db_url.split('://')[0]})")
    console.print("admin API token (stored hashed; this is the only time it is shown):")
    console.print(token, highlight=False, soft_wrap=True)


@app.command()
def serve(
    data_dir: DataDirOpt = None,
    host: Annotated[Optional[str], typer.Option(help="bind address [env: EDGEFLEET_HTTP_HOST]")] = None,
    port: Annotated[Optional[int], typer.Option(help="HTTP port [env: EDGEFLEET_HTTP_PORT]")] = None,
    embedded_broker: Annotated[bool, typer.Option("--embedded-broker", help="also run an MQTT broker on the configured MQTT port (mosquitto if installed, else amqtt)")] = False,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Run the HTTP API and the MQTT bridge until Ctrl-C."""
    import uvicorn

    from ..api import create_app
    from ..broker import EmbeddedBroker, MosquittoBroker

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    settings = load_settings(data_dir, http_host=host, http_port=port)
    if not (settings.data_dir / "controller.db").exists() and settings.database_url is None:
        fail(f"no controller in {settings.data_dir}: run `fleet cloud init` first")
    broker = None
    if embedded_broker:
        broker = MosquittoBroker(port=settings.mqtt_port) if MosquittoBroker.available() else EmbeddedBroker(port=settings.mqtt_port)
        broker.start()
    controller = Controller(settings)
    controller.start()
    try:
        uvicorn.run(create_app(controller), host=settings.http_host, port=settings.http_port, log_level=log_level.lower())
    finally:
        controller.stop()
        if broker:
            broker.stop()
