"""Experiment configs load, carry the paper's recipe, and take CLI overrides."""

import dataclasses
import inspect
import sys

import ml_collections
import pytest

from samjax import configs
from samjax.commands.train import load_config
from samjax.configs import schema
from samjax.model import configs as model_configs
from samjax.train.interactive import InteractiveConfig
from samjax.train.optimizer import make_optimizer

FILES = {name: f"experiments/configs/{name}.py" for name in configs.NAMES}

# tiny_demo's values before the schema existed (less the removed test hook
# testing_kill_at_step); lists are written as tuples.
TINY_DEMO_BEFORE = {
    "seed": 0, "model": {"variant": "vit_tiny", "overrides": {}},
    "init": {"kind": "scratch", "checkpoint": ""},
    "data": {"train_dir": "demo_out/data/train", "eval_dir": "demo_out/data/eval",
             "batch_size": 8, "eval_batch_size": 8, "max_masks": 8, "eval_max_masks": 8,
             "worker_count": 0},
    "sim": {"num_point_iters": 1, "num_mask_only_iters": 0, "point_prob": 0.5,
            "box_noise_frac": 0.1, "box_noise_max": 20.0, "focal_weight": 1.0,
            "dice_weight": 1.0, "iou_weight": 1.0},
    "total_steps": 800,
    "optim": {"lr": 1e-3, "warmup_steps": 30, "decay_steps": (700,), "decay_factor": 0.1,
              "b1": 0.9, "b2": 0.999, "weight_decay": 0.05, "layer_decay": 1.0,
              "grad_clip": 0.0},
    "mesh": {"shape": (-1, 1, 1), "dcn": (-1, 1, 1)}, "batch_axes": ("data", "fsdp"),
    "prompt_chunk": 0,
    "log_every": 25, "eval_every": 0, "eval_batches": None, "eval_at_start": True,
    "checkpoint_every": 200, "keep_checkpoints": 2, "async_checkpoints": True,
}

# sam_vit_b_sa1b's values before the schema existed.
VIT_B_BEFORE = {
    "seed": 0,
    "model": {"variant": "vit_b",
              "overrides": {"dtype": "bfloat16", "remat": True, "drop_path_rate": 0.6}},
    "init": {"kind": "mae", "checkpoint": ""},
    "data": {"train_dir": "", "eval_dir": "", "batch_size": 128, "eval_batch_size": 128,
             "max_masks": 64, "worker_count": 8},
    "sim": {"num_point_iters": 8, "num_mask_only_iters": 2, "point_prob": 0.5,
            "box_noise_frac": 0.1, "box_noise_max": 20.0, "focal_weight": 20.0,
            "dice_weight": 1.0, "iou_weight": 1.0},
    "total_steps": 180_000,
    "optim": {"lr": 8e-4, "warmup_steps": 250, "decay_steps": (120_000, 173_333),
              "decay_factor": 0.1, "b1": 0.9, "b2": 0.999, "weight_decay": 0.1,
              "layer_decay": 0.6, "grad_clip": 0.0},
    "mesh": {"shape": (1, -1, 1), "dcn": (-1, 1, 1)}, "batch_axes": ("data", "fsdp"),
    "prompt_chunk": 0,
    "log_every": 50, "eval_every": 5000, "eval_batches": 20, "eval_at_start": True,
    "checkpoint_every": 2000, "keep_checkpoints": 3, "async_checkpoints": True,
}


def _tuples(x):
  """Nested dicts with lists as tuples (the schema declares sequences as tuples)."""
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return tuple(_tuples(v) for v in x)
  return x


def _flat_keys(c, prefix=""):
  keys = set()
  for k in c:
    v = c[k]
    if isinstance(v, ml_collections.ConfigDict):
      keys |= _flat_keys(v, f"{prefix}{k}.")
    else:
      keys.add(f"{prefix}{k}")
  return keys


def _error(spec, overrides) -> str:
  with pytest.raises(ValueError) as e:
    load_config(spec, overrides)
  message = str(e.value)
  assert "\n" not in message and "Traceback" not in message
  return message


@pytest.mark.parametrize("variant, steps, batch, lr", [("b", 180_000, 128, 8e-4),
                                                        ("l", 180_000, 128, 4e-4),
                                                        ("h", 90_000, 256, 8e-4)])
