"""The configuration as it may be shown (a log line, a status, `appliance config
show`): secrets masked, URLs with their secret parts masked, and TOML out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

SECRET_MASK = "********"
# Query keys of a URL whose values are secrets (SRT's streamid often is a publish key).
SECRET_QUERY = ("streamid", "passphrase", "key", "token", "secret", "password", "pass")
_QUERY_SECRET = re.compile(r"([?&](?:" + "|".join(SECRET_QUERY) + r")=)[^&#]*", re.I)
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://[^/@:]*):[^/@]*@", re.I)


def redact_url(url: str) -> str:
    """The URL fit for a log line, a status or `config show`: secret query values and a
    password in the userinfo masked; the rest as given."""
    return _USERINFO.sub(rf"\1:{SECRET_MASK}@", _QUERY_SECRET.sub(rf"\g<1>{SECRET_MASK}", url))


def masked(config: BaseModel) -> dict[str, Any]:
    """The config as plain data with every secret replaced by a mask (or "")."""

    def walk(value):
        if isinstance(value, SecretStr):
            return SECRET_MASK if value.get_secret_value() else ""
        if isinstance(value, str) and "://" in value:
            return redact_url(value)
        if isinstance(value, BaseModel):
            return {name: walk(getattr(value, name)) for name in type(value).model_fields}
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return walk(config)


def to_toml(data: dict[str, Any]) -> str:
    """Render plain config data as TOML (tables last, None left out)."""
    lines: list[str] = []

    def scalar(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {scalar(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    def table(name: str, d: dict, array: bool = False) -> None:
        plain = {k: v for k, v in d.items() if v is not None and not _is_table(v)}
        tables = {k: v for k, v in d.items() if _is_table(v)}
        if name:
            lines.append(("\n[[%s]]" if array else "\n[%s]") % name)
        for k, v in plain.items():
            lines.append(f"{k} = {scalar(v)}")
        for k, v in tables.items():
            sub = f"{name}.{k}" if name else k
            if isinstance(v, list):
                for item in v:
                    table(sub, item, array=True)
            else:
                table(sub, v)

    table("", data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(v) -> bool:
    return isinstance(v, dict) or (isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v))
