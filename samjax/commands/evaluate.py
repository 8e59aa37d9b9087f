"""``samjax eval``: the SAM paper's zero-shot evaluation protocols."""

from __future__ import annotations

import argparse
import importlib
import sys

from data_pipelines import storage
from samjax.commands.generator_flags import add_generator_flags, generator_kwargs
from samjax.inference import process_group

HELP = """\
Evaluate a model with one of the SAM paper's zero-shot protocols
(docs/evaluation.md describes each one precisely).

  samjax eval points    --checkpoint CKPT --annotations instances.json --images DIR \\
      --out results.json [--max-points 9]
  samjax eval boxes     --checkpoint CKPT --annotations instances.json --images DIR \\
      --out results.json [--detections dets.json]
  samjax eval proposals --checkpoint CKPT --annotations lvis_v1_val.json --images DIR \\
      --out results.json [--points-per-side 32 ...]
  samjax eval edges     --checkpoint CKPT --images DIR --gt GT_DIR --out results.json \\
      [--points-per-side 16]

CKPT: an official .pth, a converted model directory or a `samjax train`
workdir. --annotations: a COCO-format instance JSON (polygons or RLE; LVIS
too) or an SA-1B-layout folder (<stem>.jpg + <stem>.json; --images defaults
to it).

results.json holds the protocol's settings, the model (path, config), the
samjax version and git commit, and the metrics: points: miou_1pt,
miou_1pt_oracle, miou_curve; boxes: ap, ap_small, ap_medium, ap_large;
proposals: ar1000 (+ by size and LVIS frequency); edges: ods, ois, ap, r50
(docs/evaluation_edges.md). The paper-style table row
is printed at the end.

Every path may be local, gs:// or s3://.

Resumable: every finished image is stored as its own file in <out>.images/
(a folder, or a prefix on a bucket, which cannot append to a file); rerun
the same command after a kill and finished images are skipped (the numbers
are those of an uninterrupted run). A rerun with other settings (model,
data, protocol flags) into the same --out is refused. --limit N evaluates
the first N images.

On N processes (every host of a pod, or several on one machine): start the
same command on each, with the environment `samjax train` reads:
JAX_COORDINATOR_ADDRESS=<process 0's host>:<port>, JAX_NUM_PROCESSES=N,
JAX_PROCESS_ID=0..N-1; --out must be a place every process can reach (a
bucket, a shared file system). Image i of the list (--limit applied) goes
to process i % N, which stores it in <out>.images/ as above. Process 0 waits
until every process is done, then computes the metrics from all the images'
files and is the only one to write results.json (and the boxes masks file):
the same numbers as one process. Progress lines say "process k/N". If a
process stops on an error, every process exits 1 and no results are
written; if one dies (kill -9, a lost host), jax stops the others about
100 s later. Either way rerun the same command, on any number of processes
(another N too): finished images are kept.
"""


def _common(p) -> None:
  p.add_argument("--checkpoint", required=True,
                 help="official .pth, samjax model directory or training workdir")
  p.add_argument("--variant", help="expected model size (inferred if omitted)")
  p.add_argument("--annotations", required=True,
                 help="COCO instance JSON, or an SA-1B-layout folder")
  p.add_argument("--images", help="image folder (default: the SA-1B folder itself)")
  p.add_argument("--out", required=True, help="results JSON to write")
  p.add_argument("--limit", type=int, help="evaluate only the first N images")
  p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")


def _batch(p) -> None:
  p.add_argument("--batch", type=int, default=32,
                 help="prompts decoded per call on one image embedding (default 32)")


