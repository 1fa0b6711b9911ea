"""Secrets come from a file, the environment or $CREDENTIALS_DIRECTORY, and never reach a log."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from structlog.testing import capture_logs

from devices.config import PasswordRef
from gateway.errors import ConfigError
from gateway.secrets import SecretRef, resolve_secret

SECRET = "s3cr3t-Value-42"


def test_from_file_first_line(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(SECRET + "\n")
    with capture_logs() as logs:
        value = resolve_secret(SecretRef(file=path), what="mqtt password")
    assert isinstance(value, SecretStr)
    assert value.get_secret_value() == SECRET
    assert SECRET not in repr(value)
    assert SECRET not in str(logs)


def test_from_env_and_credentials_directory(tmp_path: Path) -> None:
    assert resolve_secret(PasswordRef(env="PW"), environ={"PW": SECRET}).get_secret_value() == SECRET
    (tmp_path / "mqtt-password").write_text(SECRET)
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    got = resolve_secret(PasswordRef(credential="mqtt-password"), environ=environ)
    assert got.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("ref", "environ", "message"),
    [
        (SecretRef(env="NOPE"), {}, "NOPE is not set"),
        (SecretRef(credential="pw"), {}, "CREDENTIALS_DIRECTORY"),
        (SecretRef(credential="../etc/passwd"), {"CREDENTIALS_DIRECTORY": "/tmp"}, "invalid credential"),
        (SecretRef(file=Path("/nonexistent/pw")), {}, "cannot read /nonexistent/pw"),
    ],
)
def test_errors_name_the_source(ref: SecretRef, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_secret(ref, environ=environ)


def test_empty_file_refused_without_echo(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n" + SECRET)
    with pytest.raises(ConfigError, match="empty") as info:
        resolve_secret(SecretRef(file=tmp_path / "pw"))
    assert SECRET not in str(info.value)


def test_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        SecretRef()
    with pytest.raises(ValidationError, match="exactly one"):
        SecretRef(env="A", credential="b")