@pytest.mark.parametrize("form", ["experiments/configs/sam_vit_{}_sa1b.py", "sam_vit_{}_sa1b"])
def test_paper_recipes(form, variant, steps, batch, lr):
  c = load_config(form.format(variant))
  assert (c.total_steps, c.data.batch_size, c.optim.lr) == (steps, batch, lr)
  assert c.sim.num_point_iters == 8 and c.sim.num_mask_only_iters == 2
  assert c.sim.focal_weight == 20.0 and c.optim.weight_decay == 0.1
  assert c.optim.warmup_steps == 250 and c.data.max_masks == 64
  # The best policy of `samjax plan --sweep` (was "block").
  assert c.model.scan_layers and c.model.remat_policy == "dots_saveable"
  assert c.microbatches == 0
  assert c.sim.eager_chunk_grads  # fastest by `samjax plan`
  assert c.decoder_form == "reference"  # the paper's math (docs/planning.md)
  local = load_config(form.format(variant) + ":local")
  assert local.total_steps == 10
  assert local.init.kind == "scratch" and local.model.overrides.dtype == "float32"


def test_overrides_are_typed_and_checked():
  c = load_config("experiments/configs/tiny_demo.py",
                  ["--config.total_steps=7", "--config.optim.lr=1", "--config.data.train_dir=/x"])
  assert c.total_steps == 7 and c.optim.lr == 1.0 and c.data.train_dir == "/x"
  assert isinstance(c.optim.lr, float)
  with pytest.raises(ValueError, match="no field"):
    load_config("experiments/configs/tiny_demo.py", ["--config.optim.nope=1"])
  with pytest.raises(ValueError, match="=value"):
    load_config("experiments/configs/tiny_demo.py", ["--config.total_steps"])
  with pytest.raises(FileNotFoundError):
    load_config("experiments/configs/absent.py")


@pytest.mark.parametrize("name", configs.NAMES)
@pytest.mark.parametrize("arg", ["", ":local"])
def test_names_and_thin_files_give_the_same_config(name, arg):
  path_before = list(sys.path)
  by_file = load_config(FILES[name] + arg)
  assert sys.path == path_before  # files load without sys.path changes
  by_name = load_config(name + arg)
  assert by_file.to_dict() == by_name.to_dict()
  assert by_name.is_locked and by_file.is_locked


def test_unknown_names_and_arguments_are_refused():
  message = _error("tiny_dmeo", [])
  assert "unknown config 'tiny_dmeo'" in message and "tiny_demo" in message
  assert "unknown argument '--foo'" in _error("tiny_demo", ["--foo"])
  assert "unknown argument '--noconfig.eval_at_start'" in _error(
      "tiny_demo", ["--noconfig.eval_at_start"])
  # The absl "--flag value" form would take the next argument as the value.
  assert _error("tiny_demo", ["--config.total_steps", "7"]) == (
      "--config.total_steps: missing =value (expected int)")
  with pytest.raises(ValueError, match="unknown config argument 'remote'"):
    load_config("sam_vit_b_sa1b:remote")


def test_file_configs_get_their_argument(tmp_path):
  path = tmp_path / "mine.py"
  path.write_text(
      "from samjax.configs import schema\n\n"
      "def get_config(arg=None):\n"
      "  c = schema.base_config()\n"
      "  c.data.train_dir = 'arg:' + repr(arg)\n"
      "  return c\n")
  assert load_config(str(path)).data.train_dir == "arg:None"
  assert load_config(f"{path}:abc").data.train_dir == "arg:'abc'"
  (tmp_path / "bad.py").write_text("def get_config():\n  return {'a': 1}\n")
  assert "not an ml_collections.ConfigDict" in _error(str(tmp_path / "bad.py"), [])
  (tmp_path / "untyped.py").write_text(
      "import ml_collections\n\n"
      "def get_config():\n"
      "  return ml_collections.ConfigDict({'a': None, 'l': [1, 2]})\n")
  assert "field a is None without a declared type" in _error(
      str(tmp_path / "untyped.py"), ["--config.a=1"])
  assert "cannot override field l of type list" in _error(
      str(tmp_path / "untyped.py"), ["--config.l=(3,4)"])
  (tmp_path / "none.py").write_text("x = 1\n")
  assert "has no get_config" in _error(str(tmp_path / "none.py"), [])


def test_bool_overrides():
  assert load_config("tiny_demo", ["--config.eval_at_start=false"]).eval_at_start is False
  c = load_config("tiny_demo", ["--config.eval_at_start=false", "--config.eval_at_start=true"])
  assert c.eval_at_start is True
  assert load_config("tiny_demo", ["--config.async_checkpoints=False"]).async_checkpoints is False
  # absl's bare boolean flag.
  c = load_config("tiny_demo", ["--config.eval_at_start=0", "--config.model.scan_layers"])
  assert c.eval_at_start is False and c.model.scan_layers is True
  assert _error("tiny_demo", ["--config.eval_at_start=maybe"]) == (
      "--config.eval_at_start=maybe: expected bool (true or false)")


