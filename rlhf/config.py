"""Typed, validated configuration: dataclasses with a docstring per field.

Order of precedence: dataclass defaults < YAML file < CLI overrides `section.key=value`.
An unknown key, a value of the wrong type or an impossible value raises `ConfigError`
naming the key (and the file and line where it came from).

Each section is a dataclass; each field carries its documentation as an attribute docstring
(the string literal right below it), which `field_docs` reads back for `--help`.
A dataclass may define `check(self)` that calls `require(...)` for cross-field rules.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import inspect
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rlhf.files import write_atomic


class UserError(Exception):
    """An expected failure caused by the user's input or environment (a bad file, model folder,
    config value, a full disk...). The CLI prints its message as one line, no traceback; the
    message names the file and, where there is one, the line or key."""


class ConfigError(UserError, ValueError):
    """A bad configuration value; the message names the key and where it came from."""


def require(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError for `key` unless `ok` (used inside `check` methods)."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


# ----------------------------------------------------------------------------- the shared section


@dataclass
class RuntimeConfig:
    seed: int = 0
    """Seed for every random number generator (torch, numpy, python)."""
    threads: int = 1
    """torch intra-op threads on CPU; 0 leaves torch's default. 1 is the safe choice on a
    shared 2-core machine: 2 threads were 25-40% faster on a quiet one but 2.5x slower with
    one other busy process (measured: docs/speed.md)."""
    device: str = "auto"
    """'cpu', 'cuda', 'cuda:N' or 'auto' (cuda when available, else cpu)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """'bf16' runs the training forward passes (and policy sampling) under bf16 autocast;
    'auto' = bf16 on CUDA GPUs that support it, fp32 elsewhere. On CPUs with avx512_bf16/AMX
    'bf16' can pay off for larger models (measured 1.6x faster reward training at the 25M
    shape here; slower for tiny models, so 'auto' keeps CPUs on fp32)."""

    parallel: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun: 'ddp' keeps a full replica per process and all-reduces gradients;
    'fsdp' shards parameters, gradients and optimiser state over the processes (FSDP2, one
    unit per transformer block), for models that do not fit one device. One process: no
    effect."""
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = field(default_factory=list)
    """Trackers fed every metrics.jsonl row and the loop's round records (rank 0), in the run
    folder by default (docs/runs.md); [] = none. Each needs its library (`rlhf[trackers]`)."""

    def check(self) -> None:
        for name in self.report_to:  # one line now, not a traceback once the run has started
            require(importlib.util.find_spec(name) is not None, "report_to",
                    f"{name} needs `pip install {name}`")
        require(self.threads >= 0, "threads", "must be >= 0")
        require(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )


# ----------------------------------------------------------------------------- machinery


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass: {field name: text}, a subclass's own over
    those of the classes it extends."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(inspect.getsource(klass).lstrip())
        except (OSError, TypeError, IndentationError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def describe(cls: type, prefix: str = "") -> str:
    """Every key of a config class with its default and docstring (for --help)."""
    lines = []
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    obj = cls()
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            lines.append(describe(hints[f.name], prefix + f.name + "."))
        else:
            doc = docs.get(f.name, "").replace("\n", " ")
            lines.append(f"  {prefix}{f.name} = {value!r}\n      {doc}")
    return "\n".join(lines)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`, converting where it is lossless."""
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
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def shown_key(key: str) -> str:
    """A key as an error shows it: as written, or quoted with control characters escaped
    when it holds any (a key is the config file's text)."""
    return key if key.isprintable() else repr(key)


def from_dict(cls: type, data: dict, prefix: str = "", where: dict[str, str] | None = None):
    """Build dataclass `cls` from a nested dict, validating every key (recursively)."""
    where = where or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or '<top>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            full = prefix + str(key)
            raise ConfigError(f"{shown_key(full)}: unknown key{_at(where, full)}; valid keys "
                              f"here: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        full = prefix + key
        tp = hints[key]
        try:
            if dataclasses.is_dataclass(tp):
                # start from the parent's default for this section (its default_factory may
                # differ from the section class's own defaults), then apply the given keys
                base = _field_default(cls, key)
                merged = _deep_merge(to_dict(base), value or {}) if base is not None else value
                kwargs[key] = from_dict(tp, merged or {}, full + ".", where)
            else:
                kwargs[key] = _coerce(value, tp, full)
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg + _at(where, full) if " (" not in msg else msg) from None
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except ConfigError as e:
            key = str(e).split(":", 1)[0]
            raise ConfigError(f"{prefix}{e}{_at(where, prefix + key)}") from None
    return obj


def _field_default(cls: type, name: str):
    """The default value a dataclass gives field `name` (None when it has none)."""
    f = cls.__dataclass_fields__[name]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _deep_merge(base: dict, update: dict) -> dict:
    """`update` over `base`, recursively for nested mappings (unknown keys kept for errors)."""
    if not isinstance(update, dict):
        return update
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(out.get(k), dict) else v
    return out


def _at(where: dict[str, str], key: str) -> str:
    return f" ({where[key]})" if key in where else ""


