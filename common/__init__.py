"""Leaf modules that every package may import: ``devices/``, ``bridge/``, ``rules/`` and
``gateway/`` alike, beside :mod:`gateway.model` and :mod:`gateway.errors`.

Each module here imports nothing of the project except those two, so importing one never
drags in another package. This ``__init__`` imports none of them (import the module you
need, e.g. ``from common.backoff import Backoff``): the leaves stay independent, and a
thread name (``common.libc``) never costs the import of pydantic (``common.configtypes``).

- :mod:`common.backoff`: jittered exponential backoff for every reconnect loop;
- :mod:`common.configtypes`: durations and secret references in config models;
- :mod:`common.libc`: thread names in the kernel, glibc's heap controls.
"""
