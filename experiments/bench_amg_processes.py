"""`samjax amg` on 1 and on 2 processes of one machine: images per process-second.

  .venv/bin/python experiments/bench_amg_processes.py [--variant vit_b] \\
      [--images 16] [--points-per-side 16] [--write experiments/results]

The same command line a pod runs on every host, launched here as N local
processes joined by jax.distributed over 127.0.0.1 (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID; gloo on CPU), each on one CPU device
(--platform). Images: --images copies of skimage's photographs (coffee,
chelsea, astronaut, rocket, immunohistochemistry; 300x451 to 512x512),
named sa_1.jpg ... so every launch labels the same set. Model: --variant
with seeded random weights (official layout .pth), thresholds at 0 and no
NMS so that every mask is kept and written.

Each launch is timed wall-clock from the start of its processes to the end
of the last one, so it includes what a real run pays per process: start-up,
model load and compiling (process 0 loads its programs from the compilation
cache a 1-image warm-up filled; the others compile: jax keys a CPU program
by the process's topology and only process 0 writes the cache). Printed per
launch: images/s (wall) and images per process-second (images / (N x
wall)), and the ratios of the 2-process launch to the 1-process one. The
outputs of both launches are checked to be the same bytes.

On one machine the processes share its cores, so this measures what the
split costs (start-up per process, the final meeting, cores shared), not a
pod's scaling, where each host has its own chips: there the per-host rate
is what one process reaches on its host.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)
from bench_common import Report, make_parser  # noqa: E402

PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "immunohistochemistry")


def make_inputs(work: str, variant: str, n_images: int) -> tuple[str, str]:
  """(checkpoint .pth, image folder) under ``work``, made once."""
  checkpoint, images = os.path.join(work, f"{variant}.pth"), os.path.join(work, "images")
  if not os.path.exists(checkpoint):
    from bench_common import official_and_samjax

    from samjax import build
    from samjax.interop.torch_io import save_state_dict
    official, _ = official_and_samjax(build(variant).config)
    save_state_dict({k: v.numpy() for k, v in official.state_dict().items()}, checkpoint)
  os.makedirs(images, exist_ok=True)
  import skimage.data
  from PIL import Image
  for i in range(n_images):
    path = os.path.join(images, f"sa_{i + 1}.jpg")
    if not os.path.exists(path):
      photo = getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()
      Image.fromarray(photo).convert("RGB").save(path, quality=95)
  return checkpoint, images


def free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(n: int, argv: list[str], platform: str, timeout: float) -> float:
  """Runs ``samjax ARGV`` on ``n`` local processes; wall seconds until all exited."""
  port, procs = free_port(), []
  env = dict(os.environ, JAX_PLATFORMS=platform, PYTHONPATH=REPO,
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  t0 = time.perf_counter()
  try:
    for index in range(n):
      penv = env if n == 1 else dict(
          env, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
          JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(n),
          JAX_PROCESS_ID=str(index))
      procs.append(subprocess.Popen([sys.executable, "-m", "samjax.cli", *argv], env=penv,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True))
    for index, p in enumerate(procs):
      _, err = p.communicate(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
      if p.returncode:
        raise RuntimeError(f"process {index}/{n} exited {p.returncode}:\n{err[-3000:]}")
    return time.perf_counter() - t0
  finally:
    for p in procs:  # a failed or timed-out launch leaves no process behind
      if p.poll() is None:
        p.kill()
        p.wait()


def same_files(a: str, b: str) -> bool:
  names = sorted(os.listdir(a))
  if names != sorted(os.listdir(b)):
    return False
  return all(open(os.path.join(a, n), "rb").read() == open(os.path.join(b, n), "rb").read()
             for n in names)


def main(argv=None):
  ap = make_parser(__doc__, variant="vit_tiny")
  ap.add_argument("--images", type=int, default=16, help="number of images")
  ap.add_argument("--points-per-side", type=int, default=16)
  ap.add_argument("--platform", default="cpu", help="JAX_PLATFORMS of the processes")
  ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "bench_amg_processes"),
                  help="folder for the model, the images and the outputs")
  ap.add_argument("--timeout", type=float, default=3600, help="seconds per launch")
  args = ap.parse_args(argv)
  checkpoint, images = make_inputs(args.work, args.variant, args.images)
  flags = ["--checkpoint", checkpoint, "--points-per-side", str(args.points_per_side),
           "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--box-nms-thresh",
           "1.0", "--no-progress"]
  command = ("python experiments/bench_amg_processes.py " + " ".join(
      [f"--variant {args.variant}", f"--images {args.images}",
       f"--points-per-side {args.points_per_side}", f"--platform {args.platform}"]))
  report = Report(f"bench_amg_processes {args.variant}, {args.images} images",
                  f"command: `{command}`",
                  f"load average at the start: {os.getloadavg()[0]:.1f}")
  warm = os.path.join(args.work, "warm")
  launch(1, ["amg", *flags, "--images", os.path.join(images, "sa_1.jpg"), "--out",
             _fresh(warm)], args.platform, args.timeout)
  rates = {}
  for n in (1, 2):
    out = _fresh(os.path.join(args.work, f"out{n}"))
    wall = launch(n, ["amg", *flags, "--images", images, "--out", out], args.platform,
                  args.timeout)
    rates[n] = (args.images / wall, args.images / (n * wall))
    report.say(f"{n} process(es): {wall:.1f} s wall, {rates[n][0]:.2f} images/s, "
               f"{rates[n][1]:.2f} images per process-second")
  report.say(f"2 vs 1 process: images/s x{rates[2][0] / rates[1][0]:.2f}, images per "
             f"process-second x{rates[2][1] / rates[1][1]:.2f}")
  same = same_files(os.path.join(args.work, "out1"), os.path.join(args.work, "out2"))
  report.say(f"outputs of both launches identical: {same}")
  report.say(f"load average at the end: {os.getloadavg()[0]:.1f}")
  report.write(args.write, f"bench_amg_processes_{args.variant}")  # + _<date>_<host>.md


def _fresh(path: str) -> str:
  import shutil
  shutil.rmtree(path, ignore_errors=True)
  return path


if __name__ == "__main__":
  main()
