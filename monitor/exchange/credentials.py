"""API credentials: from the environment, else from a secrets file; never from the TOML config.

The secrets file is TOML of NAME = "value" lines, keyed by the same names the account's
api_key_env / api_secret_env (/ api_passphrase_env) give. It must be readable by its owner only (0600): a looser
mode is tightened, with a warning. Values never appear in a repr, a log line or an error.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from monitor.config import AccountSettings
from monitor.errors import ConfigError

log = structlog.get_logger("credentials")


@dataclass(frozen=True, slots=True)
class Credentials:
    api_key: str = field(repr=False)
    secret: str = field(repr=False)
    password: str = field(default="", repr=False)  # OKX's API passphrase

    def __repr__(self) -> str:
        return "Credentials(<redacted>)"

    def redact(self, text: str) -> str:
        """`text` with every credential value blotted out (exchange errors may echo a request)."""
        for value in (self.api_key, self.secret, self.password):
            if value:
                text = text.replace(value, "<redacted>")
        return text


def read_secrets_file(path: Path) -> dict[str, str]:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("secrets file readable by others: mode set to 0600", path=str(path), mode=oct(mode))
            path.chmod(0o600)
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as err:
        raise ConfigError(f"secrets file {path}: cannot read ({err.strerror or type(err).__name__})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        # The parser's message may quote a line of the file: a secret. Name the file only.
        raise ConfigError(f"secrets file {path}: not valid TOML (NAME = \"value\" lines)") from None
    return {k: v for k, v in data.items() if isinstance(v, str)}


def load_credentials(acc: AccountSettings, base_dir: Path | None = None,
                     environ: dict[str, str] | None = None) -> Credentials:
    """The account's key, secret (and passphrase); a missing one is a ConfigError naming the variable."""
    env = os.environ if environ is None else environ
    from_file: dict[str, str] = {}
    if acc.secrets_file:
        path = Path(acc.secrets_file)
        from_file = read_secrets_file(path if path.is_absolute() or base_dir is None else base_dir / path)
    values = []
    names = [acc.api_key_env, acc.api_secret_env] + ([acc.api_passphrase_env] if acc.api_passphrase_env else [])
    for name in names:
        value = env.get(name or "") or from_file.get(name or "")
        if not value:
            where = f" or the secrets file {acc.secrets_file}" if acc.secrets_file else ""
            raise ConfigError(f"accounts ({acc.name}): {name} is not set in the environment{where}")
        values.append(value)
    return Credentials(*values)
