"""Shared helper of the command-line tests: run ``factor-engine`` in-process."""

from __future__ import annotations

from typer.testing import CliRunner

from factor_engine.cli import app

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    """Run the CLI; return (exit code, stdout, stderr). Unexpected exceptions propagate."""
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr
