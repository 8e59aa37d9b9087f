"""Packaging: the base install (no extras) runs inference, a missing extra is a
one-line error naming it, ``import samjax`` loads nothing heavy and changes no
setting, and ``samjax.extras`` agrees with setup.cfg.

The "base install" is simulated in a subprocess where the extras' packages
cannot be imported (``sys.modules[name] = None``: ``import name`` raises
ModuleNotFoundError and ``importlib.util.find_spec(name)`` answers None, as
for a package that is not installed). A real fresh ``pip install .`` is too
slow for the suite; docs/packaging.md records one made by hand.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from samjax import extras
from samjax.hardware import LIBTPU_QUIET_ENV

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# What a base install lacks: every extra's packages (not flax's own optax /
# orbax-checkpoint, which a real base install has: blocked too, to show that
# samjax's inference path imports neither), and the test extra's references.
BLOCKED = ("optax", "orbax", "grain", "tensorflow_datasets", "tensorboardX", "ml_collections",
           "google_crc32c", "skimage", "libtpu", "gcsfs", "s3fs", "torch", "torchvision",
           "segment_anything", "transformers", "cv2", "chex")
# Nor may `import samjax` load these (the base install has them).
HEAVY = ("jax", "jaxlib", "flax", "numpy", "scipy", "PIL", "pycocotools", "safetensors",
         "tqdm", "etils", "absl")

PRELUDE = textwrap.dedent(f"""\
    import sys
    for _name in {BLOCKED!r}:
      sys.modules[_name] = None  # "not installed"
    """)


def _run(script: str, tmp_path, timeout: int = 600, block: bool = True
         ) -> subprocess.CompletedProcess:
  """Runs ``script`` in a fresh python, without the extras' packages (``block``)."""
  path = tmp_path / "script.py"
  path.write_text((PRELUDE if block else "import sys\n") + textwrap.dedent(script))
  env = dict(os.environ, PYTHONPATH=REPO)
  for name in LIBTPU_QUIET_ENV:  # set by conftest; a setting samjax must not make itself
    env.pop(name, None)
  out = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd=str(tmp_path))
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return out


@pytest.fixture(scope="module")
def tiny_safetensors(tmp_path_factory, tiny_pair):
  """The tiny official model as an official-layout .safetensors file."""
  from samjax.interop.safetensors_io import write_safetensors
  path = str(tmp_path_factory.mktemp("st") / "tiny.safetensors")
  write_safetensors({k: v.numpy() for k, v in tiny_pair[0].state_dict().items()}, path)
  return path


def test_base_install_runs_inference_and_names_missing_extras(tmp_path, tiny_safetensors,
                                                              tiny_official_pth):
  """Without any extra: load_sam of a .safetensors, set_image + one click (equal
  to this process's result), the generator, the drop-in namespace, every verb's
  --help; and each missing extra is one line that names it."""
  import samjax
  image = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
  np.save(tmp_path / "image.npy", image)
  click = dict(point_coords=np.array([[20.0, 30.0]]), point_labels=np.array([1]))
  want_masks, want_scores, _ = _predict(samjax.load_sam(tiny_safetensors), image, click)

  out = _run(f"""
      import samjax
      heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
      assert not heavy, f"import samjax loaded {{heavy}}"

      import contextlib, io, json
      import numpy as np

      sam = samjax.load_sam({tiny_safetensors!r})
      predictor = samjax.SamPredictor(sam)
      predictor.set_image(np.load("image.npy"))
      masks, scores, _ = predictor.predict(point_coords=np.array([[20.0, 30.0]]),
                                           point_labels=np.array([1]), return_logits=True)
      np.save("masks.npy", masks)
      np.save("scores.npy", scores)
      samjax.SamAutomaticMaskGenerator(sam, points_per_side=2)
      from samjax.segment_anything import SamPredictor, sam_model_registry

      from samjax.cli import build_parser
      parser = build_parser()
      verbs = sorted(parser._subparsers._group_actions[0].choices)

      errors = {{}}
      def error_of(fn):
        try:
          fn()
        except ImportError as e:
          return str(e)
        raise AssertionError("no error")
      errors["pth"] = error_of(lambda: samjax.load_sam({tiny_official_pth!r}))
      from samjax import interop
      errors["model_dir"] = error_of(
          lambda: interop.save_model_dir("model_dir", sam.params, sam.config))
      from samjax.cli import main
      for verb, argv in [("train", ["train", "--config", "tiny_demo", "--workdir", "wd"]),
                         ("data", ["data", "make-sample", "--out", "ds"]),
                         ("eval", ["eval", "points", "--checkpoint", "c", "--annotations",
                                   "a.json", "--images", "i", "--out", "o.json"]),
                         ("plan", ["plan", "--config", "tiny_demo", "--gpu", "1"])]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
          assert main(argv) == 1
        errors[verb] = err.getvalue()
      still_blocked = all(sys.modules[m] is None for m in {BLOCKED!r})
      print(json.dumps({{"verbs": verbs, "errors": errors, "blocked": still_blocked}}))
      """, tmp_path)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["blocked"], "an extra's package was imported"
  assert {"convert", "segment", "amg", "train", "plan", "eval", "data"} <= set(result["verbs"])
  np.testing.assert_allclose(np.load(tmp_path / "scores.npy"), want_scores, atol=1e-5)
  np.testing.assert_allclose(np.load(tmp_path / "masks.npy"), want_masks, atol=1e-4)

  errors = result["errors"]
  extra_of = {"pth": "torch", "model_dir": "train", "train": "train", "data": "data",
              "eval": "eval", "plan": "plan"}
  for what, extra in extra_of.items():
    text = errors[what].strip()
    assert "\n" not in text and "Traceback" not in text, (what, text)
    assert f"pip install 'samjax[{extra}]'" in text, (what, text)
  assert errors["pth"].startswith("reading/writing .pth files needs torch")
  assert errors["train"].startswith("samjax train: error: samjax train needs ")
  assert "grain" in errors["train"] and "optax" in errors["train"]


