"""Where the image encoder's time goes: one windowed block, one global block and
their parts, each timed alone at the model's real shapes, next to XLA's matmul
rate on the same shapes.

Every part is a separately jitted function on random inputs of the shapes it
sees inside the encoder (ViT-B at 1024 px: 64x64 tokens, 768 channels, 12
heads; windowed blocks pad the grid to 70x70 = 25 windows of 14x14). FLOPs
are counted analytically (matmuls and attention products only, 2 per
multiply-add), so loops inside a part (the chunked global attention) are
counted at their trip count. "rate" is the part's FLOP/s as a fraction of
XLA's measured rate for the part's own dominant matmul shape.

  python experiments/profile_encoder.py                 # ViT-B
  python experiments/profile_encoder.py --variant vit_h --write experiments/results
"""

from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xla_op_profile

xla_op_profile.ensure_trace_flag()  # before jax starts

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from bench_common import (  # noqa: E402
  Report,
  host_description,
  make_parser,
  matmul_rates,
  random_params,
  time_calls,
)


def _applier(module):
  """(params, x) -> module output, for jit."""
  return lambda p, x: module.apply({"params": p}, x)


def _timed(fn, args, runs: int) -> float:
  """Fastest seconds (least disturbed by other load) of ``fn(*args)``, after
  one compile-and-run call."""
  jax.block_until_ready(fn(*args))
  return min(time_calls(lambda: jax.block_until_ready(fn(*args)), runs))


def profile(variant: str, runs: int, query_chunk: int | None, say) -> None:
  """Prints the per-part table, then the whole-encoder op profile."""
  from samjax import build
  from samjax.model.attention import rel_pos_attention
  from samjax.model.image_encoder import Attention, Block, window_partition, window_unpartition
  from samjax.model.layers import LayerNorm, MLPBlock, gelu

  overrides = {} if query_chunk is None else {"attention_query_chunk": query_chunk}
  cfg = build(variant, **overrides).config
  c, n, g, win = cfg.encoder_embed_dim, cfg.encoder_num_heads, cfg.embedding_size, cfg.window_size
  d, mlp = c // n, int(c * cfg.mlp_ratio)
  t = g * g
  gp = -(-g // win) * win                      # padded grid of the windowed blocks
  nw, tw = (gp // win) ** 2, win * win          # windows, tokens per window
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(1, g, g, c)).astype(np.float32))
  key = jax.random.PRNGKey(0)

  rates = matmul_rates({
      "qkv": (t, c, 3 * c), "proj": (t, c, c),
      "lin1": (t, c, mlp), "lin2": (t, mlp, c),
      "scores (global)": (t, d, t), "scores (window)": (tw, d, tw)}, runs=runs)
  for name, r in rates.items():
    say(f"matmul rate {name}: {r:.1f} GFLOP/s")
  say("")

  rows = []

  def add(name, fn, args, flops, rate_key):
    s = _timed(jax.jit(fn), args, runs)
    gfs = flops / s / 1e9
    rows.append((name, s, flops, gfs, gfs / rates[rate_key]))

  def mm(m, k, n_):
    return 2 * m * k * n_

  for window, label, tokens, nb in ((win, "windowed", nw * tw, nw), (0, "global", t, 1)):
    kw = dict(dim=c, num_heads=n, mlp_ratio=cfg.mlp_ratio, input_size=(g, g),
              impl=cfg.attention_impl, query_chunk=cfg.attention_query_chunk)
    block = Block(window_size=window, **kw)
    bp = nn.unbox(block.init(key, x)["params"])
    tq = tokens // nb                                        # tokens per attention group
    attn_flops = nb * n * (mm(tq, d, tq) * 2)               # scores + AV
    relpos_flops = nb * n * mm(tq, d, int(np.sqrt(tq))) * 2  # rel_h + rel_w
    block_flops = (mm(t, c, 3 * c) + attn_flops + relpos_flops + mm(t, c, c)
                   + mm(t, c, mlp) + mm(t, mlp, c))
    add(f"{label} block (whole)", _applier(block), (bp, x),
        block_flops, "lin1")

    ap = bp["attn"]
    att_size = (win, win) if window else (g, g)
    attn_mod = Attention(c, n, att_size, window=window, impl=cfg.attention_impl,
                         query_chunk=cfg.attention_query_chunk)
    if window:
      add("  window partition + unpartition",
          lambda x: window_unpartition(window_partition(x, win)[0] + 1.0, win, (gp, gp), (g, g)),
          (x,), 0, "lin1")
    # qkv and proj run on the t real tokens (padding is filled with qkv's bias).
    add(f"  attention module ({label})", _applier(attn_mod),
        (ap, x), mm(t, c, 3 * c) + attn_flops + relpos_flops + mm(t, c, c), "qkv")
    side = int(np.sqrt(tq))
    q = jnp.asarray(rng.normal(size=(nb, tq, n, d)).astype(np.float32))
    rh = jnp.asarray(rng.normal(size=(nb, n, tq, side)).astype(np.float32))
    add(f"  softmax attention + rel-pos bias ({label})",
        lambda q, k, v, rh, rw: rel_pos_attention(q, k, v, rh, rw, scale=d ** -0.5,
                                                  impl=cfg.attention_impl,
                                                  query_chunk=cfg.attention_query_chunk),
        (q, q, q, rh, rh), attn_flops, "scores (global)" if not window else "scores (window)")
    if not window:
      add("  qkv dense", lambda p, x: x @ p["kernel"] + p["bias"],
          (ap["qkv"], x.reshape(t, c)), mm(t, c, 3 * c), "qkv")
      q4 = q.reshape(1, g, g, n, d)
      r = jnp.asarray(rng.normal(size=(g, g, d)).astype(np.float32))
      add("  rel-pos einsums (global)",
          lambda q, r: (jnp.einsum("bhwnc,hkc->bnhwk", q, r),
                        jnp.einsum("bhwnc,wkc->bnhwk", q, r)),
          (q4, r), relpos_flops, "scores (global)")
      add("  proj dense", lambda p, x: x @ p["kernel"] + p["bias"],
          (ap["proj"], x.reshape(t, c)), mm(t, c, c), "proj")
      ln = LayerNorm(eps=1e-6)
      lp = nn.unbox(ln.init(key, x)["params"])
      add("  layernorm", _applier(ln), (lp, x), 0, "lin1")
      mlp_mod = MLPBlock(mlp)
      mp = nn.unbox(mlp_mod.init(key, x)["params"])
      add("  MLP (lin1 + GELU + lin2)", _applier(mlp_mod), (mp, x),
          mm(t, c, mlp) + mm(t, mlp, c), "lin1")
      add("  lin1 dense alone", lambda p, x: x @ p["kernel"] + p["bias"],
          (mp["lin1"], x.reshape(t, c)), mm(t, c, mlp), "lin1")
      h = jnp.asarray(rng.normal(size=(t, mlp)).astype(np.float32))
      add("  GELU (erf) alone", gelu, (h,), 0, "lin1")

  nwin = sum(1 for w in cfg.encoder_block_windows if w)
  nglob = cfg.encoder_depth - nwin
  say(f"{'part':46s} {'s':>8s} {'GFLOP':>8s} {'GFLOP/s':>8s} {'rate':>6s}")
  for name, s, flops, gfs, frac in rows:
    say(f"{name:46s} {s:8.4f} {flops / 1e9:8.2f} {gfs:8.1f} "
        f"{frac:6.2f}" if flops else f"{name:46s} {s:8.4f} {'-':>8s} {'-':>8s} {'-':>6s}")
  whole = {name: s for name, s, *_ in rows}
  est = nwin * whole["windowed block (whole)"] + nglob * whole["global block (whole)"]
  say("")
  say(f"blocks of the encoder: {nwin} windowed x {whole['windowed block (whole)']:.3f} s + "
      f"{nglob} global x {whole['global block (whole)']:.3f} s = {est:.2f} s")
  whole_encoder_profile(cfg, say)