def _yaml_positions(text: str, filename: str) -> dict[str, str]:
    """Map each dotted key of a YAML mapping to 'file:line'; a key given twice in one mapping
    is a ConfigError naming both lines (YAML itself would keep the last silently)."""
    out: dict[str, str] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = prefix + str(k.value)
                at = f"{filename}:{k.start_mark.line + 1}"
                if key in out:
                    raise ConfigError(f"{shown_key(key)}: duplicate key ({out[key]} and line "
                                      f"{k.start_mark.line + 1})")
                out[key] = at
                walk(v, key + ".")

    try:
        walk(yaml.compose(text), "")
    except yaml.YAMLError:
        pass
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.lr=3e-4' -> (['train', 'lr'], 3e-4). Values are parsed as YAML scalars."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):  # not a YAML value: taken as the text it is
        value = raw
    if isinstance(value, (dict,)) or (isinstance(value, str) and value != raw.strip()):
        value = raw
    return key.strip().split("."), value


def load_config(cls: type, path: str | os.PathLike | None = None,
                overrides: list[str] | tuple[str, ...] = ()):
    """Defaults < YAML file at `path` < `overrides` ('section.key=value'); validated."""
    data: dict = {}
    where: dict[str, str] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        text = _read_text(p)
        data = _parse_yaml(text, p)
        if data is None:
            raise ConfigError(f"{p}: the config file is empty (write {{}} to run with every "
                              "default)")
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of keys")
        where = _yaml_positions(text, str(p))
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for i, k in enumerate(keys[:-1]):
            if node.get(k) is not None and not isinstance(node[k], dict):
                key = ".".join(keys[:i + 1])
                raise ConfigError(f"{key}: expected a mapping of keys, got {node[k]!r}"
                                  f"{_at(where, key)} (overridden by {item!r})")
            if node.get(k) is None:
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
        where[".".join(keys)] = f"command-line override {item!r}"
    return from_dict(cls, data, "", where)


def yaml_error_line(e: yaml.YAMLError, p: Path) -> str:
    """A YAML parser's error as one line: file:line: what is wrong (the parser's own message
    spans several lines, with a picture of the place)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    at = f"{p}:{mark.line + 1}" if mark is not None else str(p)
    what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None))
                    if x) or str(e).splitlines()[0]
    return f"{at}: not valid YAML: {' '.join(what.split())}"


def _parse_yaml(text: str, p: Path):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(yaml_error_line(e, p)) from None
    except RecursionError:
        raise ConfigError(f"{p}: not valid YAML: nested too deeply") from None


def _read_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = p.read_bytes()[:e.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{line}: not UTF-8 text") from None


def require_fits(batch: int, available: int, key: str, what: str) -> None:
    """A batch cannot be larger than the data it is drawn from (checked once the data is
    read, by every stage): ConfigError naming the key and both numbers."""
    if batch > available:
        raise ConfigError(f"{key}: {batch} is more than the {available} {what}")


def with_keys(cfg, values: dict[str, Any], who: str = "the caller"):
    """A copy of config `cfg` with dotted keys set ({"data.paths": [...], "out_dir": ...}),
    validated again like a loaded one. How a parent stage hands a child its config: the child's
    type, with only the keys the parent decides set, in one call."""
    data = to_dict(cfg)
    where = {}
    for key, value in values.items():
        node, parts = data, key.split(".")
        for k in parts[:-1]:
            node = node[k]
        if parts[-1] not in node:
            raise ConfigError(f"{key}: not a key of {type(cfg).__name__}")
        node[parts[-1]] = to_dict(value) if dataclasses.is_dataclass(value) else value
        where[key] = f"set by {who}"
    return from_dict(type(cfg), data, "", where)


def get_key(cfg, key: str):
    """The value of dotted `key` in a config."""
    for k in key.split("."):
        cfg = getattr(cfg, k)
    return cfg


def to_dict(cfg) -> dict:
    """Plain nested dict of a config (for the run folder's resolved config)."""
    return dataclasses.asdict(cfg)


def save_config(cfg, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically)."""
    write_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def parse_cli(cls: type, prog: str, doc: str | None, argv: list[str]):
    """Every command's config: `prog [CONFIG.yaml | --config CONFIG.yaml] [key=value ...]` (not
    both; any order; a first argument with '=' that is not a file is an override) -> a validated
    `cls` (defaults < YAML < overrides). Own flags: `config_parser` + `config_from_args`."""
    return config_from_args(cls, config_parser(prog, cls, doc).parse_intermixed_args(argv))


def config_parser(prog: str, cls: type, doc: str | None,
                  parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser with the CONFIG (or --config PATH) and overrides of `parse_cli`."""
    p = parser or argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (section.key=value):\n" + describe(cls))
    p.add_argument("config", nargs="?", help=f"YAML file of {cls.__name__} keys")
    p.add_argument("--config", dest="config_flag", metavar="PATH", help="the same, as a flag")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    return p


def config_from_args(cls: type, a: argparse.Namespace, extra: list[str] | tuple = ()):
    """`cls` from parsed `config_parser` arguments, then `extra` overrides (flags)."""
    path, over = a.config, list(a.overrides)
    if path and "=" in path and not Path(path).is_file():
        path, over = None, [path, *over]
    if path and a.config_flag is not None:
        raise ConfigError(f"config given twice: {path} and --config {a.config_flag} (give one)")
    return load_config(cls, path or a.config_flag, [*over, *extra])
