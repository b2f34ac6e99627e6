"""What deploy/Dockerfile puts in the production image: the engine's processes and none of the development stack
(the sandbox servers, the dev stack, the simulated picker, `fulfill dev`/`fulfill outbox`); and that the worker
and the `fulfill` script work there, where the sandbox package is absent."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
DEV_ONLY = ("sandbox", "workers.devstack", "workers.devcli", "workers.sandbox", "workers.picker")


def copied_sources() -> list[str]:
    """The source paths of the Dockerfile's COPY instructions."""
    sources: list[str] = []
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        if m := re.match(r"COPY\s+(.+)\s+\S+$", line):
            sources += m.group(1).split()
    return sources


def copied_workers_modules() -> set[str]:
    return {"workers." + Path(p).stem for p in copied_sources() if p.startswith("workers/") and p.endswith(".py")}


def test_the_image_leaves_the_development_stack_out() -> None:
    sources = copied_sources()
    assert "src" in sources
    assert not [p for p in sources if p.rstrip("/") in ("sandbox", "workers")]  # workers/ file by file
    copied = copied_workers_modules()
    assert not copied & {m for m in DEV_ONLY if m.startswith("workers.")}


def test_the_image_has_every_workers_module_the_worker_imports() -> None:
    graph = grimp.build_graph("workers", "common", "activities", "workflows", "sandbox")
    needed = {m for m in graph.find_upstream_modules("workers.worker") if m.startswith("workers.")}
    needed |= {"workers.worker", "workers.cli", "workers.api"}
    assert needed <= copied_workers_modules()


def test_worker_and_fulfill_without_the_sandbox() -> None:
    """As in the image: the dev-only modules cannot be imported. The worker and the HTTP API import, and
    `fulfill` has the engine's commands but not the developer's."""
    script = textwrap.dedent(f"""
        import sys
        for name in {DEV_ONLY!r}:
            sys.modules[name] = None  # importing it raises ModuleNotFoundError, as where it is not installed
        import workers.worker
        import workers.api
        from workers.cli import app
        names = [g.name for g in app.registered_groups] + [c.name for c in app.registered_commands]
        print(" ".join(sorted(names)))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "3pl",
        "api-key",
        "catalog",
        "customer",
        "inventory",
        "keys",
        "kpi",
        "notifications",
        "order",
        "warehouse",
    ]


def test_fulfill_of_a_development_install_has_the_dev_commands() -> None:
    from workers.cli import app

    names = {g.name for g in app.registered_groups} | {c.name for c in app.registered_commands}
    assert {"dev", "outbox", "order"} <= names