def whole_encoder_profile(cfg, say) -> None:
  """The whole encoder as one program, its op time summed by block kind and
  block part (XLA's CPU op trace), so fusion across parts is accounted."""
  from samjax import build
  model = build(cfg)
  rng = np.random.default_rng(1)
  params = random_params(model, seed=1)
  images = jnp.asarray(rng.normal(size=(1, 3, cfg.image_size, cfg.image_size)).astype(np.float32))
  rows = xla_op_profile.profile(jax.jit(model.embed_images), (params, images), runs=1,
                                depth=3, warmup=1, strip="Sam.embed_images/image_encoder/")
  kinds = {f"blocks_{i}": ("windowed blocks" if w else "global blocks")
           for i, w in enumerate(cfg.encoder_block_windows)}
  merged: dict[str, float] = {}
  for name, ms, _ in rows[1:]:
    name = re.sub(r"blocks_\d+", lambda m: kinds.get(m.group(0), m.group(0)), name)
    merged[name] = merged.get(name, 0.0) + ms
  total = rows[0][1]
  say("")
  say("whole encoder, one program: op time by block kind and part (XLA CPU op trace; ops "
      "on the 2 threads summed, so the total exceeds the wall time)")
  say(f"{'part':60s} {'ms':>9s} {'share':>6s}")
  for name, ms in sorted(merged.items(), key=lambda kv: -kv[1])[:20]:
    say(f"{name:60s} {ms:9.1f} {ms / total:6.1%}")


def main(argv=None):
  ap = make_parser(__doc__, variant="vit_b", runs=5, runs_help="timed calls per part")
  ap.add_argument("--query-chunk", type=int, default=None,
                  help="global attention's query chunk (default: the config's)")
  args = ap.parse_args(argv)
  report = Report(f"profile_encoder {args.variant}", f"host: {host_description()}")
  profile(args.variant, args.runs, args.query_chunk, report.say)
  report.write(args.write, f"profile_encoder_{args.variant}")


if __name__ == "__main__":
  main()