def register(subparsers):
  p = subparsers.add_parser("eval", help="zero-shot evaluation protocols of the SAM paper",
                            description=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.set_defaults(extra="eval")  # samjax.cli checks the extra's packages first
  sub = p.add_subparsers(dest="protocol", metavar="PROTOCOL")
  sub.required = True

  pts = sub.add_parser("points", help="single point -> valid mask, 1..N clicks (mIoU)")
  _common(pts)
  _batch(pts)
  pts.add_argument("--max-points", type=int, default=9, help="clicks per mask (default 9)")
  pts.add_argument("--no-mask-input", action="store_true",
                   help="follow-up clicks without the previous mask logits")
  pts.set_defaults(func=run_points)

  box = sub.add_parser("boxes", help="box -> instance mask (COCO mask AP)")
  _common(box)
  _batch(box)
  box.add_argument("--detections", help="COCO detection results JSON (default: GT boxes)")
  box.add_argument("--masks-out", help="COCO results JSON of the masks "
                                       "(default: <out>.segm.json)")
  box.set_defaults(func=run_boxes)

  prop = sub.add_parser("proposals", help="automatic masks as proposals (mask AR@1000)")
  _common(prop)
  prop.add_argument("--max-proposals", type=int, default=1000)
  prop.add_argument("--rank-by", default="predicted_iou",
                    choices=("predicted_iou", "iou_x_stability"),
                    help="proposal score (default: the predicted IoU)")
  add_generator_flags(prop, points_per_batch=128)
  prop.set_defaults(func=run_proposals)

  # The edges protocol lives in its own module; absent, eval has three protocols.
  try:
    eval_edges = importlib.import_module("samjax.commands.eval_edges")
  except ModuleNotFoundError as e:
    if e.name != "samjax.commands.eval_edges":
      raise
  else:
    eval_edges.add_parser(sub)


def _prepare(args):
  """Checks the inputs, then loads data and model: (dataset, LoadedSam, model info).

  Every path is checked before the model loads, so a typo costs no waiting."""
  from samjax.evaluation.coco_gt import load_dataset
  from samjax.evaluation.results import check_out_path, load_evaluated_model
  if args.limit is not None and args.limit < 1:
    raise ValueError(f"--limit must be >= 1, got {args.limit}")
  if getattr(args, "batch", 1) < 1:
    raise ValueError(f"--batch must be >= 1, got {args.batch}")
  process_group.join()  # before jax starts: on N processes, this one's place
  dataset = load_dataset(args.annotations, args.images)
  check_out_path(args.out)
  sam, model = load_evaluated_model(args.checkpoint, args.variant)
  return dataset, sam, model


def print_results(doc, out: str) -> int:
  """Prints the table row; on a process of several other than 0 (``doc`` is
  None), where the results are."""
  from samjax.evaluation.results import table_row
  if doc is None:
    print(f"{process_group.current().label}: done; process 0 wrote {out}")
    return 0
  print(table_row(doc))
  return 0


def run_points(args) -> int:
  from samjax import SamPredictor
  from samjax.evaluation import points
  dataset, sam, model = _prepare(args)
  doc = points.run(SamPredictor(sam), dataset, args.out, model=model,
                   max_points=args.max_points, use_mask_input=not args.no_mask_input,
                   limit=args.limit, chunk=args.batch, progress=not args.no_progress)
  return print_results(doc, args.out)


def run_boxes(args) -> int:
  from samjax import SamPredictor
  from samjax.evaluation import boxes
  if args.detections and not storage.isfile(args.detections):
    raise FileNotFoundError(f"--detections: no such file: {args.detections}")
  dataset, sam, model = _prepare(args)
  doc = boxes.run(SamPredictor(sam), dataset, args.out, model=model,
                  detections=args.detections, masks_out=args.masks_out, limit=args.limit,
                  chunk=args.batch, progress=not args.no_progress)
  if doc is not None:
    print(f"masks: {doc['masks_file']}", file=sys.stderr)
  return print_results(doc, args.out)


def run_proposals(args) -> int:
  from samjax import SamAutomaticMaskGenerator
  from samjax.evaluation import proposals
  dataset, sam, model = _prepare(args)
  gen_settings = generator_kwargs(args)
  generator = SamAutomaticMaskGenerator(sam, points_per_batch=args.points_per_batch,
                                        output_mode="coco_rle", **gen_settings)
  doc = proposals.run(generator, dataset, args.out, model=model,
                      generator_settings=gen_settings, max_proposals=args.max_proposals,
                      rank_by=args.rank_by, limit=args.limit,
                      progress=not args.no_progress)
  return print_results(doc, args.out)
