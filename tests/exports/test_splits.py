"""``assign_splits``: a capture's split is a stable hash of it, and the Ultralytics layout
never gets an empty ``train/`` or ``test/`` however the hashes fall (CI once drew three
captures that all hashed into ``test/`` at a 0.3 fraction: probability 0.027)."""

from __future__ import annotations

from edgefleet.cloud.training_export import assign_splits, split_of


def captures(n: int, prefix: str = "ev") -> dict[str, str]:
    return {f"{prefix}{i}": f"cam-{i % 3}/{prefix}{i}" for i in range(n)}


def test_every_capture_hashed_into_test_still_leaves_one_in_train() -> None:
    caps = captures(3)
    assert all(split_of(key, 0.99) == "test" for key in caps.values())  # what the hash alone does
    got = assign_splits(caps, 0.99, both=True)
    assert sorted(got.values()) == ["test", "test", "train"]
    assert got == assign_splits(caps, 0.99, both=True)  # a re-export moves the same capture


def test_every_capture_hashed_into_train_still_leaves_one_in_test() -> None:
    caps = captures(3)
    assert all(split_of(key, 0.001) == "train" for key in caps.values())
    assert sorted(assign_splits(caps, 0.001, both=True).values()) == ["test", "train", "train"]


def test_no_forcing_without_both_a_fraction_or_a_second_capture() -> None:
    caps = captures(3)
    assert set(assign_splits(caps, 0.99, both=False).values()) == {"test"}  # other formats: the hash alone
    assert set(assign_splits(caps, 0.0, both=True).values()) == {"train"}  # no test split asked for
    (only,) = assign_splits(captures(1), 0.99, both=True).values()
    assert only == "test"  # one capture cannot fill two folders


def test_an_ordinary_draw_is_left_as_hashed() -> None:
    caps = captures(200)
    got = assign_splits(caps, 0.3, both=True)
    assert got == {e: split_of(k, 0.3) for e, k in caps.items()}
    assert 0.2 < sum(v == "test" for v in got.values()) / 200 < 0.4
