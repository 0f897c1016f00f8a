"""What every command's options are, read from click's command objects.

``python tests/cli_options.py > tests/data/cli_options.json`` recorded the options as
the hand-written CLI declared them, before the options were built from
:mod:`streamae.options`; ``tests/test_cli_options.py`` compares the CLI of today with
that record, so flags, short flags, defaults and flag-ness stay the same.
"""

from __future__ import annotations

import json
import sys

import click


def describe_options(command: click.Command) -> list[dict]:
    """Each option of ``command``: its flags, default, whether it is a flag, required, type name."""
    described = []
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        default = param.default
        if not isinstance(default, str | int | float | bool | tuple | type(None)):
            # click >= 8.2 marks "no default given" with a sentinel: the callback gets
            # False for a flag and None otherwise.
            default = False if param.is_flag else None
        if isinstance(default, tuple):
            default = list(default)
        described.append(
            {
                "name": param.name,
                "flags": sorted(param.opts + param.secondary_opts),
                "default": default,
                "is_flag": bool(param.is_flag),
                "required": bool(param.required),
                "multiple": bool(param.multiple),
            }
        )
    return sorted(described, key=lambda entry: entry["flags"])


def snapshot() -> dict[str, list[dict]]:
    """Command name → its options, for every command of ``streamae``."""
    from streamae.cli.main import cli

    return {name: describe_options(command) for name, command in sorted(cli.commands.items())}


if __name__ == "__main__":
    json.dump(snapshot(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