def test_tuple_and_list_overrides():
  for text in ("(100,200)", "[100, 200]"):
    c = load_config("tiny_demo", [f"--config.optim.decay_steps={text}"])
    assert c.optim.decay_steps == (100, 200)
  assert load_config("tiny_demo", ["--config.optim.decay_steps=()"]).optim.decay_steps == ()
  # config_flags: a repeated tuple flag gives one element per occurrence.
  c = load_config("tiny_demo", ["--config.optim.decay_steps=5", "--config.optim.decay_steps=9"])
  assert c.optim.decay_steps == (5, 9)
  c = load_config("sam_vit_b_sa1b", ["--config.mesh.shape=(2, 4, 1)",
                                     "--config.batch_axes=('data',)"])
  assert c.mesh.shape == (2, 4, 1) and c.batch_axes == ("data",)


def test_typo_and_type_errors_are_one_line():
  assert _error("tiny_demo", ["--config.optim.nope=1"]) == (
      "--config.optim.nope=1: config has no field optim.nope")
  assert _error("tiny_demo", ["--config.optim.lrr=1"]) == (
      "--config.optim.lrr=1: config has no field optim.lrr (did you mean optim.lr?)")
  assert _error("tiny_demo", ["--config.nope.deeper=1"]) == (
      "--config.nope.deeper=1: config has no field nope")
  assert _error("tiny_demo", ["--config.seed.x=1"]) == (
      "--config.seed.x=1: config field seed holds a value (int), not fields")
  assert _error("tiny_demo", ["--config.total_steps=7", "--config.total_steps=abc"]) == (
      "--config.total_steps=abc: expected int")
  assert _error("tiny_demo", ["--config.total_steps=abc", "--config.total_steps=7"]) == (
      "--config.total_steps=abc: expected int")
  assert _error("tiny_demo", ["--config.total_steps=1.5"]) == (
      "--config.total_steps=1.5: expected int")
  assert _error("tiny_demo", ["--config.optim.lr=fast"]) == (
      "--config.optim.lr=fast: expected float")
  assert _error("tiny_demo", ["--config.optim.decay_steps=(1,"]) == (
      "--config.optim.decay_steps=(1,: expected tuple, e.g. '(1, 2)'")
  assert "expected a dict" in _error("tiny_demo", ["--config.model.overrides=fp32"])


def test_none_able_fields():
  c = load_config("tiny_demo")
  assert c.eval_batches is None and c.logical_rules is None
  c = load_config("tiny_demo", ["--config.eval_batches=3", "--config.data.eval_max_masks=5",
                                "--config.logical_rules=(('activation_batch', ('data', 'fsdp')),)"])
  assert c.eval_batches == 3 and c.data.eval_max_masks == 5
  assert c.logical_rules == (("activation_batch", ("data", "fsdp")),)
  # As in config_flags, a typed placeholder takes values of its type only.
  assert _error("tiny_demo", ["--config.eval_batches=None"]) == (
      "--config.eval_batches=None: expected int")
  assert load_config("sam_vit_b_sa1b").data.eval_max_masks is None
  # Python code may still set them back to None.
  c.eval_batches = None
  assert c.eval_batches is None


def test_model_overrides_reach_sam_config():
  c = load_config("sam_vit_b_sa1b", ["--config.model.overrides.dtype=float16",
                                     "--config.model.overrides.drop_path_rate=0"])
  assert c.model.overrides.dtype == "float16" and c.model.overrides.drop_path_rate == 0.0
  sam = model_configs.get_config(c.model.variant, **configs.model_overrides(c))
  assert sam.dtype == "float16" and sam.drop_path_rate == 0.0
  # A dict literal replaces the whole dict, as a Python config (or the conftest) may.
  c = load_config("tiny_demo", ["--config.model.overrides={'image_size': 128}"])
  assert dict(c.model.overrides) == {"image_size": 128}
  c.model.overrides = {"image_size": 64}
  assert dict(c.model.overrides) == {"image_size": 64}


def test_model_fields_outside_overrides_reach_sam_config():
  """scan_layers / remat_policy have fields of their own, so that a config
  replacing the whole ``overrides`` dict keeps them."""
  c = load_config("sam_vit_l_sa1b", ["--config.model.overrides={'image_size': 512}"])
  sam = model_configs.get_config(c.model.variant, **configs.model_overrides(c))
  assert (sam.image_size, sam.scan_layers, sam.remat_policy) == (512, True, "dots_saveable")


