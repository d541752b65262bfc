"""systemd units for the controller and the agent, rendered from the templates beside this file.

``fleet cloud install-service`` and ``fleet-agent install-service`` call ``render_controller``
/ ``render_agent`` with what the operator chose (user, data directory, executable), then
``install`` writes the unit atomically into ``dest`` (``/etc/systemd/system``). Nothing here
runs ``systemctl``: the caller prints the ``enable --now`` line for the operator.

Every value that lands in a unit is checked first (a user name as ``useradd`` takes it, an
absolute path without spaces, quotes, ``%`` specifiers or ``$`` expansions), so a unit can
never carry a line the operator did not ask for. The sandbox is the same for every install:
``ProtectSystem=strict`` with only the data directory writable (a ``StateDirectory=`` when
it lies under ``/var/lib``), no capabilities, ``NoNewPrivileges``, a private ``/tmp``, a
system-call filter and only the address families a controller or agent uses. The agent
alone sees devices: cameras (``video4linux``) and the GPU (NVIDIA dGPU and Jetson nodes),
through ``DevicePolicy=closed`` and ``SupplementaryGroups=video``.

Imports only ``atomicio``: both ``cloud`` and ``edge_agent`` use it.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from ..atomicio import atomic_write

__all__ = [
    "AGENT_UNIT",
    "CONTROLLER_UNIT",
    "RenderedUnit",
    "UnitError",
    "find_executable",
    "install",
    "next_steps",
    "render_agent",
    "render_controller",
]

CONTROLLER_UNIT = "edgefleet-controller.service"
AGENT_UNIT = "edgefleet-agent.service"
DEFAULT_DEST = Path("/etc/systemd/system")

_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+@:-]*$")
_HIDDEN_BY_PROTECT_HOME = ("/home", "/root", "/run/user")
# cameras, DRM render nodes, NVIDIA dGPU (nvidia-frontend, -uvm, -caps, -modeset), Jetson (nvhost-*, nvgpu, nvmap)
_DEVICE_GROUPS = ("char-video4linux", "char-drm", "char-nvidia*", "char-nvhost*", "char-nvgpu*", "char-nvmap")
_DEVICE_NODES = ("/dev/nvmap",)


class UnitError(ValueError):
    """A value cannot go into a unit (bad user name, relative or unsafe path), or no executable."""


@dataclass(frozen=True)
class RenderedUnit:
    name: str
    text: str
    user: str | None  # None with DynamicUser=yes
    data_dir: Path
    warnings: tuple[str, ...] = ()


def _template(name: str) -> Template:
    return Template(resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))


def _check_user(user: str) -> str:
    if not _USER.match(user) or user == "root":
        raise UnitError(f"user {user!r}: use a dedicated system account (lower-case letters, digits, '_' or '-'; not root)")
    return user


def _check_path(path: Path | str, what: str) -> Path:
    text = str(path)
    if not os.path.isabs(text):
        raise UnitError(f"{what} {text!r} must be an absolute path")
    text = os.path.normpath(text)
    if not _SAFE_PATH.match(text):
        raise UnitError(f"{what} {text!r}: only letters, digits and . _ / + @ : - are allowed in a unit path "
                        "(no spaces, quotes, % or $)")
    return Path(text)


def find_executable(name: str, explicit: Path | None = None) -> Path:
    """The console script to put in ``ExecStart=``: ``explicit``, else the one beside this Python
    (the virtual environment the operator runs), else ``name`` on PATH.

    Raises:
        UnitError: none found, or not executable.
    """
    if explicit is not None:
        candidate = explicit
    else:
        beside = Path(sys.executable).parent / name
        found = shutil.which(name)
        candidate = beside if beside.exists() else Path(found) if found else beside
    candidate = Path(os.path.abspath(candidate))
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise UnitError(f"{candidate}: no executable {name!r} there; pass --exec PATH")
    return candidate


def _common(unit: str, *, user: str | None, dynamic_user: bool, data_dir: Path, executable: Path,
            extra_rw: list[Path]) -> tuple[dict[str, str], list[str], Path]:
    data_dir = _check_path(data_dir, "data directory")
    exe = _check_path(executable, "executable")
    warnings: list[str] = []
    if dynamic_user:
        user_lines = "DynamicUser=yes"
    else:
        _check_user(user or "")
        user_lines = f"User={user}\nGroup={user}"
    parts = data_dir.parts
    if len(parts) > 3 and parts[1:3] == ("var", "lib"):
        state = "/".join(parts[3:])
        state_lines = f"StateDirectory={state}\nStateDirectoryMode=0700"
    else:
        if dynamic_user:
            raise UnitError(f"data directory {data_dir}: with --dynamic-user it must lie under /var/lib "
                            "(systemd's StateDirectory=)")
        state_lines = (f"# {data_dir} is outside /var/lib, so no StateDirectory=: create it 0700, owned by {user}")
        warnings.append(f"{data_dir} is outside /var/lib: create it yourself (mkdir -m 0700; chown {user}:{user})")
    for hidden in _HIDDEN_BY_PROTECT_HOME:
        if str(exe) == hidden or str(exe).startswith(hidden + "/"):
            warnings.append(f"{exe} lies under {hidden}, which ProtectHome=yes hides from the service: "
                            "install edgefleet under /opt or /usr/local and pass --exec")
    rw = [data_dir, *(_check_path(p, "writable path") for p in extra_rw)]
    values = {
        "unit": unit,
        "user_lines": user_lines,
        "state_lines": state_lines,
        "data_dir": str(data_dir),
        "rw_paths": " ".join(dict.fromkeys(str(p) for p in rw)),
    }
    return values, warnings, exe


def render_controller(*, data_dir: Path, executable: Path, user: str | None = "edgefleet",
                      dynamic_user: bool = False, embedded_broker: bool = False,
                      env_file: Path = Path("/etc/edgefleet/controller.env"),
                      extra_rw: list[Path] | None = None) -> RenderedUnit:
    """The ``fleet cloud serve`` unit (``edgefleet-controller.service``).

    Args:
        data_dir: the controller's data directory (the only writable path, with ``extra_rw``,
            e.g. a broker-auth directory an external mosquitto reads).
        executable: the ``fleet`` console script.
        embedded_broker: run the broker inside the controller (``--embedded-broker``).
        env_file: optional environment file (``DATABASE_URL`` …), read if present.

    Raises:
        UnitError: an unsafe value.
    """
    values, warnings, exe = _common(CONTROLLER_UNIT, user=user, dynamic_user=dynamic_user, data_dir=data_dir,
                                    executable=executable, extra_rw=list(extra_rw or []))
    exec_start = f"{exe} cloud serve --data-dir {values['data_dir']}"
    if embedded_broker:
        exec_start += " --embedded-broker"
    values.update(exec_start=exec_start, env_file=str(_check_path(env_file, "environment file")))
    text = _template("controller.service").substitute(values)
    return RenderedUnit(CONTROLLER_UNIT, text, None if dynamic_user else user, Path(values["data_dir"]), tuple(warnings))


def render_agent(*, config: Path, data_dir: Path, executable: Path, user: str | None = "edgefleet",
                 dynamic_user: bool = False, devices: bool = True, groups: list[str] | None = None,
                 extra_rw: list[Path] | None = None) -> RenderedUnit:
    """The ``fleet-agent run`` unit (``edgefleet-agent.service``).

    Args:
        config: the agent's TOML file (read-only to the service).
        data_dir: the agent's data directory; set in the unit's environment, so it wins over
            the file's ``data_dir`` and is the one writable path (with ``extra_rw``, e.g. an
            outbox on another disk).
        devices: cameras and the GPU reachable (``DevicePolicy=closed`` + ``DeviceAllow=``);
            False gives ``PrivateDevices=yes`` (synthetic or network sources only).
        groups: supplementary groups (default ``video``: cameras, and the GPU on Jetson).

    Raises:
        UnitError: an unsafe value.
    """
    values, warnings, exe = _common(AGENT_UNIT, user=user, dynamic_user=dynamic_user, data_dir=data_dir,
                                    executable=executable, extra_rw=list(extra_rw or []))
    cfg = _check_path(config, "agent config")
    groups = ["video"] if groups is None else groups
    for g in groups:
        _check_user(g)
    if devices:
        lines = ["DevicePolicy=closed"]
        lines += [f"DeviceAllow={d} rw" for d in (*_DEVICE_GROUPS, *_DEVICE_NODES)]
        if groups:
            lines.append("SupplementaryGroups=" + " ".join(groups))
        device_lines = "\n".join(lines)
    else:
        device_lines = "PrivateDevices=yes" + ("\nSupplementaryGroups=" + " ".join(groups) if groups else "")
    values.update(exec_start=f"{exe} run --config {cfg}", device_lines=device_lines)
    text = _template("agent.service").substitute(values)
    return RenderedUnit(AGENT_UNIT, text, None if dynamic_user else user, Path(values["data_dir"]), tuple(warnings))


def install(unit: RenderedUnit, dest: Path = DEFAULT_DEST) -> Path:
    """Write ``unit`` into ``dest`` (0644, atomically); returns its path.

    Raises:
        UnitError: ``dest`` is not a directory.
    """
    if not dest.is_dir():
        raise UnitError(f"{dest} is not a directory (systemd units go in /etc/systemd/system)")
    path = dest / unit.name
    atomic_write(path, unit.text.encode("utf-8"), mode=0o644, fsync_dir=True)
    return path


def next_steps(unit: RenderedUnit, readable: Path | None = None) -> list[str]:
    """What the operator runs after ``install`` (printed, never run by us).

    Args:
        readable: a secret file the service must read (the agent's TOML): group-readable by
            the service's user only.
    """
    steps = []
    if unit.user is not None:
        steps.append(f"id {unit.user} >/dev/null 2>&1 || useradd --system --home-dir {unit.data_dir} "
                     f"--shell /usr/sbin/nologin {unit.user}")
        if readable is not None:
            steps.append(f"chown root:{unit.user} {readable} && chmod 0640 {readable}")
    steps.append(f"systemctl daemon-reload && systemctl enable --now {unit.name}")
    return steps
