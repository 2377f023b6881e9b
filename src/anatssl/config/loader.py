"""YAML / dotlist loading into dataclasses, with errors that name the key and list the valid ones."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from anatssl.errors import ConfigError

T = TypeVar("T")

_MISSING = object()


def preset_path(kind: str, name: str) -> Path:
    """``configs/<kind>/<name>.yaml`` shipped inside the package."""
    root = resources.files("anatssl") / "configs" / kind
    return Path(str(root / f"{name}.yaml"))


def available_presets(kind: str, prefix: str = "") -> list[str]:
    root = Path(str(resources.files("anatssl") / "configs" / kind))
    return sorted(p.stem[len(prefix) :] for p in root.glob(f"{prefix}*.yaml"))


def read_preset(kind: str, prefix: str, preset: str, what: str) -> dict[str, Any]:
    """``configs/<kind>/<prefix><preset>.yaml`` as a dict; a missing one is a ConfigError listing the rest.

    ``what`` names the preset in the message, e.g. ``"preset 'huge' for method 'swinssl'"``.
    """
    path = preset_path(kind, f"{prefix}{preset}")
    if not path.is_file():
        have = available_presets(kind, prefix)
        raise ConfigError(
            f"no {what} ({path.name} not found); available presets: {', '.join(have) or '(none)'}"
        )
    return read_yaml(path)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {path} is not a YAML text file (byte {e.start} is not UTF-8); pass the .yaml file"
        ) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping at the top level, got {type(data).__name__}"
        )
    return data


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["train.max_steps=20", "seed=1"]`` -> nested dict; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.max_steps=20)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse value {raw!r}: {e}") from e
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {p!r}")
        node[parts[-1]] = value
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check / convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{where}: {value!r} does not fit {_type_name(tp)}"
        )
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} = {value!r}; valid values: {', '.join(map(str, args))}")
        return value
    if origin in (tuple, list) or tp in (tuple, list):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and args and args[-1] is Ellipsis:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where} needs {len(args)} values, got {len(value)}: {value!r}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        elem = args[0] if args else Any
        seq = [_coerce(v, elem, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if (origin is tuple or tp is tuple) else seq
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def derived(doc: str = "") -> Any:
    """A field whose default is derived from other fields in ``__post_init__`` (YAML ``null`` or absent:
    derive it). Its annotation is the resolved type, so code using it needs no casts."""
    return dataclasses.field(default=None, metadata={"derived": True, "doc": doc})


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def setting(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A field whose range the loader checks, declared next to it: ``ckpt_every: int = setting(500, ge=1)``.

    Every element of a tuple/list value is checked; ``None`` (an optional field left unset) passes.
    Relations between fields belong in the dataclass's ``__post_init__`` (a ValueError there becomes a
    ConfigError naming the section) or the config's ``check_*`` function."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return dataclasses.field(default=default, metadata={"range": bounds})


def check_range(value: Any, bounds: Mapping[str, float], where: str) -> None:
    """ConfigError ``"train.ckpt_every must be >= 1, got 0"`` unless ``value`` (each element) is in bounds."""
    if value is None or not bounds:
        return
    values = value if isinstance(value, list | tuple) else [value]
    ok = {
        "ge": lambda v, b: v >= b,
        "gt": lambda v, b: v > b,
        "le": lambda v, b: v <= b,
        "lt": lambda v, b: v < b,
    }
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if not all(ok[k](v, b) for k, b in bounds.items()):  # NaN fails every comparison
            rule = " and ".join(f"{sym} {bounds[k]:g}" for k, sym in _BOUNDS if k in bounds)
            shown = list(value) if isinstance(value, tuple) else value
            what = f"every value of {where}" if value is not v else where
            raise ConfigError(f"{what} must be {rule}, got {shown!r}")


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``: unknown keys and bad types are ConfigErrors."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!r}; valid keys{' of ' + where if where else ''}: "
            f"{', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        if value is None and fields[name].metadata.get("derived"):
            kwargs[name] = None  # resolved by the dataclass's __post_init__
            continue
        kwargs[name] = _coerce(value, hints[name], key)
        check_range(kwargs[name], fields[name].metadata.get("range", {}), key)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain YAML-able dict (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def save_yaml(data: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(dict(data), sort_keys=False))
