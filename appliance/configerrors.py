"""Config errors as the user reads them: which file set the key, the key in dotted
form, what is wrong with it, and "did you mean" for a key that does not exist.
Secrets are never echoed. `root` is the schema's top model (config.Config)."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, SecretStr

from appliance.configshow import SECRET_MASK, redact_url


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(root, loc: tuple):
    """The schema class that holds the last element of loc (None if unknown)."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        model = _inner_model(fields[part].annotation)
    return model if hasattr(model, "model_fields") else None


def _inner_model(annotation):
    """Unwrap list[X] / X | None down to a pydantic model class, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _is_secret(root, loc: tuple) -> bool:
    names = [p for p in loc if isinstance(p, str)]
    model = _model_at(root, tuple(names))
    if model is None or not names:
        return False
    field = model.model_fields.get(names[-1])
    return field is not None and field.annotation is SecretStr


def describe(err: dict, origins: dict[tuple, str], root) -> str:
    """One pydantic error as the user reads it: the layer that set the key, the key,
    what is wrong, and for an unknown key the nearest allowed one."""
    loc = tuple(err["loc"])
    origin = "defaults"
    for n in range(len(loc), 0, -1):
        if loc[:n] in origins:
            origin = origins[loc[:n]]
            break
    key = _dotted(loc)
    if not loc:  # a rule across sections: its message names the keys
        return err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        model = _model_at(root, loc)
        allowed = sorted(model.model_fields) if model else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        msg = "unknown key" + (f'; did you mean "{hint[0]}"?' if hint else "")
        if allowed:
            msg += f" (allowed here: {', '.join(allowed)})"
        return f"{origin}: {key}: {msg}"
    value = err.get("input")
    if isinstance(value, (dict, list)):
        # A whole section or list: it may hold secrets, and the message says enough.
        return f"{origin}: {key}: {err['msg'].removeprefix('Value error, ')}"
    given = SECRET_MASK if _is_secret(root, loc) else repr(redact_url(value) if isinstance(value, str) else value)
    return f"{origin}: {key}: {err['msg'].removeprefix('Value error, ')} (got {given})"
