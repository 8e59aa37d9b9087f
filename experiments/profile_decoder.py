"""Where a decode's time goes, per module, as the program really runs.

Times one ``InteractivePlan.decode`` call (one image, P prompts, on an
``ImageState`` prepared outside the profiled call, as ``SamPredictor.predict``
runs it) with XLA's per-op trace (``xla_op_profile.py``) and sums the ops by
the module they came from. Rows are named by the plan's modules:
``Sam.embed_prompts/...`` (prompt encoder) and ``FactorizedMaskDecoder/...``:
each two-way block's four attentions and MLP (image side: the 4096 image
tokens; token side: the few prompt tokens), the output upscaling, the
hypernetwork heads.

  python experiments/profile_decoder.py                  # ViT-B, 1 click
  python experiments/profile_decoder.py --prompts 64     # 64 prompts in one call
  python experiments/profile_decoder.py --write experiments/results
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xla_op_profile

xla_op_profile.ensure_trace_flag()  # before jax starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from bench_common import Report, host_description, make_parser, random_params  # noqa: E402


def main(argv=None):
  ap = make_parser(__doc__, variant="vit_b", runs=10, runs_help="profiled calls")
  ap.add_argument("--prompts", type=int, default=1, help="prompts per call (1 = a click)")
  ap.add_argument("--chunk", type=int, default=None,
                  help="prompts per decoder step (default: the predictor's PROMPT_CHUNK)")
  ap.add_argument("--depth", type=int, default=4, help="module path components per row")
  args = ap.parse_args(argv)

  from samjax import build
  from samjax.decoding.interactive import InteractivePlan
  from samjax.inference.predictor import PROMPT_CHUNK
  from samjax.model.prompts import Prompts
  model = build(args.variant)
  cfg = model.config
  rng = np.random.default_rng(0)
  params = random_params(model)  # decode time does not depend on the values
  g, c = cfg.embedding_size, cfg.prompt_embed_dim
  embeddings = jnp.asarray(rng.normal(size=(1, c, g, g)).astype(np.float32))
  p = args.prompts
  coords = jnp.asarray(rng.uniform(0, cfg.image_size, (1, p, 1, 2)).astype(np.float32))
  labels = jnp.ones((1, p, 1), jnp.int32)
  chunk = args.chunk or PROMPT_CHUNK
  plan = InteractivePlan(model, chunk if p > chunk and p % chunk == 0 else 0)
  # The per-image state (channels-last embedding, PE, first-block terms),
  # prepared outside the profiled call as the predictor prepares it.
  state = jax.jit(plan.prepare)(params, embeddings)
  decode = jax.jit(lambda prm, st, xy, lab: plan.decode(prm, st, Prompts.create(xy, lab)))

  report = Report(f"profile_decoder {args.variant}, {p} prompt(s) per call",
                  f"host: {host_description()}",
                  "time per call of each module's ops (XLA CPU op trace, after fusion; "
                  "ops on the 2 threads summed, so the total exceeds the wall time)")
  rows = xla_op_profile.profile(decode, (params, state, coords, labels), runs=args.runs,
                                depth=args.depth)
  report.say(f"{'module':60s} {'ms/call':>8s} {'share':>6s} {'ops':>4s}")
  total = rows[0][1]
  for name, ms, n in rows:
    report.say(f"{name:60s} {ms:8.2f} {ms / total:6.1%} {n:4d}")
  report.write(args.write, f"profile_decoder_{args.variant}_{p}prompts")


if __name__ == "__main__":
  main()
