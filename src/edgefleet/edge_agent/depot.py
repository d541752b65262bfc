"""Depot cache: one download from the controller, served to every device on the LAN.

``DepotCache`` (``fleet-agent cache serve``) is an HTTP server for the image repository's
paths that agents fetch (``/tuf/image/metadata/<file>`` and ``/tuf/image/targets/<path>``).
It fetches each file from the controller once (concurrent requests for one file wait for
that one fetch), keeps it on disk, and serves it with HTTP Range. Versioned metadata and
targets are immutable (their names carry a version or a hash); ``timestamp.json`` and
``root.json`` are fetched again once older than ``ttl_s``. Director metadata is per device
and small: devices fetch it from the controller with their own token, never through the
cache, and the cache never sees a device token.

The cache is untrusted by design: devices verify everything it serves exactly as if it
came from the controller. ``CacheFirstVerifier`` (an agent with ``[agent] cache_url``)
tries the cache first for image metadata and bundles and falls back to the controller
when the cache is absent or its bytes do not verify (a hash mismatch is refetched from the
controller, never a final refusal); ``RoutingFetcher`` sends cache URLs through a client
without the device's credentials.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any, Optional

import httpx
import typer
from tuf.ngclient.fetcher import FetcherInterface

from ..registry.tuf import (
    CheckResult,
    DeviceVerifier,
    NotProvisioned,
    ResumableFetcher,
    TufError,
    VerifiedTarget,
)
from ..registry.tuf.server import parse_range

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^[A-Za-z0-9_.+\-]{1,255}$")
_VERSIONED = re.compile(r"^[1-9][0-9]{0,9}\.")
CHUNK = 1024 * 1024


@dataclass
class CacheStats:
    upstream_bytes: int = 0  # fetched from the controller
    upstream_fetches: int = 0
    upstream_target_bytes: int = 0  # of which bundles (image targets)
    served_target_bytes: int = 0
    served_bytes: int = 0  # sent to devices
    requests: int = 0


def _relative(path: str) -> str | None:
    """``image/metadata/<file>`` or ``image/targets/<dir…>/<file>``, or None for anything else."""
    if not path.startswith("/tuf/"):
        return None
    rel = path[len("/tuf/"):]
    parts = rel.split("/")
    if len(parts) < 3 or parts[0] != "image" or parts[1] not in ("metadata", "targets"):
        return None
    if parts[1] == "metadata" and len(parts) != 3:
        return None
    if not all(_SEGMENT.match(p) and p not in (".", "..") for p in parts[2:]):
        return None
    return rel


class DepotCache:
    """Fetch-once cache of the controller's image repository, served over HTTP.

    Args:
        controller_url: the controller (``https://…``); files come from ``<url>/tuf/…``.
        cache_dir: where files are kept between requests and restarts.
        token: an API token (viewer role) the controller accepts for image metadata and targets.
        ttl_s: how long ``timestamp.json`` / ``root.json`` are served before asking again.
        verify: TLS verification for the controller (an ``ssl.SSLContext`` or a CA file path).
    """

    def __init__(self, controller_url: str, cache_dir: Path, *, token: str | None = None, ttl_s: float = 10.0,
                 verify: Any = True):
        self.upstream = controller_url.rstrip("/")
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        headers = {"Accept-Encoding": "identity"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(60.0, connect=5.0), verify=verify,
                                  follow_redirects=False)
        self.stats = CacheStats()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._fetched_at: dict[str, float] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- cache ------------------------------------------------------------------------

    def _lock(self, rel: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(rel, threading.Lock())

    def _fresh(self, rel: str, path: Path) -> bool:
        if not path.is_file():
            return False
        name = rel.rsplit("/", 1)[-1]
        if rel.startswith("image/targets/") or _VERSIONED.match(name):
            return True  # immutable: a version or a hash in its name
        return time.monotonic() - self._fetched_at.get(rel, float("-inf")) < self.ttl_s

    def get(self, rel: str) -> Path | None:
        """The cached file for ``rel`` (fetched from the controller if missing or stale);
        None if the controller has no such file.

        Raises:
            httpx.HTTPError: the controller could not be reached (answered 502).
        """
        path = self.cache_dir.joinpath(*rel.split("/"))
        if self._fresh(rel, path):
            return path
        with self._lock(rel):  # one fetch per file, however many devices ask at once
            if self._fresh(rel, path):
                return path
            return self._fetch(rel, path)

    def _fetch(self, rel: str, path: Path) -> Path | None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._http.stream("GET", f"{self.upstream}/tuf/{rel}") as resp:
            if resp.status_code == 404:
                return None
            if resp.status_code >= 400:
                raise httpx.HTTPStatusError(f"controller answered {resp.status_code} for /tuf/{rel}",
                                            request=resp.request, response=resp)
            target = rel.startswith("image/targets/")
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in resp.iter_raw(CHUNK):
                        out.write(chunk)
                        self.stats.upstream_bytes += len(chunk)
                        if target:
                            self.stats.upstream_target_bytes += len(chunk)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        self.stats.upstream_fetches += 1
        self._fetched_at[rel] = time.monotonic()
        log.info("depot cache: fetched /tuf/%s from the controller (%d bytes)", rel, path.stat().st_size)
        return path

    # -- HTTP -------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Serve in a background thread; returns the address bound."""
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="depot-cache", daemon=True)
        self._thread.start()
        bound = self._server.server_address
        return str(bound[0]), int(bound[1])

    def serve_forever(self, host: str, port: int) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._server.serve_forever()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._http.close()


