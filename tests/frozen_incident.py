"""Run the command line as a process at a frozen time (tests and bench/ that need one):

    python tests/frozen_incident.py 2026-11-24T02:00:00Z --config ops/incident.yaml start ...

The first argument is the time (ISO, UTC if naive); the rest are the command's arguments.
Production has no such switch: `incident` always runs on the system clock (incident/clock.py).
"""

from __future__ import annotations

import sys

from incident.cli import main
from incident.clock import FrozenClock

if __name__ == "__main__":
    main(FrozenClock(sys.argv.pop(1)))  # click reads the command's arguments from sys.argv
