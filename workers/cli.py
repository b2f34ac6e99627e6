"""The `fulfill` command: the engine's commands (common.cli) and, where the sandbox package is installed (a
development install; the production image has none), the developer's ones of workers/devcli.

Composed here, above the layers, so that common.cli never imports the sandbox or the dev stack."""

from __future__ import annotations

from common.cli import app

# The modules whose absence means "no sandbox here" rather than a broken install.
_DEV_ONLY = frozenset({"sandbox", "workers.devcli"})

try:
    from workers.devcli import add_dev_commands
except ModuleNotFoundError as err:
    if err.name not in _DEV_ONLY:
        raise
else:
    add_dev_commands(app)

__all__ = ["app"]

if __name__ == "__main__":
    app()
