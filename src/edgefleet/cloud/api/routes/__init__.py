"""One router per resource, collected in ``api_router``."""

from fastapi import APIRouter, Depends

from ..audit_trail import record_api_call
from . import (
    audit,
    bundles,
    campaigns,
    clips,
    deployments,
    device_history,
    devices,
    drift,
    health,
    models,
    network_settings,
    offline_bundles,
    policies,
    provisioning,
    report_keys,
    review,
    rollouts,
    settings,
    shadow,
    tokens,
    trust,
    webhooks,
)

# every call through here is considered for the audit log (api/audit_trail.py)
api_router = APIRouter(prefix="/api/v1", dependencies=[Depends(record_api_call, scope="function")])
for _module in (health, audit, campaigns, models, report_keys, devices, deployments, bundles, tokens, drift, shadow, clips, review, rollouts, settings, network_settings, trust,
                provisioning, device_history, webhooks, offline_bundles, policies):
    api_router.include_router(_module.router)
