"""``fleet review ls|label|export`` against a real server (typer's runner, real HTTP)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from typer.testing import CliRunner

from edgefleet.cloud.cli import app

runner = CliRunner()


def _fleet(server, role: str, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [*args, "--url", server.url, "--token", server.tokens[role]])


def test_cli_lists_labels_and_exports_a_folder_and_a_zip_with_that_label(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = _fleet(server, "viewer", "review", "ls", "--unlabelled", "--device", "cam-a", "--json")
    assert res.exit_code == 0, res.output
    queue = json.loads(res.output)
    eid = queue["items"][0]["event_id"]
    res = _fleet(server, "reviewer", "review", "label", eid, "k", "--note", "candidate saw it")
    assert res.exit_code == 0, res.output
    assert "candidate_right" in res.output
    res = _fleet(server, "viewer", "review", "ls", "--device", "cam-a")
    assert res.exit_code == 0 and "2 unlabelled" in res.output
    res = _fleet(server, "viewer", "review", "ls", "--device", "cam-a", "--json")
    labelled = [it for it in json.loads(res.output)["items"] if it["event_id"] == eid]
    assert labelled[0]["label"]["verdict"] == "candidate_right"

    out = tmp_path / "export"
    res = _fleet(server, "reviewer", "review", "export", "--pair", "digits:1.0:digits:2.0", "--format", "folder", str(out))
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["event_id"] == eid)
    assert row["verdict"] == "candidate_right" and row["note"] == "candidate saw it"
    assert (out / row["clip"]).read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file
    assert (out / row["keyframe"]).is_file()

    res = _fleet(server, "reviewer", "review", "export", "--pair", "digits:1.0:digits:2.0", "--format", "zip",
                 str(tmp_path / "training"))
    assert res.exit_code == 0, res.output
    with zipfile.ZipFile(tmp_path / "training.zip") as zf:
        assert any(json.loads(x)["event_id"] == eid for x in zf.read("labels.jsonl").decode().splitlines())
        assert row["clip"] in zf.namelist()


def test_cli_refuses_an_unknown_verdict_and_reports_the_apis_403(server) -> None:  # type: ignore[no-untyped-def]
    res = _fleet(server, "reviewer", "review", "label", server.event_ids[0], "perhaps")
    assert res.exit_code == 1 and "verdict must be one of" in res.output
    res = _fleet(server, "viewer", "review", "label", server.event_ids[0], "unclear")
    assert res.exit_code == 1 and "403" in res.output
