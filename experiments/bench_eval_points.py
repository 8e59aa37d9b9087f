"""Point-protocol throughput: `samjax eval points` through samjax's predictor vs
the official one, same weights, same protocol code (samjax/evaluation/points.py).

Each side runs the protocol twice over the same images: once to warm up
(compiles every program shape), once timed. Reported per side: prompts/s
(a prompt = one click of one GT mask), the image-embedding share, and the
protocol's cost per prompt with the embedding taken out, next to the
predictor's own latency for one click (``predict``, cached embedding).

  python experiments/bench_eval_points.py [--variant vit_b] [--limit 20] [--max-points 9]
  python experiments/bench_eval_points.py --annotations instances.json --images DIR
  python experiments/bench_eval_points.py --write experiments/results

Without --annotations it uses the self-made sample set (3 images, 128 px).
Weights are seeded random (bench_common): speed does not depend on them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import Report, loaded_and_official, make_parser, median, time_calls


class _EmbedTimer:
  """A predictor wrapper that adds up the wall time of ``set_image``."""

  def __init__(self, predictor, sync):
    self._p, self._sync, self.seconds = predictor, sync, 0.0

  def set_image(self, image):
    t = time.perf_counter()
    self._p.set_image(image)
    self._sync(self._p)
    self.seconds += time.perf_counter() - t

  def __getattr__(self, name):  # predict, predict_batch: straight through
    return getattr(self._p, name)


def _sync_samjax(p):
  import jax
  jax.block_until_ready(p.features)


def _sync_torch(_):
  import torch
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def main(argv=None):
  ap = make_parser(__doc__, variant="vit_b", runs=10, runs_help="timed single clicks")
  ap.add_argument("--annotations", help="COCO instance JSON or SA-1B folder")
  ap.add_argument("--images", help="image folder")
  ap.add_argument("--limit", type=int, default=20, help="images (default 20)")
  ap.add_argument("--max-points", type=int, default=9)
  args = ap.parse_args(argv)

  import torch
  from segment_anything import SamPredictor as OfficialPredictor

  from samjax import SamPredictor
  from samjax.evaluation import points
  from samjax.evaluation.coco_gt import load_dataset
  from samjax.evaluation.sample_sets import make_eval_set

  tmp = tempfile.mkdtemp(prefix="bench_eval_points-")
  if args.annotations:
    dataset = load_dataset(args.annotations, args.images)
    data_name = args.annotations
  else:
    paths = make_eval_set(os.path.join(tmp, "set"))
    dataset = load_dataset(paths["annotations"], paths["images"])
    data_name = "the self-made sample set (samjax/evaluation/sample_sets.py)"
  loaded, official_sam = loaded_and_official(args.variant)
  if torch.cuda.is_available():
    official_sam = official_sam.cuda()
  report = Report(f"bench_eval_points {args.variant}, {args.max_points} clicks per mask",
                  f"data: {data_name}, first {args.limit} images",
                  f"torch threads: {torch.get_num_threads()}")
  sides = {"samjax": (SamPredictor(loaded), _sync_samjax),
           "official": (OfficialPredictor(official_sam), _sync_torch)}
  rates = {}
  for name, (predictor, sync) in sides.items():
    for attempt in ("warm-up", "timed"):
      timer = _EmbedTimer(predictor, sync)
      out = os.path.join(tmp, f"{name}_{attempt}.json")
      t = time.perf_counter()
      doc = points.run(timer, dataset, out, model={"checkpoint": name},
                       max_points=args.max_points, limit=args.limit, progress=False)
      wall = time.perf_counter() - t
    prompts = _prompts(out)
    image_id = dataset.image_ids(1)[0]
    predictor.set_image(dataset.load_image(image_id))
    ann = dataset.instances(image_id)[0]
    x, y, w, h = ann["bbox"]
    click = dict(point_coords=np.array([[x + w / 2, y + h / 2]]), point_labels=np.array([1]))

    def one_click(p=predictor, s=sync, c=click):
      p.predict(**c)
      s(p)

    one_click()  # compiles samjax's 1-prompt program
    latency = median(time_calls(one_click, args.runs))
    rates[name] = prompts / wall
    report.say(f"{name:9s} {prompts} prompts on {doc['num_images']} images in {wall:.2f} s: "
               f"{prompts / wall:.1f} prompts/s; embedding {timer.seconds:.2f} s; "
               f"{1e3 * (wall - timer.seconds) / prompts:.2f} ms per prompt without it "
               f"(one predict() click: {1e3 * latency:.2f} ms); 1-click mIoU {doc['miou_1pt']:.4f}")
  report.say(f"samjax / official: {rates['samjax'] / rates['official']:.2f}x prompts/s")
  report.write(args.write, f"bench_eval_points_{args.variant}")
  shutil.rmtree(tmp, ignore_errors=True)


def _prompts(out: str) -> int:
  """Clicks made in the run logged beside ``out`` (one prompt each)."""
  from samjax.evaluation.per_image_log import log_path_for, read_records
  records = read_records(log_path_for(out))
  return sum(len(m["clicks"]) for r in records for m in r["masks"])


if __name__ == "__main__":
  main()
