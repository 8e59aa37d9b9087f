"""The experiment-config schema: every field the training code reads, with its default.

``base_config()`` is the one place a field is declared. Experiment configs
(``sam_recipe``, ``tiny_demo``, user files) start from it and change values
only, so a config never lacks a field the code reads, and command-line
overrides (locked, type-checked) can reach every field. A field whose default
is None is declared with its type (``placeholder``) so that an override can
give it a value.

Defaults are the paper's shared settings (SAM appendix A) where the paper has
one, else the cheapest safe choice (float32, no remat, data parallelism,
in-process data loading, training from scratch).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
  """Every field of an experiment config, at its default."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # parameter init, data order and prompt sampling
  c.model = _model_fields()
  c.init = _init_fields()
  c.data = _data_fields()
  c.sim = sim_fields()
  c.total_steps = 180_000
  c.optim = _optim_fields()
  _add_parallelism_fields(c)
  _add_loop_fields(c)
  return c


def _model_fields() -> ml_collections.ConfigDict:
  """``config.model``: the architecture variant and its compute settings."""
  model = ml_collections.ConfigDict()
  model.variant = "vit_b"  # a name in samjax.model.configs.VARIANTS
  # SamConfig compute fields (they leave the parameters unchanged); the values
  # are SamConfig's defaults. A Python config may replace the whole dict (e.g.
  # with architecture fields such as image_size).
  model.overrides = ml_collections.ConfigDict({
      "dtype": "float32",                  # float32 | bfloat16 | float16 activations
      "attention_impl": "auto",            # auto | xla | chunked | cudnn
      "attention_query_chunk": 256,        # queries per block of chunked attention
      "drop_path_rate": 0.0,               # stochastic depth of the image encoder
  })
  model.scan_layers = False   # encoder blocks as one scanned layer (faster compiles)
  # What encoder blocks keep for the backward pass: none | block (recompute
  # each block) | dots_saveable | offload (SamConfig's docstring).
  model.remat_policy = "none"
  return model


def _init_fields() -> ml_collections.ConfigDict:
  """``config.init``: where the initial parameters come from."""
  init = ml_collections.ConfigDict()
  init.kind = "scratch"  # scratch | sam (fine-tune a SAM checkpoint) | mae (paper)
  init.checkpoint = ""   # the .pth / model dir / workdir of kind sam or mae
  return init


def _data_fields() -> ml_collections.ConfigDict:
  """``config.data``: the record source, batch sizes and loading."""
  data = ml_collections.ConfigDict()
  # Where the records come from (docs/data_tfds.md): "samjax" reads
  # train_dir / eval_dir below; "tfds:segment_anything" (or "tfds:NAME[:VERSION]")
  # reads a TFDS-prepared SA-1B in the ArrayRecord format (without TensorFlow)
  # from tfds_data_dir, splits tfds_train_split / tfds_eval_split. Batches are
  # the same for the same records whichever source feeds them.
  data.source = "samjax"
  data.train_dir = ""  # TFRecords from `samjax data convert` (source "samjax")
  data.eval_dir = ""   # held-out TFRecords; "" skips evaluation (source "samjax")
  data.tfds_data_dir = ""         # TFDS data_dir (tfds sources); "" = TFDS's default
  data.tfds_train_split = "train"  # TFDS split to train on, e.g. "train[:99%]"
  data.tfds_eval_split = ""        # held-out TFDS split, e.g. "train[99%:]"; "" skips
  data.batch_size = 128       # global images per step, over all processes
  data.eval_batch_size = 128  # global images per evaluation batch
  data.max_masks = 64         # masks sampled per training image (paper: 64)
  # Masks per held-out image; None uses max_masks. Set it to keep held-out
  # numbers comparable when max_masks changes.
  data.eval_max_masks = config_dict.placeholder(int)
  data.worker_count = 0  # grain worker processes; 0 loads in the training process
  # Records read at once per process (per worker with worker_count); 0: 16 for
  # a gs:// / s3:// data dir (requests take tens of ms), 2 for a local one.
  data.read_threads = 0
  return data


def sim_fields() -> ml_collections.ConfigDict:
  """``config.sim``: interactive prompt simulation and loss weights
  (InteractiveConfig)."""
  sim = ml_collections.ConfigDict()
  sim.num_point_iters = 8      # corrective clicks after the first prompt
  sim.num_mask_only_iters = 2  # passes fed only the previous mask: 0, 1 or 2
  sim.point_prob = 0.5         # first prompt is a point with this chance, else a box
  sim.box_noise_frac = 0.1     # box jitter: fraction of the side ...
  sim.box_noise_max = 20.0     # ... capped at this many pixels
  sim.focal_weight = 20.0
  sim.dice_weight = 1.0
  sim.iou_weight = 1.0
  # Take every decoder call's gradient right after its forward pass, one
  # prompt chunk at a time (a pass's loss is a sum over its chunks): the
  # decoder holds one chunk's activations and recomputes nothing. Without
  # it, 64 masks x 11 passes of stored decoder activations, not the
  # encoder, exhaust HBM (see `samjax plan`).
  sim.eager_chunk_grads = False
  return sim


