"""HTTP for the device: metadata for ``tuf.ngclient`` and resumable, capped target downloads.

``ResumableFetcher`` is a ``tuf.ngclient.FetcherInterface`` (``_fetch`` serves metadata,
with the base class enforcing the signed length cap) and adds ``download_to`` for
targets: bytes go to ``<part>`` (a file that survives a restart); an interrupted
transfer resumes with ``Range: bytes=<have>-``; each read waits at most ``gap_timeout``
seconds and the whole download at most ``deadline`` seconds; never more bytes than the
signed length are written, and a server offering more is refused. Hashes are computed
while writing, so verification costs no second pass over the file.

``limiter`` (a ``ratelimit.TokenBucket``, shared by every attempt and every call) caps
target downloads in bytes/s; being the same bucket across attempts, a resumed transfer
never bursts above the cap. Metadata is not capped (it is small).

``stats`` counts payload bytes received and connections made (benchmarks read it).
Device-safe: httpx, tuf and the standard library only.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from tuf.api import exceptions as tuf_exc
from tuf.ngclient.fetcher import FetcherInterface

from .errors import DiskFull, DownloadFailed, DownloadTimeout, LengthMismatch
from .ratelimit import TokenBucket

CHUNK = 1024 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass
class FetchStats:
    bytes_received: int = 0
    connections: int = 0
    resumes: int = 0


class ResumableFetcher(FetcherInterface):
    """httpx-based fetcher with gap timeout, total deadline, Range resume and length cap.

    Args:
        gap_timeout: seconds to wait for the next bytes (and to connect).
        deadline: seconds a single ``download_to``/metadata fetch may take in total.
        max_stalls: consecutive attempts without progress before giving up.
        client: an ``httpx.Client`` to reuse (its timeouts are overridden per request).
        clock: monotonic clock, for tests.
        verify: for the client made here: an ``ssl.SSLContext`` (the fleet CA), or True
            for the system CAs. A controller whose certificate does not verify is refused.
        limiter: bandwidth cap for target downloads (its rate may change at any time).
    """

    def __init__(
        self,
        *,
        gap_timeout: float = 30.0,
        deadline: float = 3600.0,
        max_stalls: int = 5,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff: float = 0.2,
        verify: ssl.SSLContext | bool = True,
        limiter: TokenBucket | None = None,
    ):
        self.limiter = limiter
        self.gap_timeout = gap_timeout
        self.deadline = deadline
        self.max_stalls = max_stalls
        self.backoff = backoff
        self.clock = clock
        self._client = client or httpx.Client(follow_redirects=False, headers={"Accept-Encoding": "identity"},
                                              verify=verify)
        self.stats = FetchStats()

    def close(self) -> None:
        self._client.close()

    def _timeout(self, end: float) -> httpx.Timeout:
        left = end - self.clock()
        if left <= 0:
            raise DownloadTimeout("download deadline passed")
        t = min(self.gap_timeout, left)
        return httpx.Timeout(t, connect=t, read=t, write=t, pool=t)

    # -- metadata (tuf.ngclient) ------------------------------------------------------

    def _fetch(self, url: str) -> Iterator[bytes]:
        end = self.clock() + self.deadline
        try:
            req = self._client.build_request("GET", url, timeout=self._timeout(end))
            resp = self._client.send(req, stream=True)
        except httpx.TimeoutException as exc:
            raise tuf_exc.SlowRetrievalError(f"timeout fetching {url}") from exc
        except DownloadTimeout as exc:
            raise tuf_exc.SlowRetrievalError(str(exc)) from exc
        except httpx.ConnectError as exc:
            if (reason := tls_refusal(exc)) is not None:
                raise tuf_exc.DownloadError(tls_message(url, reason)) from exc
            raise
        self.stats.connections += 1
        if resp.status_code >= 400:
            resp.close()
            raise tuf_exc.DownloadHTTPError(f"HTTP {resp.status_code} for {url}", resp.status_code)
        return self._chunks(resp, end)

    def _chunks(self, resp: httpx.Response, end: float) -> Iterator[bytes]:
        try:
            for chunk in resp.iter_raw():
                self.stats.bytes_received += len(chunk)
                if self.clock() > end:
                    raise tuf_exc.SlowRetrievalError("metadata download deadline passed")
                yield chunk
        except httpx.TimeoutException as exc:
            raise tuf_exc.SlowRetrievalError("gap timeout") from exc
        finally:
            resp.close()

    # -- targets ----------------------------------------------------------------------

    def download_to(
        self,
        url: str,
        part: Path,
        length: int,
        hash_algorithms: tuple[str, ...] = ("sha256",),
    ) -> dict[str, str]:
        """Fetch ``url`` into ``part`` until it holds exactly ``length`` bytes.

        Returns:
            {algorithm: hex digest} of the ``length`` bytes in ``part``.

        Raises:
            LengthMismatch: the server has more (or fewer) bytes than ``length``.
            DownloadTimeout: gap timeout on every retry, or total deadline passed.
            DownloadFailed: HTTP error status, or ``max_stalls`` attempts without progress.
            DiskFull: ENOSPC/EDQUOT/EFBIG while writing. The part file is kept (what it
                holds is a verified-later prefix): the next call, once space is free,
                resumes from it with ``Range`` instead of starting from byte 0.
        """
        end = self.clock() + self.deadline
        part.parent.mkdir(parents=True, exist_ok=True)
        hashers = {a: hashlib.new(a) for a in hash_algorithms}
        have = _existing_prefix(part, length, hashers)
        stalls = 0
        last_error: Exception | None = None
        try:
            with open(part, "ab") as out:
                while have < length:
                    before = have
                    try:
                        have = self._attempt(url, out, have, length, hashers, end)
                        last_error = None
                    except (httpx.TransportError, httpx.StreamError) as exc:
                        if (reason := tls_refusal(exc)) is not None:  # fail closed, at once
                            raise DownloadFailed(tls_message(url, reason)) from exc
                        last_error = exc
                        have = out.tell()
                    if have == before:
                        stalls += 1
                        if stalls >= self.max_stalls:
                            if isinstance(last_error, httpx.TimeoutException):
                                raise DownloadTimeout(f"no progress on {url}: {last_error}")
                            raise DownloadFailed(f"no progress on {url} after {stalls} attempts: {last_error}")
                        self._sleep(min(self.backoff * 2 ** (stalls - 1), 2.0), end)
                    else:
                        stalls = 0
                    if have < length:
                        self.stats.resumes += 1
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            if exc.errno in _DISK_ERRNOS:
                try:
                    kept = part.stat().st_size
                except OSError:
                    kept = 0
                raise DiskFull(f"cannot write {part.name}: {os.strerror(exc.errno)} "
                               f"({kept} of {length} bytes kept for resume)") from exc
            raise
        return {a: h.hexdigest() for a, h in hashers.items()}

    def _sleep(self, seconds: float, end: float) -> None:
        if self.clock() + seconds >= end:
            raise DownloadTimeout("download deadline passed")
        time.sleep(seconds)

    def _attempt(self, url, out, have, length, hashers, end) -> int:  # noqa: ANN001
        headers = {"Range": f"bytes={have}-"} if have else {}
        req = self._client.build_request("GET", url, headers=headers, timeout=self._timeout(end))
        resp = self._client.send(req, stream=True)
        self.stats.connections += 1
        try:
            if resp.status_code == 416:
                raise LengthMismatch(f"server has fewer than {length} bytes (416 at offset {have})")
            if resp.status_code >= 400:
                raise DownloadFailed(f"HTTP {resp.status_code} for {url}", status_code=resp.status_code)
            if have and resp.status_code == 200:
                # Range ignored: start over from byte 0 (never trust a mixed file)
                out.seek(0)
                out.truncate()
                for h in hashers:
                    hashers[h] = hashlib.new(h)
                have = 0
            elif resp.status_code == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
                if not m or int(m.group(1)) != have:
                    raise DownloadFailed(f"bad Content-Range {resp.headers.get('content-range')!r}")
                if m.group(3) != "*" and int(m.group(3)) != length:
                    raise LengthMismatch(f"server's file is {m.group(3)} bytes, {length} signed")
            declared = resp.headers.get("content-length")
            if declared is not None and declared.isdigit() and have + int(declared) > length:
                raise LengthMismatch(
                    f"server offers {have + int(declared)} bytes, only {length} signed"
                )
            limiter = self.limiter if self.limiter is not None and self.limiter.rate is not None else None
            for chunk in resp.iter_raw(limiter.chunk_size() if limiter is not None else None):
                self.stats.bytes_received += len(chunk)
                if have + len(chunk) > length:
                    raise LengthMismatch(f"server sent more than the {length} signed bytes")
                out.write(chunk)
                out.flush()  # what arrived is in the part file at once: a kill or a stall keeps it for resume
                for h in hashers.values():
                    h.update(chunk)
                have += len(chunk)
                if limiter is not None:
                    limiter.consume(len(chunk))
                if self.clock() > end:
                    raise DownloadTimeout(f"deadline passed after {have} of {length} bytes")
            if have < length and declared is not None:
                # a complete, well-framed response that ends short: the server's copy is
                # truncated (a dropped connection raises instead, and is resumed)
                raise LengthMismatch(f"server's copy ends at {have} of {length} bytes")
            return have
        except httpx.TimeoutException:
            if self.clock() >= end:
                raise DownloadTimeout(f"deadline passed after {have} of {length} bytes") from None
            raise
        finally:
            resp.close()


def tls_refusal(exc: BaseException) -> str | None:
    """Why TLS refused the peer (certificate not trusted, wrong host name), if that is what ``exc`` is."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or str(seen)
        if isinstance(seen, ssl.SSLError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def tls_message(url: str, reason: str) -> str:
    return (f"TLS: the controller at {url.split('/', 3)[:3][-1]} is not trusted ({reason}); "
            "nothing was fetched. Check [agent] ca_file (the fleet CA) and the controller's certificate")


def _existing_prefix(part: Path, length: int, hashers: dict) -> int:  # noqa: ANN001
    """Hash what a previous run left in ``part``; drop it if it cannot be a prefix."""
    try:
        size = part.stat().st_size
    except FileNotFoundError:
        return 0
    if size > length:
        _unlink(part)
        return 0
    with open(part, "rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return size


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass
