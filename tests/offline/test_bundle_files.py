"""Offline bundle files: archives are unpacked safely, paths cannot leave the bundle, and the
device side imports nothing cloud-only."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_exc

from edgefleet.edge_agent.depot import _relative
from edgefleet.registry.tuf.errors import BadMetadata, LengthMismatch
from edgefleet.registry.tuf.offline import DirFetcher, extract_tar

FORBIDDEN = ("boto3", "botocore", "fastapi", "starlette", "mlflow", "evidently", "sqlmodel")


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name", ["../evil.json", "/etc/evil", "director/../../x", "other/file", "./director/x"])
def test_archive_member_outside_the_bundle_is_refused(tmp_path: Path, name: str) -> None:
    archive = _tar(tmp_path / "b.tar", [(tarfile.TarInfo("manifest.json"), b"{}"), (tarfile.TarInfo(name), b"x")])
    with pytest.raises(BadMetadata, match="not allowed"):
        extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "evil.json").exists()


def test_archive_link_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("director/1.root.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = _tar(tmp_path / "b.tar", [(link, b"")])
    with pytest.raises(BadMetadata):
        extract_tar(archive, tmp_path / "out")


def test_not_an_archive_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "b.tar").write_bytes(b"not a tar at all")
    with pytest.raises(BadMetadata, match="not a readable offline bundle"):
        extract_tar(tmp_path / "b.tar", tmp_path / "out")


def test_dir_fetcher_stays_inside_the_bundle(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    (root / "director").mkdir(parents=True)
    (root / "director" / "timestamp.json").write_bytes(b"{}")
    (tmp_path / "secret.json").write_bytes(b"secret")
    f = DirFetcher(root)
    assert b"".join(f.fetch("offline:///director/timestamp.json")) == b"{}"
    for url in ("offline:///../secret.json", "offline:///director/../../secret.json", "http://x/director/timestamp.json",
                "offline:///director/2.root.json"):
        with pytest.raises(tuf_exc.DownloadHTTPError) as exc:
            f.fetch(url)
        assert exc.value.status_code == 404
    with pytest.raises(LengthMismatch):
        f.download_to("offline:///director/timestamp.json", tmp_path / "p.part", 1)
    with pytest.raises(LengthMismatch):
        f.download_to("offline:///director/timestamp.json", tmp_path / "p.part", 3)


@pytest.mark.parametrize("path,ok", [
    ("/tuf/image/metadata/timestamp.json", True), ("/tuf/image/targets/digits/1.0/abc.r1.tar", True),
    ("/tuf/director/cam-1/timestamp.json", False), ("/tuf/image/metadata/../../x", False),
    ("/tuf/image/targets/../metadata/x", False), ("/api/v1/devices", False), ("/tuf/image/metadata/a/b.json", False),
])
def test_cache_serves_only_image_repository_paths(path: str, ok: bool) -> None:
    assert (_relative(path) is not None) is ok


def test_device_side_offline_modules_import_without_cloud_dependencies() -> None:
    code = (
        "import sys\n"
        f"for m in {FORBIDDEN!r}: sys.modules[m] = None\n"
        "import edgefleet.registry.tuf.offline, edgefleet.edge_agent.offline, edgefleet.edge_agent.depot\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
