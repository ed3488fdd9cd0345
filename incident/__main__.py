"""`python -m incident` runs the command line."""

from incident.cli import main

main()
