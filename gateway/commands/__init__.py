"""The ``edgegw`` subcommands, one module each.

A command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` (``(argparse.Namespace) -> int``, the exit code) as the parser default.
Command modules import their heavy dependencies inside ``func`` so that
``edgegw --help`` stays fast on a Raspberry Pi.

:func:`register_for` imports only the module of the command on the command line (``edgegw
run`` loads ``gateway.commands.run`` alone, not the deploy, discover or rules commands and
what they import): the gateway process keeps what it uses. Without a known command
(``edgegw --help``, a typo) every module registers, so the help lists them all.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib import import_module

# Module names under gateway.commands, in the order `edgegw --help` lists them.
COMMANDS: tuple[str, ...] = ("demo", "run", "discover", "rules", "simulate", "spool", "deploy", "fleet")

# The top-level command words each module registers (tests/gateway/test_lazy_imports.py
# checks this table against what the modules register).
COMMAND_WORDS: dict[str, str] = {
    "demo": "demo",
    "run": "run",
    "check": "run",
    "discover": "discover",
    "rules": "rules",
    "simulate": "simulate",
    "spool": "spool",
    "deploy": "deploy",
    "command": "deploy",
    "fleet": "fleet",
}


def register_all(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name in COMMANDS:
        import_module(f"gateway.commands.{name}").register(subparsers)


def command_word(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (its first argument that is not an option), or None."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
    return None


def register_for(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], argv: Sequence[str]
) -> None:
    """Register the module of ``argv``'s command only; every module when there is none."""
    module = COMMAND_WORDS.get(command_word(argv) or "")
    if module is None:
        register_all(subparsers)
    else:
        import_module(f"gateway.commands.{module}").register(subparsers)
