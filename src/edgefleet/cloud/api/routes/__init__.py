"""One router per resource, collected in ``api_router``."""

from fastapi import APIRouter

from . import (
    bundles,
    clips,
    deployments,
    devices,
    drift,
    health,
    models,
    report_keys,
    review,
    rollouts,
    settings,
    shadow,
    tokens,
    trust,
)

api_router = APIRouter(prefix="/api/v1")
for _module in (health, models, report_keys, devices, deployments, bundles, tokens, drift, shadow, clips, review, rollouts, settings, trust):
    api_router.include_router(_module.router)