def _pop_later_defaults(c):
  """Fields added after the snapshot: removed, each checked at its default
  (the TFDS data source; the fine-tuning encoder lr; read threads by location)."""
  assert c["data"].pop("source") == "samjax"
  assert c["data"].pop("read_threads") == 0
  assert c["data"].pop("tfds_data_dir") == ""
  assert c["data"].pop("tfds_train_split") == "train"
  assert c["data"].pop("tfds_eval_split") == ""
  assert c["optim"].pop("image_encoder_lr_scale") == 1.0
  assert c.pop("decoder_form") == "reference"


def test_tiny_demo_is_unchanged():
  c = load_config("tiny_demo").to_dict()
  # Fields the schema added hold values that change nothing.
  overrides = c["model"].pop("overrides")
  assert model_configs.get_config("vit_tiny", **overrides) == model_configs.get_config("vit_tiny")
  assert (c["model"].pop("scan_layers"), c["model"].pop("remat_policy")) == (False, "none")
  assert c.pop("logical_rules") is None
  assert c.pop("min_sharded_bytes") == 4 * 2**20
  assert c["sim"].pop("eager_chunk_grads") is False
  assert c.pop("microbatches") == 1  # no gradient accumulation
  _pop_later_defaults(c)
  before = dict(TINY_DEMO_BEFORE, model={"variant": "vit_tiny"})
  assert _tuples(c) == _tuples(before)


def test_paper_recipe_is_unchanged():
  c = load_config("sam_vit_b_sa1b").to_dict()
  overrides = c["model"].pop("overrides")
  old = dict(VIT_B_BEFORE["model"]["overrides"])
  assert old.pop("remat") is True  # SamConfig's former switch: remat_policy now
  assert {k: overrides[k] for k in old} == old
  defaults = model_configs.SamConfig()
  assert all(v == getattr(defaults, k) for k, v in overrides.items() if k not in old)
  # remat_policy: "block" (remat=True) until `samjax plan --sweep` found
  # dots_saveable faster.
  assert (c["model"].pop("scan_layers"), c["model"].pop("remat_policy")) == (
      True, "dots_saveable")
  assert c.pop("logical_rules") is None and c["data"].pop("eval_max_masks") is None
  # Added for pod scale: decoder memory and the replication check. The
  # recipe recomputed its decoder passes until eager chunk gradients (same
  # loss and gradients, nothing recomputed) planned faster on every variant.
  assert c["sim"].pop("eager_chunk_grads") is True
  assert c.pop("min_sharded_bytes") == 4 * 2**20
  # One image per chip per microbatch (same gradient; compile time and memory).
  assert c.pop("microbatches") == 0
  _pop_later_defaults(c)
  before = dict(VIT_B_BEFORE, model={"variant": "vit_b"})
  assert _tuples(c) == _tuples(before)


@pytest.mark.parametrize("name", configs.NAMES)
def test_configs_have_exactly_the_schema_fields(name):
  assert _flat_keys(load_config(name)) == _flat_keys(schema.base_config())
  assert _flat_keys(load_config(name + ":local")) == _flat_keys(schema.base_config())


def test_schema_matches_the_code_it_configures():
  c = schema.base_config()
  assert set(c.sim) == {f.name for f in dataclasses.fields(InteractiveConfig)}
  InteractiveConfig(**dict(c.sim))  # the defaults are valid
  optim_args = inspect.signature(make_optimizer).parameters
  assert set(c.optim) == {n for n, p in optim_args.items() if p.kind is p.KEYWORD_ONLY}
  sam_fields = {f.name: f.default for f in dataclasses.fields(model_configs.SamConfig)}
  compute = set(sam_fields) - set(model_configs.SamConfig.ARCH_FIELDS)
  own = set(c.model) - {"variant", "overrides"}  # compute fields of their own
  assert own == {"scan_layers", "remat_policy"}
  assert set(c.model.overrides) == compute - own
  assert all(sam_fields[k] == v for k, v in c.model.overrides.items())
  assert all(c.model[name] == sam_fields[name] for name in own)
  for name in configs.NAMES:
    for spec in (name, name + ":local"):
      cfg = load_config(spec)
      model_configs.get_config(cfg.model.variant, **configs.model_overrides(cfg))
      InteractiveConfig(**dict(cfg.sim))


def test_configs_are_locked():
  c = load_config("tiny_demo")
  with pytest.raises(AttributeError, match="locked"):
    c.new_field = 1
  with pytest.raises(KeyError, match="locked"):
    c.optim["momentum"] = 0.9


def test_interactive_config_defaults_are_the_schema_sim():
  """The schema owns the simulation's defaults; InteractiveConfig reads them."""
  import dataclasses

  from samjax.configs.schema import base_config
  assert dataclasses.asdict(InteractiveConfig()) == dict(base_config().sim)
