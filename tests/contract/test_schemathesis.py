"""Schemathesis against a live controller: the OpenAPI document says what the API does.

The ``stack`` fixture runs the real app on uvicorn (SQLite, embedded broker). The schema is
read from ``/api/v1/openapi.json`` with the admin token and handed to ``st run`` (the
installed schemathesis CLI) with the phases that need no state machine — examples,
coverage and a small fuzzing budget, deterministic — and every check that applies to a
single call: no 5xx, only declared status codes and content types, bodies matching the
declared schema, invalid input refused, and schema-valid input never refused for a reason
the schema does not state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "negative_data_rejection", "positive_data_acceptance")
MAX_EXAMPLES = 5  # fuzzing budget per operation (coverage and examples run in full; CI time)

# Operations whose schema-valid input may still be refused with 400, each with the reason:
# what decides it is content no JSON Schema can state. All other checks still apply to them.
CONTENT_CHECKED: dict[str, str] = {
    "models_push_model": "the file must be an ONNX graph the checker accepts, the manifest/provenance JSON",
    "rollouts_start": "select and gates are small languages (tag selectors, metric<=limit), waves must increase to 100, "
                      "rate and ramp exclude each other, start_at must lie in the coming year",
    "rollouts_reschedule_rollout": "the start time must lie in the coming year (it depends on the clock)",
    "models_yank_version": "the same rollout languages as rollouts_start",
    "webhooks_add": "the URL's host is resolved and checked against the SSRF rules; event patterns must match a type",
    "devices_enrol": "report_public_key must decode to an Ed25519 public key (base64 or PEM)",
    "devices_patch_tags": "a key may not be both set and removed",
    "devices_register_report_key": "the key must decode to an Ed25519 public key; a rotation's signature must verify",
    "trust_rotate_prepare": "an offline root rotation needs the new root key of each repository",
    "trust_rotate_commit": "signatures are verified cryptographically against the prepared root",
    "trust_resign_commit": "signatures are verified cryptographically against the prepared root",
    "devices_list_devices": "a cursor must be one the API issued for the same filters (E_BAD_CURSOR)",
    "rollouts_rollout_devices": "a cursor must be one the API issued for the same filters (E_BAD_CURSOR)",
    "rollouts_list_rollouts": "a cursor must be one the API issued for the same filter (E_BAD_CURSOR)",
    "campaigns_start_campaign": "select and when are small languages (selector, condition: caret errors), until is a "
                                "duration, per_device may not exceed quota, threshold goes with like_event",
    "policies_put_policy": "select is the selector language; window days, HH:MM start, duration with units and "
                           "the time zone (tz database) are checked, with the field named",
    "policies_put_fleet_windows": "window days, HH:MM start, duration with units and the time zone (tz database)",
}
# Operations whose schema-valid input may be refused with 422 by a field validator, each with the reason.
VALIDATED_422: dict[str, str] = {
    "campaigns_start_campaign": "like_embedding's base64 data must hold exactly dim values of its dtype, all finite "
                                "(the embedding type is shared with capture records and signed settings)",
}
# Operations not run at all, each with the reason.
EXCLUDED: dict[str, str] = {
    "tokens_revoke": "revoking token 1 revokes the admin token this run authenticates with",
}


def _config(token: str) -> str:
    positive = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
    lines = [
        "continue-on-failure = true",
        "workers = 2",
        "request-timeout = 20",
        'suppress-health-check = ["all"]',
        "[phases.coverage]",
        "unexpected-methods = []",  # what unsupported_method would check; not a contract of ours
        "[headers]",
        f'Authorization = "Bearer {token}"',
        "[generation]",
        "deterministic = true",
        f"max-examples = {MAX_EXAMPLES}",
        "[checks]",
        "enabled = false",
        *[f"{c}.enabled = true" for c in CHECKS],
    ]
    for op in CONTENT_CHECKED:
        allowed = positive + (["422"] if op in VALIDATED_422 else [])
        lines += ["[[operations]]", f'include-operation-id = "{op}"',
                  f"checks.positive_data_acceptance.expected-statuses = {json.dumps(allowed)}"]
    for op in EXCLUDED:
        lines += ["[[operations]]", f'include-operation-id = "{op}"', "enabled = false"]
    return "\n".join(lines) + "\n"


def _st() -> str:
    return str(Path(sys.executable).with_name("st"))


@pytest.mark.slow
@pytest.mark.timeout(660)  # ~60 s on a quiet machine; one worker of two under load may take minutes
def test_schemathesis_finds_no_contract_failure(stack, tmp_path: Path) -> None:
    spec = httpx.get(f"{stack.url}/api/v1/openapi.json", headers={"Authorization": f"Bearer {stack.token}"},
                     timeout=60).json()
    ids = {op["operationId"] for item in spec["paths"].values() for op in item.values()}
    assert set(CONTENT_CHECKED) | set(EXCLUDED) <= ids  # the lists name real operations
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(spec))
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(stack.token))
    cmd = [_st(), "--config-file", str(config), "--no-color", "run", str(schema), "--url", stack.url,
           "--phases", "examples,coverage,fuzzing"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "NO_COLOR": "1"})
    print(out.stdout[-60000:], out.stderr[-5000:])
    assert out.returncode == 0, out.stdout[-20000:]
    assert f"Selected: {len(ids) - len(EXCLUDED)}/" in out.stdout
