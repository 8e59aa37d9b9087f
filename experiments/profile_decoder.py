"""Where a decode's time goes, per module, as the program really runs.

Times one mask-decoder call of the interactive predictor (one image, P
prompts, channels-last cached embedding and per-image decoder terms, as
``SamPredictor.predict`` runs it) with XLA's per-op trace
(``xla_op_profile.py``) and sums the ops by the model module they came
from: prompt encoder, each two-way block's four
attentions and MLP (image side: the 4096 image tokens; token side: the few
prompt tokens), the output upscaling, the hypernetwork heads.

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
  from samjax.inference.predictor import PROMPT_CHUNK
  model = build(args.variant)
  cfg = model.config
  rng = np.random.default_rng(0)
  params = random_params(model)  # decode time does not depend on the values
  g, c = cfg.embedding_size, cfg.prompt_embed_dim
  features = jnp.asarray(rng.normal(size=(1, g, g, c)).astype(np.float32))
  image_pe = jax.jit(model.dense_pe, static_argnums=1)(params, True)
  p = args.prompts
  coords = jnp.asarray(rng.uniform(0, cfg.image_size, (1, p, 1, 2)).astype(np.float32))
  labels = jnp.ones((1, p, 1), jnp.int32)
  chunk = args.chunk or PROMPT_CHUNK
  chunk = chunk if p > chunk and p % chunk == 0 else None
  # The first block's per-image terms, kept with the embedding as the
  # predictor keeps them (computed outside the profiled call).
  terms = jax.jit(model.decoder_image_terms)(params, features, image_pe)
  decode = jax.jit(lambda prm, f, xy, lab: model.decode(
      prm, f, xy, lab, image_pe=image_pe, channels_last=True, prompt_chunk=chunk,
      image_terms=terms))

  report = Report(f"profile_decoder {args.variant}, {p} prompt(s) per call",
                  f"host: {host_description()}",
                  "time per call of each module's ops (XLA CPU op trace, after fusion; "
                  "ops on the 2 threads summed, so the total exceeds the wall time)")
  rows = xla_op_profile.profile(decode, (params, features, coords, labels), runs=args.runs,
                                depth=args.depth, strip="Sam.decode/")
  report.say(f"{'module':60s} {'ms/call':>8s} {'share':>6s} {'ops':>4s}")
  total = rows[0][1]
  for name, ms, n in rows:
    report.say(f"{name:60s} {ms:8.2f} {ms / total:6.1%} {n:4d}")
  report.write(args.write, f"profile_decoder_{args.variant}_{p}prompts")


if __name__ == "__main__":
  main()
