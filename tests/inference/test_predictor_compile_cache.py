"""The Python predictor turns jax's persistent compilation cache on by itself:
a second process with the same model and image size reaches its first mask
without compiling anything; ``warmup=True`` compiles at ``set_image``."""

import json
import os
import subprocess
import sys

from samjax import compile_cache

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Counts XLA compiles and cache hits around each step of a plain
# user script (no cache call of its own: the predictor turns it on).
SCRIPT = """
import json, sys, time
import numpy as np
import jax
from jax import monitoring
import samjax

# jax records a backend-compile duration for every program it needs, loaded
# from the cache or compiled; a cache hit is also counted on its own.
counts = {"programs": 0, "hits": 0}
def on_duration(event, duration, **_):
  if event == "/jax/core/compile/backend_compile_duration":
    counts["programs"] += 1
def on_event(event, **_):
  if event == "/jax/compilation_cache/cache_hits":
    counts["hits"] += 1
monitoring.register_event_duration_secs_listener(on_duration)
monitoring.register_event_listener(on_event)

def step(name, fn):
  before = dict(counts)
  start = time.perf_counter()
  fn()
  out[name] = {k: counts[k] - before[k] for k in counts}
  out[name]["compiles"] = out[name]["programs"] - out[name]["hits"]
  out[name]["seconds"] = time.perf_counter() - start

out = {}
sam = samjax.load_sam(sys.argv[1])
warmup = sys.argv[2] == "warmup"
predictor = samjax.SamPredictor(sam, warmup=warmup)
out["cache_dir"] = jax.config.jax_compilation_cache_dir
image = (np.arange(96 * 128 * 3) % 251).astype(np.uint8).reshape(96, 128, 3)
step("set_image", lambda: predictor.set_image(image))
step("first_click", lambda: predictor.predict(point_coords=np.array([[40.0, 30.0]]),
                                              point_labels=np.array([1])))
step("box", lambda: predictor.predict(box=np.array([10.0, 10.0, 90.0, 70.0]),
                                      multimask_output=False))
print(json.dumps(out))
"""


def _run(pth, cache, mode):
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env[compile_cache.ENV] = str(cache)
  out = subprocess.run([sys.executable, "-c", SCRIPT, pth, mode], env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_first_mask_compiles_nothing(tiny_official_pth, tmp_path):
  cache = tmp_path / "xla"
  first = _run(tiny_official_pth, cache, "plain")
  assert first["cache_dir"] == str(cache)
  assert first["first_click"]["compiles"] >= 1       # the decode program, compiled
  assert any(cache.rglob("*-cache")), "the first process wrote nothing"

  second = _run(tiny_official_pth, cache, "plain")
  for step in ("set_image", "first_click", "box"):
    assert second[step]["compiles"] == 0, (step, second)
  assert second["first_click"]["hits"] >= 1

  # warmup=True: the click and the box were compiled (here: loaded) inside
  # set_image; the prompts themselves then find them in memory.
  warm = _run(tiny_official_pth, cache, "warmup")
  assert warm["set_image"]["hits"] >= 3
  for step in ("first_click", "box"):
    assert warm[step]["compiles"] == 0 and warm[step]["hits"] == 0, (step, warm)


def test_cache_off_by_environment(monkeypatch):
  """``SAMJAX_COMPILATION_CACHE=off`` keeps the predictor from turning the
  cache on; a folder already given to jax is kept as it is."""
  import jax
  session_dir = jax.config.jax_compilation_cache_dir
  assert compile_cache.ensure_compile_cache() == session_dir   # kept
  monkeypatch.setenv(compile_cache.ENV, "off")
  try:
    jax.config.update("jax_compilation_cache_dir", None)
    assert compile_cache.ensure_compile_cache() is None
    assert jax.config.jax_compilation_cache_dir is None
  finally:
    jax.config.update("jax_compilation_cache_dir", session_dir)
