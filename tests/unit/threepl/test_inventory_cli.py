"""`fulfill 3pl sync-inventory` as the integrator mounts it: an unknown provider is refused, exit 2."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from common.cli.threepl_inventory import register


def test_an_unknown_provider_exits_2_with_a_clear_message() -> None:
    app = typer.Typer()
    register(app)

    @app.command("other")  # two commands: typer then keeps the command's name
    def other() -> None: ...

    result = CliRunner().invoke(app, ["sync-inventory", "--provider", "nosuch3pl"])
    assert result.exit_code == 2, result.output
    assert "no 3PL provider 'nosuch3pl'" in result.output
