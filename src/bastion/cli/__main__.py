"""``python -m bastion.cli``."""

from bastion.cli.main import run

raise SystemExit(run())
