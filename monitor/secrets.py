"""Secrets by name: an environment variable, else a key of the secrets file.

The secrets file has the format of a systemd EnvironmentFile (KEY=VALUE lines,
`#` comments, optional quotes), so one file serves both. A missing secret is a
ConfigError that names the variable, never its value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from monitor.errors import ConfigError


def read_secrets_file(path: str | Path) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"alerts.secrets_file: cannot read {path} ({getattr(err, 'strerror', None) or type(err).__name__})") from None
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"alerts.secrets_file: {path} line {n}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


class Secrets:
    """Looks secrets up by name; the file is read once, on first need."""

    def __init__(self, secrets_file: str | None = None, environ: Mapping[str, str] | None = None):
        self._file = secrets_file
        self._environ = os.environ if environ is None else environ
        self._from_file: dict[str, str] | None = None

    def has(self, name: str) -> bool:
        try:
            self.get(name, "")
        except ConfigError:
            return False
        return True

    def get(self, name: str, where: str) -> str:
        """The value of `name`; `where` (a config key path) goes into the error when it is missing."""
        value = self._environ.get(name)
        if not value and self._file is not None:
            if self._from_file is None:
                self._from_file = read_secrets_file(self._file)
            value = self._from_file.get(name)
        if not value:
            extra = f" nor in {self._file}" if self._file else ""
            raise ConfigError(f"{where}: the secret {name} is not set in the environment{extra}")
        return value