def _handler(cache: DepotCache) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            cache.stats.requests += 1
            rel = _relative(self.path.split("?", 1)[0])
            if rel is None:
                self.send_error(HTTPStatus.NOT_FOUND, "the depot cache serves /tuf/image/… only")
                return
            try:
                path = cache.get(rel)
            except (httpx.HTTPError, OSError) as exc:
                log.warning("depot cache: /tuf/%s: %s", rel, exc)
                self.send_error(HTTPStatus.BAD_GATEWAY, "the controller could not be reached")
                return
            if path is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            try:
                self._send(path, rel.startswith("image/targets/"))
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _send(self, path: Path, target: bool) -> None:
            size = path.stat().st_size
            try:
                rng = parse_range(self.headers.get("Range"), size)
            except ValueError:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = rng if rng else (0, size - 1)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if rng else HTTPStatus.OK)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(max(end - start + 1, 0)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start + 1
                while left > 0 and (chunk := f.read(min(CHUNK, left))):
                    self.wfile.write(chunk)
                    cache.stats.served_bytes += len(chunk)
                    if target:
                        cache.stats.served_target_bytes += len(chunk)
                    left -= len(chunk)

    return Handler


# -- agent side -----------------------------------------------------------------------


class RoutingFetcher(FetcherInterface):
    """URLs under ``cache_base`` go through ``cache`` (no device credentials); all others
    through ``origin``. ``stats`` are the origin's (bytes from the controller)."""

    def __init__(self, origin: ResumableFetcher, cache: ResumableFetcher, cache_base: str):
        self.origin, self.cache, self.cache_base = origin, cache, cache_base

    @property
    def stats(self) -> Any:
        return self.origin.stats

    def _pick(self, url: str) -> ResumableFetcher:
        return self.cache if url.startswith(self.cache_base) else self.origin

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self._pick(url)._fetch(url)

    def download_to(self, url: str, part: Path, length: int, hash_algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
        return self._pick(url).download_to(url, part, length, hash_algorithms)

    def close(self) -> None:
        self.origin.close()
        self.cache.close()


class CacheFirstVerifier(DeviceVerifier):
    """``DeviceVerifier`` that reads image metadata and bundles from a depot cache first.

    Every check and download is the online one; only the URLs differ. Whatever the cache
    does wrong (absent, stale, tampered metadata, bytes that do not match) is retried once
    against the controller, and that answer is final.
    """

    def __init__(self, *args: Any, cache_url: str, cache_fetcher: ResumableFetcher | None = None, **kw: Any):
        super().__init__(*args, **kw)
        base = cache_url.rstrip("/")
        self.origin_urls = (self.image_url, self.image_targets_url)
        self.cache_urls = (f"{base}/tuf/image/metadata/", f"{base}/tuf/image/targets/")
        cache = cache_fetcher or ResumableFetcher(gap_timeout=self.fetcher.gap_timeout, max_stalls=2, backoff=0.1)
        self.fetcher = RoutingFetcher(self.fetcher, cache, base + "/")  # type: ignore[assignment]
        self.fallbacks = 0

    def check(self, hint: int | None = None) -> CheckResult:
        self.image_url, self.image_targets_url = self.cache_urls
        try:
            return super().check(hint)
        except NotProvisioned:
            raise
        except TufError as exc:
            self.fallbacks += 1
            log.warning("device %s: depot cache: image metadata refused [%s]: %s; asking the controller",
                        self.device_id, exc.code, exc)
        finally:
            self.image_url, self.image_targets_url = self.origin_urls
        return super().check(hint)

    def download(self, target: VerifiedTarget, dest: str | os.PathLike[str]) -> Path:
        cached, origin = self.cache_urls[1], self.origin_urls[1]
        if not target.url.startswith(cached):
            return super().download(target, dest)
        try:
            return super().download(target, dest)
        except TufError as exc:
            if exc.code == "E_DISK_FULL":
                raise
            self.fallbacks += 1
            log.warning("device %s: depot cache: %s refused [%s]: %s; downloading from the controller",
                        self.device_id, target.name, exc.code, exc)
            self.discard_part(target)
        return super().download(_with_url(target, origin + target.url[len(cached):]), dest)


def _with_url(target: VerifiedTarget, url: str) -> VerifiedTarget:
    from dataclasses import replace

    return replace(target, url=url)


# -- CLI: fleet-agent cache serve -----------------------------------------------------

cache_app = typer.Typer(help="Depot cache: fetch image metadata and bundles from the controller once, serve the LAN.",
                        no_args_is_help=True, add_completion=False)


@cache_app.command("serve")
def serve(
    controller: Annotated[str, typer.Option("--controller", help="controller URL, e.g. https://fleet.example.org",
                                            show_default=False)],
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to serve devices on")] = "0.0.0.0:8090",
    cache_dir: Annotated[Path, typer.Option("--cache-dir", help="where fetched files are kept")] = Path("/var/cache/edgefleet-depot"),
    token: Annotated[Optional[str], typer.Option("--token", envvar="EDGEFLEET_CACHE_TOKEN",  # noqa: UP045
                                                 help="API token (viewer role) for the controller's /tuf/image/…")] = None,
    ca_file: Annotated[Optional[Path], typer.Option("--ca-file", help="fleet CA the https:// controller must chain to")] = None,  # noqa: UP045
    ttl_s: Annotated[float, typer.Option("--ttl", min=0.0, help="seconds timestamp.json/root.json are served before asking again")] = 10.0,
) -> None:
    """Serve /tuf/image/metadata/… and /tuf/image/targets/… to devices whose agent.toml sets cache_url.

    Untrusted by design: devices verify every byte against the signed metadata and fall
    back to the controller when the cache is absent or wrong. Director metadata and device
    tokens never pass through it.
    """
    from .tls import http_verify

    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        typer.echo(f"error: --listen {listen!r}: expected HOST:PORT", err=True)
        raise typer.Exit(2)
    if not controller.startswith(("http://", "https://")):
        typer.echo(f"error: --controller {controller!r}: expected an http:// or https:// URL", err=True)
        raise typer.Exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cache = DepotCache(controller, cache_dir, token=token, ttl_s=ttl_s, verify=http_verify(ca_file))
    typer.echo(f"depot cache for {controller} on http://{host or '0.0.0.0'}:{port} (files in {cache_dir})")
    try:
        cache.serve_forever(host or "0.0.0.0", int(port))
    except KeyboardInterrupt:
        pass
    finally:
        cache.stop()
