"""Engine cache keys, invalidation, corrupt files and garbage collection."""

from __future__ import annotations

import json
import os

import pytest

from edgefleet.hardware import EngineCache

D1 = "a" * 64
D2 = "b" * 64
BASE = dict(model_digest=D1, trt_version="10.3.0", compute_capability="8.7", precision="fp16")


@pytest.mark.parametrize("change", [
    {"model_digest": D2}, {"trt_version": "8.6.2"}, {"compute_capability": "7.2"}, {"precision": "int8"},
    {"backend": "ort-tensorrt"}, {"workspace_mb": 2048}, {"max_batch": 8}, {"dla_core": 0},
])
def test_every_field_that_matters_changes_the_key(tmp_path, change):
    cache = EngineCache(tmp_path)
    base = cache.key(**BASE, workspace_mb=1024, max_batch=1)
    args = {**BASE, "workspace_mb": 1024, "max_batch": 1, **change}
    assert cache.key(**args).id != base.id


def test_key_is_stable_and_ignores_unset_options(tmp_path):
    cache = EngineCache(tmp_path)
    assert cache.key(**BASE, workspace_mb=1024).id == EngineCache(tmp_path / "x").key(**BASE, workspace_mb=1024).id
    assert cache.key(**BASE, dla_core=None).id == cache.key(**BASE).id


def test_digest_must_be_hex_so_it_cannot_escape_the_cache(tmp_path):
    with pytest.raises(ValueError):
        EngineCache(tmp_path).key(**{**BASE, "model_digest": "../../etc"})


def test_store_then_load_round_trips_and_writes_a_sidecar(tmp_path):
    cache = EngineCache(tmp_path)
    key = cache.key(**BASE)
    path = cache.store(key, b"engine-bytes")
    assert path.parent.name == D1
    assert cache.load(key) == b"engine-bytes"
    meta = json.loads(cache.sidecar_path(key).read_text())
    assert meta["key"]["trt_version"] == "10.3.0" and meta["size"] == len(b"engine-bytes")
    assert not list(path.parent.glob(".*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-sidecar", "bad-sidecar"])
def test_a_corrupt_engine_file_is_removed_not_loaded(tmp_path, damage):
    cache = EngineCache(tmp_path)
    key = cache.key(**BASE)
    path = cache.store(key, os.urandom(4096))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(path.read_bytes())
        data[2000] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "no-sidecar":
        cache.sidecar_path(key).unlink()
    else:
        cache.sidecar_path(key).write_text("{not json")
    assert cache.load(key) is None
    assert not path.exists()


def test_corrupt_engine_is_rebuilt_by_get_or_build(tmp_path):
    cache = EngineCache(tmp_path)
    key = cache.key(**BASE)
    builds = []

    def build() -> bytes:
        builds.append(1)
        return b"ENGINE" + bytes(100)

    engine, built = cache.get_or_build(key, build, lambda b: b[:6].decode())
    assert (engine, built, len(builds)) == ("ENGINE", True, 1)
    engine, built = cache.get_or_build(key, build, lambda b: b[:6].decode())
    assert (engine, built, len(builds)) == ("ENGINE", False, 1)
    cache.engine_path(key).write_bytes(b"garbage")
    engine, built = cache.get_or_build(key, build, lambda b: b[:6].decode())
    assert (engine, built, len(builds)) == ("ENGINE", True, 2)


def test_engine_the_runtime_refuses_is_rebuilt(tmp_path):
    """An intact file TensorRT will not deserialize (other version or GPU) is rebuilt."""
    cache = EngineCache(tmp_path)
    key = cache.key(**BASE)
    cache.store(key, b"OLD-ENGINE")

    def deserialize(data: bytes):
        if data.startswith(b"OLD"):
            return None  # what Runtime.deserialize_cuda_engine returns for an incompatible engine
        return data.decode()

    engine, built = cache.get_or_build(key, lambda: b"NEW-ENGINE", deserialize)
    assert (engine, built) == ("NEW-ENGINE", True)
    assert cache.load(key) == b"NEW-ENGINE"


def test_deserializer_exception_is_also_a_rebuild(tmp_path):
    cache = EngineCache(tmp_path)
    key = cache.key(**BASE)
    cache.store(key, b"X")
    calls = []

    def deserialize(data: bytes):
        calls.append(data)
        if data == b"X":
            raise RuntimeError("Serialization assertion failed")
        return "ok"

    assert cache.get_or_build(key, lambda: b"Y", deserialize) == ("ok", True)


def test_a_build_that_cannot_be_deserialized_raises_and_leaves_nothing(tmp_path):
    cache = EngineCache(tmp_path)
    key = cache.key(**BASE)
    with pytest.raises(ValueError):
        cache.get_or_build(key, lambda: b"Z", lambda _b: None)
    assert not cache.engine_path(key).exists()


def test_gc_removes_models_that_left_every_slot(tmp_path):
    cache = EngineCache(tmp_path)
    keep, gone = cache.key(**BASE), cache.key(**{**BASE, "model_digest": D2})
    cache.store(keep, b"1")
    cache.store(gone, b"2")
    cache.provider_dir(cache.key(**{**BASE, "model_digest": D2, "backend": "ort-tensorrt"}))
    (cache.engine_path(keep).parent / ".leftover.engine.x.tmp").write_bytes(b"half")
    timing = cache.timing_cache_path("10.3.0", "8.7")
    timing.parent.mkdir(parents=True)
    timing.write_bytes(b"t")
    removed = cache.gc({D1})
    assert cache.root / D2 in removed
    assert not (cache.root / D2).exists()
    assert cache.load(keep) == b"1"
    assert not list(cache.engine_path(keep).parent.glob(".*.tmp"))
    assert timing.exists()  # shared timing cache survives
    assert [e["key"]["model_digest"] for e in cache.entries()] == [D1]
    assert cache.gc({D1}) == []
