"""The ``datamorph`` command's tests: fixtures from tests/fixtures/cli.py."""

from ..fixtures.cli import cli

__all__ = ["cli"]
