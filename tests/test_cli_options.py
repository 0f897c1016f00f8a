"""The command line's options stay what they were, and each one comes from a spec."""

from __future__ import annotations

import json
from pathlib import Path

from cli_options import snapshot

RECORDED = Path(__file__).parent / "data" / "cli_options.json"


def _without_names(options: list[dict]) -> list[dict]:
    # The callback's parameter name is internal (it became the library's name); the
    # flags, defaults and flag-ness are what a user types and sees.
    return [{key: value for key, value in option.items() if key != "name"} for option in options]


def test_every_command_keeps_its_flags_defaults_and_flagness():
    recorded = json.loads(RECORDED.read_text())
    current = snapshot()
    assert sorted(current) == sorted(recorded)
    for command in recorded:
        assert _without_names(current[command]) == _without_names(recorded[command]), command
