"""The persistent compilation cache: where it lives, how it turns off, that a
second process finds what the first compiled."""

import os
import subprocess
import sys

from samjax import compile_cache

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_cache_folder_resolution(monkeypatch, tmp_path):
  monkeypatch.delenv(compile_cache.ENV, raising=False)
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compile_cache.resolve_dir() == str(tmp_path / "xdg" / "samjax" / "xla")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
  assert compile_cache.resolve_dir() == str(tmp_path / "jax")     # jax's own setting
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
  assert compile_cache.resolve_dir() == str(tmp_path / "mine")    # samjax's wins
  assert compile_cache.resolve_dir(str(tmp_path / "arg")) == str(tmp_path / "arg")
  for off in ("off", "OFF", "0", "none"):
    monkeypatch.setenv(compile_cache.ENV, off)
    assert compile_cache.resolve_dir() is None


def test_unwritable_folder_leaves_the_cache_off_with_one_message(tmp_path, capsys):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  assert compile_cache.enable_compile_cache(str(blocker / "cache")) is None
  err = capsys.readouterr().err
  assert "compilation cache off" in err and str(blocker) in err


def test_second_process_loads_what_the_first_compiled(tmp_path):
  cache = tmp_path / "cache"
  script = (
      "import samjax, jax, jax.numpy as jnp\n"
      "jax.config.update('jax_log_compiles', True)  # logs cache hits and misses\n"
      f"assert samjax.enable_compile_cache({str(cache)!r}, min_compile_seconds=0)\n"
      "f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())\n"
      "print(float(f(jnp.ones((64, 64)))))\n")
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env.pop(compile_cache.ENV, None)

  def run():
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out

  first = run()
  # jax names an entry <function>-<key>-cache (and may keep -atime files beside it).
  entries = sorted(cache.rglob("*-cache"))
  assert entries, "the first process wrote nothing to the cache"
  mtimes = {p: p.stat().st_mtime_ns for p in entries}
  assert "Persistent compilation cache hit" not in first.stderr
  second = run()
  assert second.stdout == first.stdout
  assert "Persistent compilation cache hit for 'jit__lambda'" in second.stderr, \
      second.stderr[-2000:]
  # Nothing new compiled: the cache holds the same entries, none rewritten.
  assert sorted(cache.rglob("*-cache")) == entries
  assert all(p.stat().st_mtime_ns == mtimes[p] for p in entries)


def test_default_folder_is_announced_once(tmp_path):
  """The first time the default folder is made, one stderr line says where it
  is and how to turn the cache off; never again, and never for a folder the
  user named."""
  script = ("import samjax\n"
            "samjax.enable_compile_cache()\n"
            "samjax.enable_compile_cache()\n")
  env = dict(os.environ, PYTHONPATH=REPO, XDG_CACHE_HOME=str(tmp_path / "xdg"))
  env.pop(compile_cache.ENV, None)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)

  def stderr(environ):
    out = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return [line for line in out.stderr.splitlines() if "[samjax]" in line]

  folder = str(tmp_path / "xdg" / "samjax" / "xla")
  first = stderr(env)
  assert len(first) == 1 and folder in first[0] and f"{compile_cache.ENV}=off" in first[0]
  assert os.path.isdir(folder)
  assert stderr(env) == []  # the folder exists: said once
  assert stderr(dict(env, **{compile_cache.ENV: str(tmp_path / "mine")})) == []
