"""``python -m edgefleet.hardware [ROOT]``: print the hardware report (as ``fleet-agent hw``)."""

from __future__ import annotations

import sys

from .report import render_hw_report

if __name__ == "__main__":
    sys.stdout.write(render_hw_report(sys.argv[1] if len(sys.argv) > 1 else "/"))
