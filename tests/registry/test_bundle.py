from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from edgefleet.registry import InvalidBundle
from edgefleet.registry.bundle import build_bundle, read_manifest, unpack_bundle


def test_bundles_are_deterministic(digit_models) -> None:
    control, _ = digit_models
    data = control.path.read_bytes()
    assert build_bundle(control.manifest, data) == build_bundle(control.manifest, data)


def test_unpack_round_trip(tmp_path: Path, digit_models) -> None:
    control, _ = digit_models
    bundle = build_bundle(control.manifest, control.path.read_bytes())
    assert read_manifest(bundle) == control.manifest
    out = unpack_bundle(bundle, tmp_path / "b")
    assert out.model_path.read_bytes() == control.path.read_bytes()


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def test_extra_members_and_links_are_refused(tmp_path: Path, digit_models) -> None:
    control, _ = digit_models
    manifest = control.manifest.to_json()
    m = tarfile.TarInfo("manifest.json")
    m.size = len(manifest)
    model = tarfile.TarInfo("model.onnx")
    model.type = tarfile.SYMTYPE
    model.linkname = "/etc/passwd"
    with pytest.raises(InvalidBundle, match="regular file|exactly"):
        unpack_bundle(_tar([(m, manifest), (model, b"")]), tmp_path / "x")
    evil = tarfile.TarInfo("../evil")
    evil.size = 1
    with pytest.raises(InvalidBundle):
        unpack_bundle(_tar([(m, manifest), (evil, b"x")]), tmp_path / "y")
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("blob", [b"", b"garbage" * 100, b"\x00" * 1024])
def test_garbage_is_not_a_bundle(tmp_path: Path, blob: bytes) -> None:
    with pytest.raises(InvalidBundle):
        unpack_bundle(blob, tmp_path / "z")
