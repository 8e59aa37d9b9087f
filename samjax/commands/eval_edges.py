"""``samjax eval edges``: SAM's zero-shot edge detection on BSDS500 (ODS / OIS / AP / R50)."""

from __future__ import annotations

import argparse
import os

from data_pipelines import storage

PROTOCOL = "edges"

HELP = """\
Zero-shot edge detection (SAM paper section 7.2, appendix D.2) scored with
the BSDS500 boundary benchmark.

  samjax eval edges --checkpoint sam_vit_h_4b8939.pth \\
      --images BSR/BSDS500/data/images/test --gt BSR/BSDS500/data/groundTruth/test \\
      --out results/edges_vit_h.json

Per image: a 16x16 grid of foreground points -> 768 masks (3 per point) ->
box NMS (0.7) -> Sobel of each kept mask's probability map on its boundary
pixels -> max over masks -> normalised to [0, 1] -> edge NMS. Scored at 99
thresholds, matching within 0.0075 x the image diagonal against every
annotator (see docs/evaluation_edges.md for each choice).

--images: the images (<id>.jpg or any image format). --gt: for each <id>,
<id>.mat in the BSDS500 layout (a groundTruth cell of Boundaries maps, one
per annotator) or plain PNG boundary maps <id>.png / <id>_<k>.png (nonzero =
boundary, one file per annotator).

--out gets ods, ois, ap, r50 (and the precision / recall / threshold behind
ODS and OIS), the settings, the model and the code version, written
atomically in the other protocols' results layout. Per-image counts go to
<out>.images/ (one file per image) as each image finishes: rerun the same command after a
kill to continue (a log made with other settings is refused). Scoring
(thinning and matching at 99 thresholds, CPU bound) runs in --workers
processes beside the model. On N processes (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID, as for `samjax train`) each evaluates
image i % N of the sorted ids and process 0 alone writes --out: see
`samjax eval --help`.
"""