def _predict(sam, image, click):
  import samjax
  predictor = samjax.SamPredictor(sam)
  predictor.set_image(image)
  return predictor.predict(**click, return_logits=True)


def test_import_samjax_changes_no_setting(tmp_path):
  """``import samjax`` (and reaching its lazy names, the drop-in namespace and
  the CLI module) sets no environment variable and no jax option, and the bare
  import loads neither jax nor any other heavy module."""
  out = _run(f"""
      import json, os
      env0 = dict(os.environ)
      import samjax
      loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)
      assert os.environ == env0, sorted(set(os.environ.items()) ^ set(env0.items()))
      import jax  # sets TPU_SKIP_MDS_QUERY itself (jax._src.cloud_tpu_init)
      env0 = dict(os.environ)
      config0 = dict(jax.config.values)
      for name in samjax.__all__:
        getattr(samjax, name)
      import samjax.cli
      import samjax.segment_anything
      from samjax.segment_anything import sam_model_registry
      changed_env = sorted(k for k in set(env0) | set(os.environ)
                           if env0.get(k) != os.environ.get(k))
      changed_config = sorted(k for k, v in jax.config.values.items()
                              if config0.get(k, "absent") != v)
      print(json.dumps({{"loaded": loaded, "env": changed_env, "config": changed_config}}))
      """, tmp_path, block=False)  # everything installed, libtpu included
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result == {"loaded": [], "env": [], "config": []}


def test_lazy_names():
  import samjax
  assert set(samjax.__all__) <= set(dir(samjax))
  from samjax.inference.predictor import SamPredictor
  from samjax.loading import load_sam
  assert samjax.SamPredictor is SamPredictor and samjax.load_sam is load_sam
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    samjax.nope  # noqa: B018


def _requirements(text: str) -> set[str]:
  """Distribution names (normalized) of a setup.cfg requirement list."""
  names = set()
  for line in text.splitlines():
    line = line.split("#")[0].strip()
    if line:
      names.add(re.split(r"[\s<>=!~;\[]", line)[0].lower().replace("_", "-"))
  return names


def _setup_cfg():
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(REPO, "setup.cfg"))
  base = _requirements(cfg["options"]["install_requires"])
  extras_cfg = {k: _requirements(v) for k, v in cfg["options.extras_require"].items()}
  return base, extras_cfg


def test_extras_agree_with_setup_cfg():
  base, extras_cfg = _setup_cfg()
  for extra, modules in extras.EXTRAS.items():
    declared = {extras.package_name(m).lower().replace("_", "-") for m in modules}
    assert declared == extras_cfg[extra], extra
  # The base install holds none of them (flax brings optax and orbax-checkpoint
  # itself; samjax does not ask for them).
  for extra in ("train", "data", "eval", "plan", "torch", "cloud"):
    assert not base & extras_cfg[extra], (extra, base & extras_cfg[extra])
  # filelock: jax's bounded compilation cache (on by default) fails every read without it.
  assert {"jax", "flax", "numpy", "pillow", "safetensors", "filelock"} <= base
  # The Makefile installs every extra the suite tests.
  with open(os.path.join(REPO, "Makefile")) as f:
    makefile = f.read()
  installed = re.search(r'pip install --quiet -e "\.\[([^\]]+)\]"', makefile).group(1)
  assert set(installed.split(",")) == set(extras_cfg)


def test_require_names_the_extra_in_one_line(tmp_path, monkeypatch):
  with pytest.raises(extras.MissingExtraError) as e:
    extras.require("samjax_no_such_package.sub", "train", "doing this")
  assert str(e.value) == ("doing this needs samjax_no_such_package (not installed): "
                          "pip install 'samjax[train]'")
  assert isinstance(e.value, ImportError)
  # An import error inside an installed package is not blamed on the extra.
  (tmp_path / "broken_pkg_for_test.py").write_text("import samjax_no_such_dependency\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(ModuleNotFoundError) as e:
    extras.require("broken_pkg_for_test", "train", "doing this")
  assert not isinstance(e.value, extras.MissingExtraError)
  monkeypatch.setitem(sys.modules, "skimage", None)
  assert extras.missing("eval") == ["skimage"]
  with pytest.raises(extras.MissingExtraError, match=r"needs scikit-image .*samjax\[eval\]"):
    extras.require_extra("eval", "samjax eval")
