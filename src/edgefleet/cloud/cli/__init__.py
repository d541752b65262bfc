"""``fleet``: the operator's command line."""

from __future__ import annotations

import typer

from . import (
    audit_cmd,
    bundle_cmd,
    campaign_cmd,
    capture_cmd,
    cloud_cmd,
    device_cmd,
    device_history_cmd,  # noqa: F401  (adds `fleet device history|tag|inventory`)
    keys_cmd,
    model_cmd,
    operate_cmd,
    policy_cmd,
    review_cmd,
    rollout_cmd,
    shadow_cmd,
    token_cmd,
    webhook_cmd,
)

app = typer.Typer(
    name="fleet",
    help="edgefleet: ship ML models to edge devices — signed, staged, shadow-tested.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(cloud_cmd.app, name="cloud")
cloud_cmd.app.command("install-service")(operate_cmd.install_service)
cloud_cmd.app.command("backup")(operate_cmd.backup)
cloud_cmd.app.command("restore")(operate_cmd.restore)
app.add_typer(model_cmd.app, name="model")
app.add_typer(device_cmd.app, name="device")
app.add_typer(rollout_cmd.app, name="rollout")
app.add_typer(token_cmd.app, name="token")
app.add_typer(shadow_cmd.app, name="shadow")
app.add_typer(review_cmd.app, name="review")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(capture_cmd.app, name="capture")
app.add_typer(campaign_cmd.app, name="campaign")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(webhook_cmd.app, name="webhook")
app.add_typer(bundle_cmd.app, name="bundle")
app.add_typer(policy_cmd.policy_app, name="policy")
app.add_typer(policy_cmd.window_app, name="window")
app.add_typer(policy_cmd.network_app, name="network")
app.command("deploy")(device_cmd.deploy)


def _register_demo() -> None:
    from ..demo.command import demo

    app.command("demo")(demo)


_register_demo()


def main() -> None:
    app()
