"""The command line's name and its refusal (exit code 2, one line), shared by `pipeline.cli` and
the commands' bodies in the packages (`pipeline.lag.cli`, `pipeline.replay.cli`). Standard
library only: `--help` imports it."""

from __future__ import annotations

__all__ = ["PROG", "UsageError"]

PROG = "python -m pipeline"


class UsageError(Exception):
    """A refused request or invalid argument: exit code 2."""
