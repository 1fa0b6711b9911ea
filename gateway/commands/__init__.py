"""The ``edgegw`` subcommands, one module each.

A command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` (``(argparse.Namespace) -> int``, the exit code) as the parser default.
Command modules import their heavy dependencies inside ``func`` so that
``edgegw --help`` stays fast on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
from importlib import import_module

# Module names under gateway.commands, in the order `edgegw --help` lists them.
COMMANDS: tuple[str, ...] = ("demo", "run", "discover", "rules", "simulate", "spool", "deploy", "fleet")


def register_all(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name in COMMANDS:
        import_module(f"gateway.commands.{name}").register(subparsers)
