"""``fleet keys init|status|rotate|resign-root``: the signing keys of the image repository and the director.

Root kept offline (``init --offline-dir``, ``--encrypt``/``--passphrase-*`` or
``--root-signer``): the controller runs on its online keys; ``rotate`` and ``resign-root``
then bring the root keys themselves (``--root-dir``, a passphrase, ``--root-signer``),
sign the new root here and send the controller only the signatures.
"""

from __future__ import annotations

import copy
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ...registry import LocalBlobStore
from ...registry.tuf import KeyringError
from ...registry.tuf.keyplace import (
    Placement,
    Unlock,
    load_offline_signer,
    new_key_pem,
    signer_from_pem,
    write_key_file,
)
from .. import audit
from ..client import load_cli_config
from ..settings import load_settings, resolve_data_dir
from ..trust.key_status import key_status
from ..trust.repository import KEYS_DIR, Trust
from .common import DataDirOpt, TokenOpt, UrlOpt, api_client, call, console, fail

app = typer.Typer(help="Signing keys (TUF image repository and director): where they live, rotation.",
                  no_args_is_help=True)

PassFileOpt = Annotated[Optional[Path], typer.Option("--passphrase-file", help="read the key passphrase from this file (first line)")]
PassEnvOpt = Annotated[Optional[str], typer.Option("--passphrase-env", metavar="VAR", help="read the key passphrase from this environment variable")]
RootDirOpt = Annotated[Optional[Path], typer.Option("--root-dir", help="directory holding the offline root key(s)")]
RootSignerOpt = Annotated[Optional[list[str]], typer.Option("--root-signer", metavar="URI", help="securesystemslib signer URI of a root key (repeatable), e.g. file2:/media/usb/root.pem or hsm:")]
RepoOpt = Annotated[str, typer.Option(help="image, director or both")]


def _passphrase(file: Path | None, env: str | None, prompt: bool, *, confirm: bool) -> bytes | None:
    if file is not None:
        try:
            text = file.read_text().splitlines()
        except OSError as exc:
            fail(f"cannot read passphrase file {file}: {exc.strerror}")
        if not text or not text[0]:
            fail(f"passphrase file {file} is empty")
        return text[0].encode()
    if env is not None:
        value = os.environ.get(env)
        if not value:
            fail(f"environment variable {env} (--passphrase-env) is not set or empty")
        return value.encode()
    if prompt:
        return str(typer.prompt("key passphrase", hide_input=True, confirmation_prompt=confirm)).encode()
    return None


def _external_root(uris: list[str], publics: list[Path]) -> tuple[tuple[str, Any], ...]:
    """(URI, public key) for each ``--root-signer``: derived for ``file2:``, else ``--root-public``."""
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_pem_public_key,
    )
    from securesystemslib.signer import SSlibKey

    if publics and len(publics) != len(uris):
        fail("give one --root-public per --root-signer, in the same order")
    out = []
    for i, uri in enumerate(uris):
        scheme, _, rest = uri.partition(":")
        try:
            if publics:
                public = SSlibKey.from_crypto(load_pem_public_key(publics[i].read_bytes()))  # type: ignore[arg-type]
            elif scheme == "file2":
                public = SSlibKey.from_crypto(load_pem_private_key(Path(rest).read_bytes(), None).public_key())  # type: ignore[arg-type]
            else:
                fail(f"--root-signer {scheme}: needs --root-public PEM (the key's public half)")
        except (OSError, ValueError, TypeError) as exc:
            fail(f"cannot read the public key of --root-signer {scheme}:…: {exc}")
        out.append((uri, public))
    return tuple(out)


def _exists_message(data_dir: Path) -> str:
    doc = key_status(data_dir)
    roots = [r for r in doc["roles"] if r["role"] == "root"]
    where = "; ".join(f"{r['repo']} root {r['threshold']} of {len(r['keys'])} in "
                      f"{', '.join(sorted({k['where'] for k in r['keys']}))}" for r in roots)
    return (f"keys exist already in {data_dir / KEYS_DIR} ({where}). See them with `fleet keys status`; "
            "replace one with `fleet keys rotate ROLE` (root kept offline: add --root-dir / --passphrase-file / "
            "--root-signer)")


