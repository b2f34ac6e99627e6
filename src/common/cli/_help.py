"""The help of every `fulfill` command reads like a manual: no type noise after a flag ("--json  Print JSON.",
not "--json <bool>"), arguments in capitals in the usage line ("FILE", not "{file}")."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


def _plain_params(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""  # "--json  Print JSON.", not "--json <bool>"
    return params


def _plain_usage(pieces: list[str], params: list[Any], ctx: Any) -> list[str]:
    # typer writes a required argument as "{file}": say FILE, as manuals do
    names = {p.get_usage_pieces(ctx)[0]: _usage_name(p) for p in params if isinstance(p, TyperArgument)}
    return [names.get(piece, piece) for piece in pieces]


def _usage_name(argument: TyperArgument) -> str:
    name = (argument.metavar or argument.name or "").upper()
    name = name if argument.required else f"[{name}]"
    return name if argument.nargs == 1 else f"{name}..."


class HelpCommand(TyperCommand):
    def get_params(self, ctx: Any) -> Any:
        return _plain_params(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _plain_usage(super().collect_usage_pieces(ctx), self.get_params(ctx), ctx)


class HelpGroup(TyperGroup):
    def get_params(self, ctx: Any) -> Any:
        return _plain_params(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _plain_usage(super().collect_usage_pieces(ctx), self.get_params(ctx), ctx)


class CliApp(typer.Typer):
    """A command group of `fulfill`: its commands and its own help use the plain help above."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=HelpGroup, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", HelpCommand)
        return super().command(*args, **kwargs)
