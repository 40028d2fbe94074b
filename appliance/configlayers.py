"""The configuration's layers merged into one, remembering which layer set each key
(so that every error names the file to fix)."""

from __future__ import annotations

from typing import Any


def merge_layers(layers: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], dict[tuple, str]]:
    """Deep-merge dicts, later layers winning; remember which layer set each key.

    Lists (the encoder ladder, audio tracks) are replaced whole, not merged:
    half of a profile's ladder and half of a site's would make no sense.
    """
    merged: dict[str, Any] = {}
    origins: dict[tuple, str] = {}

    def walk(dst: dict, src: dict, prefix: tuple, origin: str) -> None:
        for key, value in src.items():
            loc = prefix + (key,)
            if isinstance(value, dict) and isinstance(dst.get(key), dict):
                walk(dst[key], value, loc, origin)
            else:
                dst[key] = _copy(value)
                origins[loc] = origin
                for sub in _sub_locs(value, loc):
                    origins[sub] = origin

    for origin, data in layers:
        walk(merged, data, (), origin)
    return merged, origins


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _sub_locs(value, loc):
    if isinstance(value, dict):
        for k, v in value.items():
            yield loc + (k,)
            yield from _sub_locs(v, loc + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield loc + (i,)
            yield from _sub_locs(v, loc + (i,))
