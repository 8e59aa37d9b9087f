"""Activation and parameter logical axis names stay apart (MaxText style).

Traces (``jax.eval_shape``: nothing compiles or runs) the whole model, both
encoder layouts and both training decoder forms, recording every logical
constraint applied, so an activation annotated with a parameter name (which
would silently pick up the parameter's sharding rule) fails here.
"""

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from samjax import build
from samjax import logical_axes as la
from samjax.decoding.training import TrainingPlan
from samjax.model.prompts import Prompts

# Constraint call sites the traced paths reach: the image encoder's input and
# block outputs, the reference decoder's (sam.py, mask_decoder.py) and the
# factorized decoder's two. Fewer means the test stopped tracing something.
MIN_CALL_SITES = 6


def _call_site():
  """file:line of the model code that asked for the constraint."""
  frame = sys._getframe(2)
  while frame.f_code.co_filename.endswith("logical_axes.py"):
    frame = frame.f_back
  return f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"


def _prompts(b=2, m=3):
  coords = jnp.full((b, m, 2, 2), 100.0)
  labels = jnp.ones((b, m, 2), jnp.int32)
  boxes = jnp.tile(jnp.array([10.0, 20.0, 200.0, 220.0]), (b, m, 1))
  return Prompts.create(coords, labels, boxes, jnp.zeros((b, m, 64, 64)))


def _trace_everything(model):
  """Traces init (the full forward), the encoder and every training decoder form."""
  params = model.param_shapes()
  images = jax.ShapeDtypeStruct((2, 3, 256, 256), jnp.float32)
  model.logical_axes()                                         # init traces __call__
  emb = jax.eval_shape(model.embed_images, params, images)
  prompts = _prompts()
  for form in ("reference", "factorized"):
    jax.eval_shape(TrainingPlan(model, decoder_form=form).predict_masks, params, emb, prompts)


def test_constraints_use_activation_names_and_params_use_param_names(monkeypatch):
  seen = {}
  original = nn.with_logical_constraint

  def recording(x, names, *args, **kwargs):
    seen.setdefault(_call_site(), set()).add(tuple(names))
    return original(x, names, *args, **kwargs)

  # `constrain` looks the function up on flax.linen at call time; a direct
  # `nn.with_logical_constraint` in model code is recorded too.
  monkeypatch.setattr(nn, "with_logical_constraint", recording)
  models = [build("vit_tiny"), build("vit_tiny", scan_layers=True)]
  for model in models:
    _trace_everything(model)

  assert len(seen) >= MIN_CALL_SITES, sorted(seen)
  rule_names = {name for name, _ in la.DEFAULT_LOGICAL_RULES}
  for site, patterns in seen.items():
    for names in patterns:
      used = {n for n in names if isinstance(n, str)}
      assert used, (site, names)                               # a constraint that shards
      assert used <= la.ACTIVATION_AXIS_NAMES, (site, names)
      assert used <= rule_names, (site, names)

  is_spec = lambda x: isinstance(x, P)
  for model in models:
    for spec in jax.tree_util.tree_leaves(model.logical_axes(), is_leaf=is_spec):
      used = {n for n in spec if isinstance(n, str)}
      assert used <= la.PARAM_AXIS_NAMES, spec
      assert used <= rule_names, spec


def test_rule_table_has_two_disjoint_parts_and_keeps_the_old_shardings():
  names = [name for name, _ in la.DEFAULT_LOGICAL_RULES]
  assert len(names) == len(set(names))
  assert set(names) == la.PARAM_AXIS_NAMES | la.ACTIVATION_AXIS_NAMES
  assert not la.PARAM_AXIS_NAMES & la.ACTIVATION_AXIS_NAMES
  rules = la.DEFAULT_LOGICAL_RULES
  # What activations and kernels got when they shared `batch` / `embed`.
  act = nn.logical_to_mesh_axes(
      ("activation_batch", "activation_length", "activation_embed"), rules)
  assert act == P(("data", "fsdp"), None, None)
  assert nn.logical_to_mesh_axes(("embed", "qkv"), rules) == P("fsdp", "model")
  assert nn.logical_to_mesh_axes(("mlp", "embed"), rules) == P("model", "fsdp")


def test_helpers_refuse_the_other_kind_of_name():
  with pytest.raises(ValueError, match="activation logical axes.*'embed'"):
    la.constrain(jnp.zeros((2, 4)), ("activation_batch", "embed"))
  with pytest.raises(ValueError, match="parameter logical axes.*'activation_embed'"):
    la.param_init(nn.initializers.zeros, ("activation_embed", "mlp"))


def test_rules_naming_unknown_axes_are_refused():
  """A config's rule for a name no module uses (e.g. `batch`, the activation
  name before the split) would be ignored by flax without a word."""
  assert la.validate_rules(la.DEFAULT_LOGICAL_RULES) == la.DEFAULT_LOGICAL_RULES
  assert la.validate_rules([["activation_batch", "data"]]) == (("activation_batch", "data"),)
  with pytest.raises(ValueError, match=r"unknown axes \['batch'\]"):
    la.validate_rules((("batch", "data"), ("embed", "fsdp")))