def _optim_fields() -> ml_collections.ConfigDict:
  """``config.optim``: AdamW with layer-wise lr decay, linear warmup and step
  drops (samjax.train.optimizer.make_optimizer keyword arguments)."""
  optim = ml_collections.ConfigDict()
  optim.lr = 8e-4
  optim.warmup_steps = 250
  optim.decay_steps = ()  # steps at which lr is multiplied by decay_factor
  optim.decay_factor = 0.1
  optim.b1 = 0.9
  optim.b2 = 0.999
  optim.weight_decay = 0.1
  optim.layer_decay = 1.0  # lr * layer_decay ** (layers above): lower encoder layers learn slower
  optim.grad_clip = 0.0    # global-norm clip; 0 disables
  optim.image_encoder_lr_scale = 1.0  # encoder lr relative to the rest; 0 freezes it
  return optim


def _add_parallelism_fields(c: ml_collections.ConfigDict) -> None:
  """Adds ``config.mesh`` and the top-level fields that lay a step out over
  devices and memory: batch sharding, logical rules, prompt chunks, decoder
  form and microbatches."""
  c.mesh = ml_collections.ConfigDict()
  # (data, fsdp, model) device counts per slice (one slice: the whole mesh);
  # one -1 takes the remaining devices. Laid out along the chips' physical
  # links where they have any (samjax.mesh_devices).
  c.mesh.shape = (-1, 1, 1)
  # Multi-slice: (data, fsdp, model) slice counts over the data-center network
  # (TPU slices; GPU hosts, one process each, when given without -1); -1
  # takes the rest. The default puts every slice on data: only the gradient
  # reduction crosses the slow network.
  c.mesh.dcn = (-1, 1, 1)
  c.batch_axes = ("data", "fsdp")  # mesh axes the batch dimension is split over
  # (logical axis, mesh axis or None) pairs; None uses
  # samjax.logical_axes.DEFAULT_LOGICAL_RULES.
  c.logical_rules = config_dict.placeholder(tuple)
  # Any param / optimizer leaf above this many bytes must be split over the
  # fsdp or model axis when the mesh has one (no silent replication of a big
  # tree); 0 turns the check off.
  c.min_sharded_bytes = 4 * 2**20
  c.prompt_chunk = 0  # masks per decoder call; 0 decodes all masks of a batch at once
  # The decoder's form in training (samjax.decoding.training): "reference"
  # (the model's math) or "factorized" (same values, cross-attention
  # re-associated for few prompt tokens); docs/planning.md compares them.
  c.decoder_form = "reference"
  # Gradient accumulation: each step's batch runs as this many sequential
  # microbatches (same gradient; one microbatch's activations and program, so
  # less memory and a shorter compile). 1 = off; 0 = one image per batch shard
  # in each microbatch (as many microbatches as images per device).
  c.microbatches = 1


def _add_loop_fields(c: ml_collections.ConfigDict) -> None:
  """Adds the training loop's top-level cadence fields: metric logging,
  held-out evaluation and checkpoints."""
  c.log_every = 50           # steps between metric lines
  c.eval_every = 5000        # steps between held-out evaluations; 0: only at the end
  # Held-out batches per evaluation; None evaluates the whole held-out set.
  c.eval_batches = config_dict.placeholder(int)
  c.eval_at_start = True     # evaluate the initial parameters too (the baseline)
  c.checkpoint_every = 2000  # steps between checkpoints (also at the end and on SIGTERM)
  c.keep_checkpoints = 3     # newest checkpoints kept on disk
  c.async_checkpoints = True  # write checkpoints while training goes on


def check_data_source(config):
  """Validates ``config.data``'s source fields; returns the parsed source
  (``data_pipelines.tfds_source.SourceSpec``).

  Raises ValueError, one line, for an unknown ``data.source`` or fields of
  the other kind of source (``train_dir`` / ``eval_dir`` with a tfds source,
  ``tfds_*`` with "samjax"), so that neither is silently ignored.
  """
  from data_pipelines.tfds_source import SAMJAX, parse_source
  d = config.data
  spec = parse_source(d.source)
  if spec.kind == SAMJAX:
    stray = [f"data.{k}" for k in ("tfds_data_dir", "tfds_eval_split") if d[k]]
    if stray:
      raise ValueError(f"{', '.join(stray)} set, but data.source is 'samjax' (they are "
                       "read only by data.source='tfds:NAME'); clear them or set data.source")
  else:
    stray = [f"data.{k}" for k in ("train_dir", "eval_dir") if d[k]]
    if stray:
      raise ValueError(f"{', '.join(stray)} set, but data.source is {d.source!r}: a TFDS "
                       "dataset is read from data.tfds_data_dir, splits "
                       "data.tfds_train_split / data.tfds_eval_split; clear "
                       f"{' and '.join(stray)}")
    if not d.tfds_train_split:
      raise ValueError(f"data.source is {d.source!r} but data.tfds_train_split is empty")
  return spec


def model_overrides(config) -> dict:
  """SamConfig keyword overrides of ``config.model``: ``model.overrides`` plus
  every other field of ``config.model`` but ``variant`` (``scan_layers``,
  ``remat_policy``: fields of their own because a Python config may replace
  the whole ``overrides`` dict)."""
  model = config.model
  own = {name: model[name] for name in model if name not in ("variant", "overrides")}
  return {**model.overrides, **own}
