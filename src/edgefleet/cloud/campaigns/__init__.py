"""Capture campaigns (issue 17): ask selected devices for the frames a condition matches,
up to a fleet quota. ``store`` holds the logic over the database; ``tables`` the tables."""

from .store import StartRequest, expire, progress, record, specs_for, start, stop
from .tables import COMPLETED, ENDED, RUNNING, STOPPED, Campaign, CampaignCapture

__all__ = ["COMPLETED", "ENDED", "RUNNING", "STOPPED", "Campaign", "CampaignCapture", "StartRequest", "expire",
           "progress", "record", "specs_for", "start", "stop"]
