"""``fleet device ls`` against the seeded fleet over HTTP: a page at a time, filters, --all,
--json, and clear errors for bad filters."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edgefleet.cloud.cli import app as fleet_app

from .conftest import N
from .seed import PROFILES, device_id, expected


def _ls(views, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(fleet_app, ["device", "ls", "--url", views.url, "--token", views.tokens["viewer"], *args],
                              env={"COLUMNS": "200"})


def test_ls_shows_one_page_and_says_how_to_get_the_next(views) -> None:  # type: ignore[no-untyped-def]
    res = _ls(views, "--limit", "5")
    assert res.exit_code == 0, res.output
    assert device_id(4) in res.output and device_id(5) not in res.output
    assert "5 of " in res.output and "--cursor " in res.output
    cursor = res.output.split("--cursor ", 1)[1].split()[0]
    more = _ls(views, "--limit", "5", "--cursor", cursor)
    assert more.exit_code == 0 and device_id(5) in more.output and device_id(4) not in more.output


def test_ls_all_json_follows_every_cursor_and_filters(views) -> None:  # type: ignore[no-untyped-def]
    res = _ls(views, "--all", "--json", "--profile", PROFILES[2], "--state", "offline", "--model", "control=digits:2.0")
    assert res.exit_code == 0, res.output
    got = [d["id"] for d in json.loads(res.output)]
    want = [device_id(i) for i in range(N) if (e := expected(i))["profile"] == PROFILES[2] and e["state"] == "offline"
            and e["control"] == "digits:2.0"]
    assert [d for d in got if d in set(want) or d < device_id(N)] == want
    every = _ls(views, "--all", "--json", "--stale")
    assert {d["id"] for d in json.loads(every.output)} >= {device_id(i) for i in range(N) if expected(i)["stale"]}
    assert all(d["stale"] for d in json.loads(every.output))


def test_ls_refuses_bad_filters_with_a_clear_message(views) -> None:  # type: ignore[no-untyped-def]
    for args, said in ((["--state", "asleep"], "--state must be one of"), (["--tag", "site"], "--tag must be KEY=VALUE"),
                       (["--model", "digits:2.0"], "SLOT=NAME:VERSION"), (["--cursor", "garbage"], "cursor")):
        res = _ls(views, *args)
        assert res.exit_code == 1 and said in res.output, (args, res.output)
