"""``edgegw rules check FILE...`` and ``edgegw rules test SCENARIO...``.

``check`` exits 0 when every file is valid, 2 with one ``file:line:column: key.path:
message`` line per problem otherwise. ``test`` exits 0 when every expectation holds,
1 with a diff of expected and actual actions, 2 when a file is invalid.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, ConfigIssue
from gateway.rulesload import load_declared, load_rules, load_rules_files

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "rules",
        help="check rules files and run rule scenarios",
        description="Check rules files and run rule scenarios on a virtual clock.",
    )

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help()
        return EXIT_INVALID

    parser.set_defaults(func=usage)
    sub = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    check = sub.add_parser(
        "check",
        help="validate rules files",
        description="Validate rules files; every problem is printed as file:line:column.",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="rules file (`rules:` list)")
    check.add_argument(
        "--config",
        metavar="CFG",
        help="check sensors and actuators against this config (`devices:`, `actuators:`)",
    )
    check.set_defaults(func=_check_command)
    test = sub.add_parser(
        "test",
        help="run rule scenarios",
        description="Run rule scenarios (see docs/rules.md); exit 1 when an expectation fails.",
    )
    test.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    test.set_defaults(func=_test_command)
    explain = sub.add_parser(
        "explain",
        help="why a rule of a running gateway fired, cleared or was held back",
        description="Show the last evaluations of a rule per outcome (fired, cleared, blocked by "
        "cooldown, blocked by guard...) with the values that decided, from a running gateway's "
        "HTTP port (the `http:` section of its config).",
    )
    explain.add_argument("rule", metavar="RULE_ID")
    explain.add_argument("--config", metavar="CFG", help="the gateway's config (to find its HTTP port)")
    explain.add_argument(
        "--url", metavar="URL", help="the gateway's HTTP address, e.g. http://127.0.0.1:9108"
    )
    explain.add_argument("--json", action="store_true", help="print the trace as JSON")
    explain.set_defaults(func=_explain_command)


def _print_issues(issues: Sequence[ConfigIssue]) -> None:
    from gateway.yamlio import sorted_issues  # noqa: PLC0415

    for issue in sorted_issues(issues):
        print(f"error: {issue}", file=sys.stderr)


def _check_command(args: argparse.Namespace) -> int:
    declared = load_declared(args.config) if args.config else None
    loaded = load_rules_files(args.files, declared)
    if loaded.issues:
        _print_issues(loaded.issues)
        count = len(loaded.issues)
        print(f"{count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return EXIT_INVALID
    print(f"ok: {len(loaded.rules)} rules in {len(args.files)} file(s)")
    return EXIT_OK


@dataclass(slots=True)
class ScenarioOutcome:
    code: int
    report: str
    issues: list[ConfigIssue] = field(default_factory=list)


def run_scenario_file(path: str | Path, *, logger: Any = None) -> ScenarioOutcome:
    """Load, check and run one scenario file: what ``edgegw rules test`` does for each.

    ``logger`` receives the engine's logs (fail-safes, loop guard...); ``None`` drops them.
    """
    if logger is None:
        import structlog  # noqa: PLC0415

        logger = structlog.wrap_logger(structlog.ReturnLogger())
    from gateway.yamlio import load_yaml, validate  # noqa: PLC0415
    from rules.compiler import RuleSet  # noqa: PLC0415
    from rules.scenario import Scenario, check_scenario, run_scenario  # noqa: PLC0415
    from rules.schema import Location  # noqa: PLC0415

    try:
        doc = load_yaml(path)
        scenario = validate(doc, Scenario)
    except ConfigError as exc:
        return ScenarioOutcome(EXIT_INVALID, "", exc.issues)
    issues = doc.place(check_scenario(scenario))
    if isinstance(scenario.rules, str):
        loaded = load_rules_files([Path(path).parent / scenario.rules])
        if scenario.location is not None:
            loaded.location = scenario.location
    else:
        loaded = load_rules([(doc, ("rules",))], location=scenario.location)
    issues += loaded.issues
    if issues:
        return ScenarioOutcome(EXIT_INVALID, "", issues)
    location = scenario.location or loaded.location or Location()
    result = run_scenario(scenario, RuleSet(tuple(loaded.rules), location), logger=logger)
    if result.ok:
        return ScenarioOutcome(EXIT_OK, f"ok: {path} ({result.expectations} expectations)")
    lines = [f"FAILED: {path}"]
    for mismatch in result.mismatches:
        line, column = doc.locate(("steps", mismatch.step, "expect"), at_key=True)
        lines.append(f"{path}:{line}:{column}: steps[{mismatch.step}].expect {mismatch.render()}")
    return ScenarioOutcome(EXIT_FAILED, "\n".join(lines))


def _test_command(args: argparse.Namespace) -> int:
    worst = EXIT_OK
    for path in args.scenarios:
        outcome = run_scenario_file(path)
        if outcome.issues:
            _print_issues(outcome.issues)
        if outcome.report:
            print(outcome.report)
        worst = max(worst, outcome.code)
    return worst


def _explain_command(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    import time  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    url = args.url
    if url is None:
        from gateway.config import DEFAULT_CONFIG_PATH, GatewayConfig  # noqa: PLC0415
        from gateway.yamlio import load_model  # noqa: PLC0415

        path = args.config or os.environ.get("EDGEGW_CONFIG") or str(DEFAULT_CONFIG_PATH)
        http = load_model(path, GatewayConfig).http
        url = f"http://{http.host}:{http.port}"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/rules", timeout=5) as response:  # noqa: S310 - our own local gateway
            traces: dict[str, Any] = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"error: cannot reach the gateway at {url}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    trace = traces.get(args.rule)
    if trace is None:
        known = ", ".join(sorted(traces)) or "none"
        print(f"error: no rule {args.rule!r} in the running gateway (rules: {known})", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(trace, indent=2))
        return EXIT_OK
    state = "fired" if trace.get("fired") else "clear"
    print(f"rule {args.rule}: {state}; condition {'met' if trace.get('met') else 'not met'}")
    for key in ("bad_readings", "loop_guard_trips"):
        if trace.get(key):
            print(f"  {key.replace('_', ' ')}: {trace[key]}")
    outcomes: dict[str, list[dict[str, Any]]] = trace.get("outcomes", {})
    if not outcomes:
        print("  no evaluations yet")
    for outcome, entries in outcomes.items():
        print(f"  {outcome.replace('_', ' ')}:")
        for entry in entries:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.get("at", 0)))
            values = ", ".join(f"{k}={v}" for k, v in (entry.get("values") or {}).items())
            detail = f" ({entry['detail']})" if entry.get("detail") else ""
            print(f"    {when}  {values}{detail}")
    return EXIT_OK
