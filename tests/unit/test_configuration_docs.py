"""docs/configuration.md lists every setting: a FULFILL_* variable added to Settings without a line there fails."""

from __future__ import annotations

import re
from pathlib import Path

from common.config import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    # Whole names only: FULFILL_TEMPORAL_TLS must not count as documented by FULFILL_TEMPORAL_TLS_CA_FILE
    documented = set(re.findall(r"FULFILL_[A-Z0-9_]*[A-Z0-9]", text))
    missing = sorted(f"FULFILL_{name.upper()}" for name in Settings.model_fields)
    missing = [name for name in missing if name not in documented]
    assert not missing, f"settings missing from {DOC.name}: {', '.join(missing)}"
