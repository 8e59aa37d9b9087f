"""Experiment configs: one schema, named configs, and command-line overrides.

``load_config(spec, overrides)`` gives the locked ml_collections ConfigDict
that ``samjax train`` runs. ``spec`` is a registered name (``NAMES``) or the
path of a ``.py`` file whose ``get_config(arg)`` returns a ConfigDict (best
built on ``schema.base_config()``), either optionally followed by ``:ARG``
(``sam_vit_h_sa1b:local``, ``experiments/configs/tiny_demo.py:local``).

Overrides are ``--config.a.b=value`` strings parsed exactly as
``ml_collections.config_flags`` parses them (on a private absl FlagValues):
the value is parsed by the field's type (``true``/``false`` for bools,
``'(1, 2)'`` or ``'[1, 2]'`` for tuples, ints into floats), a field declared
as a typed placeholder takes a value of that type, and the locked config
refuses fields it lacks. Every failure is a one-line ValueError naming the
override, the field and the expected type.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import re
from collections.abc import Sequence

from data_pipelines import storage

# name -> "module:function"; the function takes the optional ":ARG" string.
REGISTRY = {
    "sam_vit_b_sa1b": "samjax.configs.sam_recipe:vit_b",
    "sam_vit_l_sa1b": "samjax.configs.sam_recipe:vit_l",
    "sam_vit_h_sa1b": "samjax.configs.sam_recipe:vit_h",
    "tiny_demo": "samjax.configs.tiny_demo:get_config",
    "sam_finetune_coco": "samjax.configs.sam_finetune_coco:get_config",
}
NAMES = tuple(REGISTRY)

PREFIX = "--config."


def base_config():
  """The schema: every field at its default (``schema.base_config``)."""
  from samjax.configs.schema import base_config as base
  return base()


def model_overrides(config) -> dict:
  """SamConfig keyword overrides of ``config.model`` (``schema.model_overrides``)."""
  from samjax.configs.schema import model_overrides as overrides
  return overrides(config)


def get_config(spec: str):
  """The unlocked, un-overridden config of a registered name or file, ``[:ARG]``."""
  base, sep, arg = _split_spec(spec)
  # As config_flags does: get_config() without ":", get_config(ARG) with it.
  args = (arg,) if sep else ()
  if base in REGISTRY:
    module, _, function = REGISTRY[base].partition(":")
    make = getattr(importlib.import_module(module), function)
    source = f"config {base!r}"
  elif base.endswith(".py") or os.sep in base or storage.exists(base):
    make = _file_get_config(base)
    source = base
  else:
    raise ValueError(f"unknown config {base!r}: expected a registered name "
                     f"({', '.join(NAMES)}) or a .py file")
  config = make(*args)
  import ml_collections
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f"{source}: get_config returned {type(config).__name__}, "
                     "not an ml_collections.ConfigDict")
  return config


def load_config(spec: str, overrides: Sequence[str] = ()):
  """``spec`` (name or file, ``[:ARG]``) + ``['--config.a.b=value', ...]`` ->
  the locked ConfigDict, overrides applied as ``config_flags`` applies them.
  The data source fields are checked here, so a wrong source fails before
  any model is built."""
  from samjax.configs.schema import check_data_source
  config = apply_overrides(get_config(spec), overrides)
  check_data_source(config)
  return config


def _split_spec(spec: str) -> tuple[str, str, str]:
  """(name or file, ":" or "", ARG): the ``:`` of ``gs://`` / ``s3://`` is
  part of the file, not the start of ARG."""
  scheme, sep, rest = spec.partition("://")
  if sep and "/" not in scheme and ":" not in scheme:
    base, colon, arg = rest.partition(":")
    return scheme + sep + base, colon, arg
  return spec.partition(":")


def _file_get_config(path: str):
  """``get_config`` of a config file (local, ``gs://`` or ``s3://``), imported
  without touching sys.path."""
  if not storage.isfile(path):
    raise FileNotFoundError(f"no such config file: {path}")
  name = "samjax_config_" + re.sub(r"\W", "_", storage.splitext(storage.basename(path))[0])
  # A bucket's file is imported from a local copy (importlib reads files only).
  with storage.local_copy(path) as local:
    spec = importlib.util.spec_from_file_location(name, local)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  if not callable(getattr(module, "get_config", None)):
    raise ValueError(f"{path} has no get_config(arg)")
  return module.get_config


def apply_overrides(config, overrides: Sequence[str] = ()):
  """Locks ``config`` and applies ``--config.a.b=value`` overrides to it with
  ``ml_collections.config_flags``; returns it."""
  from absl import flags
  from ml_collections import config_flags

  overrides = list(overrides)
  for i, item in enumerate(overrides):
    _check_override(config, item, overrides[i - 1] if i else None)
  argv = ["samjax", *overrides]
  fv = flags.FlagValues()
  try:
    holder = config_flags.DEFINE_config_dict("config", config, flag_values=fv,
                                             lock_config=True, sys_argv=argv)
    fv(argv)
  except (flags.Error, TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
    raise ValueError(_explain(config, overrides, e)) from None
  return holder.value


def _split(item: str) -> tuple[str, bool]:
  """(dotted field path, whether '=value' is present) of an override."""
  key, sep, _ = item[len(PREFIX):].partition("=")
  return key, bool(sep)


def _check_override(config, item: str, previous: str | None) -> None:
  """Refuses what config_flags would answer with a traceback or a puzzle:
  other arguments, fields the config lacks, a missing '=value'."""
  if not item.startswith(PREFIX):
    if previous is not None and previous.startswith(PREFIX) and not _split(previous)[1]:
      raise ValueError(f"unknown argument {item!r}: write {previous}={item}")
    raise ValueError(f"unknown argument {item!r} (overrides look like --config.a.b=value)")
  key, has_value = _split(item)
  node, path = config, []
  for name in key.split("."):
    if "[" in name:  # an indexed path: config_flags resolves (and reports) it
      return
    if not _is_config_dict(node):
      raise ValueError(f"{item}: config field {'.'.join(path)} holds a value "
                       f"({type(node).__name__}), not fields")
    if not name or name not in node:
      field = ".".join([*path, name])
      near = difflib.get_close_matches(name, [str(k) for k in node], 1)
      hint = f" (did you mean {'.'.join([*path, near[0]])}?)" if near else ""
      raise ValueError(f"{item}: config has no field {field}{hint}")
    parent, node = node, node[name]
    path.append(name)
  if not has_value and parent.get_type(path[-1]) is not bool:
    # absl would take the next argument as the value (or say "Missing value").
    raise ValueError(f"{item}: missing =value (expected "
                     f"{_describe(parent.get_type(path[-1]))})")


def _is_config_dict(node) -> bool:
  import ml_collections
  return isinstance(node, ml_collections.ConfigDict)


def _describe(field_type) -> str:
  import ml_collections
  if isinstance(field_type, type) and issubclass(field_type, ml_collections.ConfigDict):
    return "a dict, e.g. \"{'a': 1}\""
  return {bool: "bool (true or false)", int: "int", float: "float", str: "str",
          tuple: "tuple, e.g. '(1, 2)'"}.get(field_type, getattr(field_type, "__name__",
                                                                  str(field_type)))


def _field_type(config, key: str):
  """The declared type of a dotted field, or None where it cannot be found."""
  try:
    node = config
    *parents, leaf = key.split(".")
    for name in parents:
      node = node[name]
    return node.get_type(leaf)
  except (KeyError, AttributeError, TypeError):
    return None


def _explain(config, overrides: list[str], error: Exception) -> str:
  """One line for an error config_flags (or absl) raised on ``overrides``."""
  text = str(error).strip().strip("'\"")
  # absl names the flag "--config.a.b"; config_flags' own errors "config.a.b".
  match = re.search(r"(?<![\w.])-{0,2}config\.([\w.\[\]]+)", text)
  key = match.group(1) if match else None
  # The failing override: absl quotes it whole ("flag --config.a=x: ..."); else
  # the last override of the field.
  same = [o for o in overrides if key and _split(o)[0] == key]
  item = next((o for o in same if o in text), same[-1] if same else None)
  field_type = _field_type(config, key) if key else None
  if item and field_type is type(None):
    return (f"{item}: field {key} is None without a declared type (declare it with "
            "ml_collections.config_dict.placeholder(TYPE))")
  from ml_collections.config_flags.config_flags import UnsupportedOperationError
  if item and isinstance(error, UnsupportedOperationError):
    hint = " (declare it as a tuple)" if field_type is list else ""
    return (f"{item}: config_flags cannot override field {key} of type "
            f"{getattr(field_type, '__name__', field_type)}{hint}")
  if item and field_type is not None and not isinstance(error, (TypeError, KeyError)):
    if "Missing value" in text:
      return f"{item}: missing =value (expected {_describe(field_type)})"
    return f"{item}: expected {_describe(field_type)}"
  first = text.splitlines()[0] if text else type(error).__name__
  return f"{item or ' '.join(overrides)}: {first}"