def add_parser(eval_subparsers):
  """Adds ``edges`` to the ``samjax eval`` sub-commands."""
  p = eval_subparsers.add_parser(
      "edges", help="zero-shot edge detection on BSDS500 (ODS, OIS, AP, R50)",
      description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True,
                 help="official .pth, samjax model directory or training workdir")
  p.add_argument("--variant", help="expected model size (inferred if omitted)")
  p.add_argument("--images", required=True, help="folder of images (<id>.<ext>)")
  p.add_argument("--gt", required=True, help="folder of <id>.mat or <id>[_<k>].png")
  p.add_argument("--out", required=True, help="results JSON to write")
  p.add_argument("--points-per-side", type=int, default=16,
                 help="point grid side (default 16: 768 masks)")
  p.add_argument("--thresholds", type=int, default=99,
                 help="number of evaluation thresholds (default 99)")
  p.add_argument("--max-dist", type=float, default=0.0075,
                 help="matching tolerance as a fraction of the image diagonal "
                      "(default 0.0075)")
  p.add_argument("--limit", type=int, help="evaluate only the first N images (sorted ids)")
  p.add_argument("--workers", type=int, default=None,
                 help="scoring processes (default: CPU cores - 1, at most 8; "
                      "0 scores in this process)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=run)
  return p


def list_image_ids(images_dir: str) -> dict[str, str]:
  """{id: path} of the image files in ``images_dir`` (id = file stem)."""
  from samjax.inference.sa1b_records import IMAGE_EXTS
  if not storage.isdir(images_dir):
    raise FileNotFoundError(f"--images {images_dir}: no such folder")
  out: dict[str, str] = {}
  for name in storage.listdir(images_dir):
    stem, ext = storage.splitext(name)
    path = storage.join(images_dir, name)
    if ext.lower() in IMAGE_EXTS and storage.isfile(path):
      if stem in out:
        raise ValueError(f"--images {images_dir}: two images with the id {stem!r} "
                         f"({storage.basename(out[stem])}, {name})")
      out[stem] = path
  if not out:
    raise ValueError(f"--images {images_dir}: no image files ({', '.join(IMAGE_EXTS)})")
  return out


def _check_args(args) -> None:
  if args.points_per_side < 1:
    raise ValueError(f"--points-per-side must be >= 1, got {args.points_per_side}")
  if args.thresholds < 1:
    raise ValueError(f"--thresholds must be >= 1, got {args.thresholds}")
  if not 0 < args.max_dist < 1:
    raise ValueError(f"--max-dist must be in (0, 1) (a fraction of the diagonal), "
                     f"got {args.max_dist}")
  if args.limit is not None and args.limit < 1:
    raise ValueError(f"--limit must be >= 1, got {args.limit}")
  if args.workers is not None and args.workers < 0:
    raise ValueError(f"--workers must be >= 0, got {args.workers}")


def _score(edges, gt_paths, n_thresholds, max_dist):
  """One image's counts (runs in a worker process)."""
  from samjax.evaluation.edges_gt import read_ground_truth
  from samjax.evaluation.edges_metrics import image_counts
  return image_counts(edges, read_ground_truth(gt_paths), n_thresholds, max_dist)


def run(args) -> int:
  _check_args(args)
  from samjax.evaluation.edges_gt import ground_truth_files, read_ground_truth
  from samjax.evaluation.edges_pipeline import EdgeSettings
  from samjax.evaluation.results import check_out_path, load_evaluated_model
  images = list_image_ids(args.images)
  ids = sorted(images)[:args.limit] if args.limit else sorted(images)
  gt = ground_truth_files(args.gt, ids)
  # Every ground truth is read before the model loads: a bad file fails in
  # seconds, not after hours of inference.
  gt_shapes = {i: read_ground_truth(gt[i])[0].shape for i in ids}
  check_out_path(args.out)
  from samjax.inference import process_group
  process_group.join()  # before jax starts: on N processes, this one's place
  sam, model = load_evaluated_model(args.checkpoint, args.variant)
  protocol = EdgeSettings(points_per_side=args.points_per_side)
  settings = {
      "images": storage.resolve(args.images), "gt": storage.resolve(args.gt),
      "points_per_side": protocol.points_per_side,
      "box_nms_thresh": protocol.box_nms_thresh, "thresholds": args.thresholds,
      "max_dist": args.max_dist, "thin": True,
  }
  from samjax.commands.evaluate import print_results
  from samjax.evaluation.edges_metrics import dataset_scores
  from samjax.evaluation.runner import run_protocol

  def summarize(records):
    metrics = dataset_scores(records, args.thresholds)
    del metrics["n_images"]  # the document's num_images
    return metrics

  doc = run_protocol(
      protocol=PROTOCOL, out=args.out, settings=settings, model=model, image_ids=ids,
      summarize=summarize, count_masks=lambda r: r["n_masks"],
      evaluate_images=lambda todo, emit: _evaluate(args, sam, todo, images, gt, gt_shapes,
                                                   protocol, emit),
      extra={"image_ids": ids}, progress=not args.no_progress)
  return print_results(doc, args.out)


def _evaluate(args, sam, todo, images, gt, gt_shapes, protocol, emit) -> None:
  """Runs the model on ``todo`` and scores each image, in ``--workers``
  processes; each image's counts go to ``emit`` as soon as they are ready."""
  import concurrent.futures as cf
  import multiprocessing

  from samjax import SamPredictor
  from samjax.evaluation.edges_pipeline import detect_edges
  from samjax.inference.image_io import read_image
  workers = args.workers
  if workers is None:
    workers = max(0, min(8, (os.cpu_count() or 1) - 1))
  predictor = SamPredictor(sam)
  # Spawned, not forked: this process runs jax (threads), which fork breaks.
  pool = (cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
          if workers else None)
  pending: dict = {}

  def finish(done) -> None:
    for fut in done:
      image_id, info = pending.pop(fut)
      emit(image_id, {**fut.result(), **info})

  try:
    for image_id in todo:
      image = read_image(images[image_id])
      if image.shape[:2] != gt_shapes[image_id]:
        h, w = gt_shapes[image_id]
        raise ValueError(f"{images[image_id]} is {image.shape[0]}x{image.shape[1]}, its "
                         f"ground truth {gt[image_id][0]} {h}x{w}")
      result = detect_edges(predictor, image, protocol)
      info = {"height": image.shape[0], "width": image.shape[1],
              "n_masks": result.n_masks, "n_kept": result.n_kept}
      job = (result.edges, gt[image_id], args.thresholds, args.max_dist)
      if pool is None:
        emit(image_id, {**_score(*job), **info})
        continue
      pending[pool.submit(_score, *job)] = (image_id, info)
      if len(pending) >= 2 * workers:  # bounded: scoring keeps pace with the model
        done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        finish(done)
    while pending:
      done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
      finish(done)
  finally:
    if pool is not None:
      pool.shutdown(wait=True, cancel_futures=True)