@app.command()
def init(
    root_threshold: Annotated[int, typer.Option(help="root signatures required (k of n)")] = 1,
    root_keys: Annotated[int, typer.Option(help="root keys to create (n)")] = 1,
    offline_dir: Annotated[Optional[Path], typer.Option("--offline-dir", help="write the root private keys here (outside the data dir, e.g. removable media) instead of the data dir")] = None,
    encrypt: Annotated[bool, typer.Option("--encrypt", help="encrypt the root private keys with a passphrase (prompted unless --passphrase-file/--passphrase-env)")] = False,
    passphrase_file: PassFileOpt = None,
    passphrase_env: PassEnvOpt = None,
    root_signer: RootSignerOpt = None,
    root_public: Annotated[Optional[list[Path]], typer.Option("--root-public", help="PEM public key of each --root-signer whose scheme is not file2:")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create root, targets, snapshot and timestamp keys and empty signed repositories.

    Runs before or after `fleet cloud init` (not after the first start, which creates a
    1-of-1 demo setup with every key online). Keep root off the controller with
    --offline-dir, --encrypt/--passphrase-*, or --root-signer; online keys (targets,
    snapshot, timestamp) stay in the data dir, 0600.
    """
    settings = load_settings(data_dir)
    home = settings.data_dir
    if Trust.exists(home):
        fail(_exists_message(home))
    if root_signer and (offline_dir or encrypt or passphrase_file or passphrase_env):
        fail("--root-signer uses existing keys: it does not combine with --offline-dir or a passphrase")
    if offline_dir is not None:
        offline_dir = offline_dir.expanduser().resolve()
        if offline_dir.is_relative_to(home.resolve()):
            fail(f"--offline-dir {offline_dir} is inside the data dir {home}: choose a directory elsewhere "
                 "(removable media, another machine's mount)")
    passphrase = _passphrase(passphrase_file, passphrase_env, encrypt, confirm=True)
    external = _external_root(root_signer or [], root_public or [])
    placement = Placement(directory=offline_dir, passphrase=passphrase, external=external)
    try:
        trust = Trust.init(home, LocalBlobStore(settings.blobs_dir), root_threshold=root_threshold,
                           root_keys=root_keys, placement=placement)
    except KeyringError as exc:
        fail(str(exc))
    n = len(trust.keyring.role("image", "root").keys)
    audit.record_local(settings, "keys.init", "image+director",
                       {"root_threshold": root_threshold, "root_keys": n, "root": placement.summary()})
    console.print(f"keys in {trust.keyring.path} (root {root_threshold} of {n}, root keys: {placement.summary()}); "
                  f"signed metadata in {home / 'tuf'}")
    if placement.active:
        console.print("the controller runs without the root key; `fleet keys rotate` and `fleet keys resign-root` "
                      "will ask for it")


# ----- status -----


def _status_doc(data_dir: Path | None, url: str | None, token: str | None) -> dict:
    home = resolve_data_dir(data_dir)
    if url is None and Trust.exists(home):
        return key_status(home, now=datetime.now(timezone.utc))  # local: works with the controller stopped
    if url is None and not os.environ.get("EDGEFLEET_URL") and not load_cli_config(home).get("url"):
        return key_status(home)  # neither keys nor a controller to ask: says so
    return dict(call(api_client(data_dir, url, token).request, "GET", "/trust/keys"))


@app.command()
def status(
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Per repository and role: key ids, threshold, where each private key lives, permission problems, expiry.

    Reads the data dir when it holds the keys (works with the controller stopped), else asks the controller.
    """
    doc = _status_doc(data_dir, url, token)
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    if not doc.get("initialised"):
        fail(f"no signing keys in {doc.get('keys_dir')}: run `fleet keys init` (or start the controller once "
             "for a 1-of-1 demo setup)")
    table = Table(title=f"signing keys ({doc['keys_dir']})")
    for col in ("repo", "role", "threshold", "key ids", "private key", "metadata expires"):
        table.add_column(col)
    for r in doc["roles"]:
        md = r["metadata"]
        exp = md.get("expires") or "-"
        if md.get("devices") is not None:
            exp = f"{exp} (earliest of {md['devices']} devices)" if md.get("expires") else "no devices yet"
        if md.get("expired"):
            exp = f"[red]EXPIRED {exp}[/]"
        table.add_row(r["repo"], r["role"], f"{r['threshold']} of {len(r['keys'])}",
                      "\n".join(k["keyid"][:16] for k in r["keys"]), "\n".join(k["where"] for k in r["keys"]), exp)
    console.print(table)
    for p in doc["problems"]:
        console.print(f"[bold red]permission problem:[/] {p}", highlight=False)
    for repo in doc.get("root_expiring", []):
        console.print(f"[yellow]{repo} root is due for re-signing:[/] fleet keys resign-root --repo {repo}")
    if doc["problems"]:
        raise typer.Exit(2)


# ----- changes that need the root -----


def _unlock(data_dir: Path | None, root_dir: Path | None, pfile: Path | None, penv: str | None,
            signers: list[str] | None) -> Unlock:
    return Unlock(directory=root_dir.expanduser().resolve() if root_dir else None,
                  passphrase=_passphrase(pfile, penv, False, confirm=False), signer_uris=tuple(signers or ()),
                  keyring_dir=resolve_data_dir(data_dir) / KEYS_DIR)


def _root_signers(doc: dict, repo: str, unlock: Unlock) -> list[Any]:
    from securesystemslib.signer import Key

    row = next(r for r in doc["roles"] if r["repo"] == repo and r["role"] == "root")
    got, errors = [], []
    for k in row["keys"]:
        if k["kind"] == "online":
            continue  # held by the controller, not here
        try:
            public = Key.from_dict(k["keyid"], copy.deepcopy(k["public"]))
            got.append(load_offline_signer(f"{repo}/root key {k['keyid'][:16]}", public, k.get("location"), unlock))
        except KeyringError as exc:
            errors.append(str(exc).removeprefix("E_KEYS: "))
        if len(got) >= row["threshold"]:
            return got
    fail(f"{repo} root needs {row['threshold']} key(s), {len(got)} usable here: " + "; ".join(errors))


def _new_root_key(repo: str, unlock: Unlock, new_root_dir: Path | None) -> tuple[dict, Any]:
    target = new_root_dir.expanduser().resolve() if new_root_dir else unlock.directory
    if target is None and unlock.passphrase is None:
        fail("the new root key needs a home: give --new-root-dir DIR (or --root-dir, or a passphrase to keep it "
             "encrypted in the data dir)")
    public, pem = new_key_pem(unlock.passphrase)
    name = f"{repo}-root-{public.keyid[:12]}.pem"
    write_key_file(target or unlock.keyring_dir, name, pem)  # type: ignore[arg-type]
    location = {"kind": "file", "dir": str(target) if target else None, "file": name,
                "encrypted": unlock.passphrase is not None}
    signer = signer_from_pem(pem, public, unlock.passphrase, name)
    return {"keyid": public.keyid, "public": public.to_dict(), "location": location}, signer


def _offline_change(client: Any, path: str, role: str | None, repo: str, unlock: Unlock,
                    new_root_dir: Path | None) -> dict:
    """prepare → sign here with the root keys brought → commit (only signatures travel)."""
    from tuf.api.metadata import Metadata

    doc = dict(call(client.request, "GET", "/trust/keys"))
    repos = ["image", "director"] if repo == "both" else [repo]
    signers = {name: _root_signers(doc, name, unlock) for name in repos}
    new_keys: dict[str, dict] = {}
    if role == "root":
        for name in repos:
            new_keys[name], new_signer = _new_root_key(name, unlock, new_root_dir)
            signers[name] = [*signers[name], new_signer]
    body = {"repo": repo, "new_root_keys": new_keys or None} if role is not None else None
    prepared = call(client.request, "POST", f"{path}/prepare", **({"json": body} if body else {}))
    sigs = {}
    for name, unsigned in prepared["unsigned"].items():
        md = Metadata.from_dict(copy.deepcopy(unsigned))
        for s in signers[name]:
            md.sign(s, append=True)
        sigs[name] = [sig.to_dict() for sig in md.signatures.values()]
    where = ("root from " + (f"offline dir {unlock.directory}" if unlock.directory else
             "signer URI" if unlock.signer_uris else "encrypted key in data dir"))
    if new_keys:
        where += "; new root in " + ", ".join(sorted({
            f"offline dir {k['location']['dir']}" if k["location"]["dir"] else "data dir (encrypted)"
            for k in new_keys.values()}))
    return dict(call(client.request, "POST", f"{path}/commit", json={"signatures": sigs, "root_location": where}))


@app.command()
def rotate(
    role: Annotated[str, typer.Argument(help="root, targets, snapshot or timestamp")],
    repo: RepoOpt = "both",
    root_dir: RootDirOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_env: PassEnvOpt = None,
    root_signer: RootSignerOpt = None,
    new_root_dir: Annotated[Optional[Path], typer.Option("--new-root-dir", help="with `rotate root`: where the new root key goes [default: --root-dir]")] = None,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Rotate a role's key on the running controller; agents follow (root rotation included).

    Every rotation changes root metadata, so it needs the root key: with root kept offline,
    bring it with --root-dir, --passphrase-file/--passphrase-env or --root-signer.
    """
    if role not in ("root", "targets", "snapshot", "timestamp"):
        fail("role must be root, targets, snapshot or timestamp")
    if repo not in ("image", "director", "both"):
        fail("--repo must be image, director or both")
    client = api_client(data_dir, url, token)
    unlock = _unlock(data_dir, root_dir, passphrase_file, passphrase_env, root_signer)
    if unlock.given:
        res = _offline_change(client, f"/trust/rotate/{role}", role, repo, unlock, new_root_dir)
    else:
        res = call(client.request, "POST", f"/trust/rotate/{role}", params={"repo": repo})
    for which, keyid in res["new_keyids"].items():
        console.print(f"{which}: new {role} key {keyid[:16]}…")


@app.command("resign-root")
def resign_root(
    repo: RepoOpt = "both",
    root_dir: RootDirOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_env: PassEnvOpt = None,
    root_signer: RootSignerOpt = None,
    data_dir: DataDirOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Re-sign root with a new expiry (same keys), with the offline root key(s) brought here."""
    if repo not in ("image", "director", "both"):
        fail("--repo must be image, director or both")
    unlock = _unlock(data_dir, root_dir, passphrase_file, passphrase_env, root_signer)
    res = _offline_change(api_client(data_dir, url, token), f"/trust/resign-root/{repo}", None, repo, unlock, None)
    console.print(f"root re-signed with a new expiry: {', '.join(res['resigned'])}")
