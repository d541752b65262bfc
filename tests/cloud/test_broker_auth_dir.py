"""A broker given no auth directory makes a temporary one, and removes it when it goes."""

from __future__ import annotations

import gc

from edgefleet.cloud.broker import EmbeddedBroker


def test_a_temporary_auth_dir_is_removed_with_its_broker(tmp_path) -> None:  # type: ignore[no-untyped-def]
    broker = EmbeddedBroker()
    made = broker.auth_dir
    assert (made / "passwd").exists() and (made / "acl").exists()  # deny-all files from the start
    del broker
    gc.collect()
    assert not made.exists()


def test_an_auth_dir_that_was_given_is_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    broker = EmbeddedBroker(auth_dir=tmp_path / "auth")
    del broker
    gc.collect()
    assert (tmp_path / "auth" / "passwd").exists()
