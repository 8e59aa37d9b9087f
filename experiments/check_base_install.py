"""The base install, for real: a fresh virtualenv, ``pip install <repo>`` with
no extras, then ``load_sam`` and one click on an official-layout
``.safetensors`` checkpoint (the trained vit_tiny weights of tests/data).

Prints and writes what ``pip list`` holds (and which of the packages the
extras own it lacks), the click's output shapes and the install time. Needs
the package index (pip), several minutes and ~2 GB of disk.

  python experiments/check_base_install.py [--write experiments/results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import Report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(REPO, "tests", "data", "sam_tiny_trained_fp16.npz")
# Packages owned by extras (train, data, eval, plan, cloud, torch): none may
# arrive with the base install, except what flax itself requires.
EXTRA_PACKAGES = ("grain", "orbax-checkpoint", "tensorflow-datasets", "tensorflow",
                  "tensorboardX", "torch", "torchvision", "libtpu", "gcsfs", "s3fs",
                  "ml-collections", "scikit-image", "segment-anything")

CLICK = """
import json, sys, time
import numpy as np
import samjax
start = time.perf_counter()
sam = samjax.load_sam(sys.argv[1], variant="vit_tiny")
predictor = samjax.SamPredictor(sam, compile_cache=False)
image = (np.random.default_rng(0).uniform(0, 255, (120, 180, 3))).astype(np.uint8)
predictor.set_image(image)
masks, scores, logits = predictor.predict(point_coords=np.array([[90, 60]]),
                                          point_labels=np.array([1]))
print(json.dumps({"masks": list(masks.shape), "scores": list(scores.shape),
                  "logits": list(logits.shape), "seconds": time.perf_counter() - start,
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] in
                                    ("orbax", "optax", "grain", "torch", "tensorflow"))}))
"""


def write_checkpoint(path: str) -> None:
  from samjax.interop.safetensors_io import write_safetensors
  weights = np.load(WEIGHTS)
  write_safetensors({k: weights[k].astype(np.float32) for k in weights.files}, path)


def run(cmd: list[str], **kw) -> str:
  return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--write", metavar="DIR", help="also write a markdown result file here")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    ckpt = os.path.join(tmp, "sam_tiny.safetensors")
    write_checkpoint(ckpt)
    venv = os.path.join(tmp, "venv")
    py = os.path.join(venv, "bin", "python")
    run([sys.executable, "-m", "venv", venv])
    start = time.perf_counter()
    run([py, "-m", "pip", "install", "-q", REPO])
    install_s = time.perf_counter() - start
    installed = {p["name"].lower(): p["version"]
                 for p in json.loads(run([py, "-m", "pip", "list", "--format", "json"]))}
    # Run outside the repository, so the installed package is what is imported.
    click = json.loads(run([py, "-c", CLICK, ckpt], cwd=tmp).strip().splitlines()[-1])
  present = sorted(name for name in EXTRA_PACKAGES if name.lower() in installed)
  report = Report("check_base_install", "fresh virtualenv, pip install . (no extras)")
  report.say(f"install: {install_s:.0f} s; {len(installed)} packages")
  report.say(f"extras' packages present: {present or 'none'}"
              + (" (flax requires orbax-checkpoint)" if "orbax-checkpoint" in present else ""))
  report.say(f"one click on an official-layout .safetensors: masks {click['masks']}, "
              f"scores {click['scores']}, low-res logits {click['logits']}, "
              f"{click['seconds']:.1f} s from load_sam (compiles included)")
  report.say(f"modules of extras imported by the click: {click['modules'] or 'none'}")
  report.say("pip list: " + ", ".join(f"{k} {v}" for k, v in sorted(installed.items())))
  report.say("")
  report.say("command: python experiments/check_base_install.py --write DIR")
  report.write(args.write, "check_base_install")


if __name__ == "__main__":
  main()
