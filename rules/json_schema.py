"""Print the JSON Schema of rules files (generated from :mod:`rules.schema`).

Regenerate the committed copy with::

    .venv/bin/python -m rules.json_schema > schemas/rules.schema.json

``tests/rules/test_json_schema.py`` fails when the committed copy is stale.
"""

from __future__ import annotations

import sys

from rules.schema import rules_json_schema_text


def main() -> None:
    sys.stdout.write(rules_json_schema_text())


if __name__ == "__main__":  # pragma: no cover
    main()
