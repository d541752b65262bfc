"""One router per resource, collected in ``api_router``."""

from fastapi import APIRouter

from . import bundles, clips, deployments, devices, health, models, shadow

api_router = APIRouter(prefix="/api/v1")
for _module in (health, models, devices, deployments, bundles, shadow, clips):
    api_router.include_router(_module.router)
