"""Finding 6: help reads like a manual: no `<bool>` after a flag, arguments in capitals in the usage line
(not `{file}`), for every command."""

from __future__ import annotations

from collections.abc import Iterator

import typer
from typer.testing import CliRunner

from workers.cli import app


def _paths(group: typer.main.TyperGroup, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, command in group.commands.items():
        if isinstance(command, typer.main.TyperGroup):
            yield from _paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


def test_no_command_help_shows_bool_metavars_or_braced_arguments(monkeypatch: object) -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, typer.main.TyperGroup)
    paths = list(_paths(root))
    assert len(paths) > 20
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, (path, result.output)
        usage = next(line for line in result.output.splitlines() if "Usage:" in line)
        assert "{" not in usage and "}" not in usage, (path, usage)


def test_usage_names_the_arguments_in_capitals() -> None:
    result = CliRunner().invoke(app, ["order", "place", "--help"], env={"COLUMNS": "80"}, prog_name="fulfill")
    assert "Usage: fulfill order place [OPTIONS] FILE" in result.output
    result = CliRunner().invoke(
        app, ["inventory", "reorder-point", "--help"], env={"COLUMNS": "80"}, prog_name="fulfill"
    )
    assert "Usage: fulfill inventory reorder-point [OPTIONS] SKU [POINT]" in result.output
    result = CliRunner().invoke(app, ["order", "status", "--help"], env={"COLUMNS": "80"})
    assert "--json" in result.output and "Print JSON." in result.output
