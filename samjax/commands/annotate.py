"""``samjax annotate``: a local web tool to annotate images with the model in
the loop (SAM's assisted-manual and semi-automatic data-engine stages)."""

from __future__ import annotations

import argparse
import json
import os
import sys

HELP = """\
Serve a web page on this machine to annotate a folder of images with SAM in
the loop, writing SA-1B-layout JSON (docs/annotate.md).

  samjax annotate --images photos/ --checkpoint sam_vit_b.pth --out labels/ \\
      [--annotator NAME] [--prefill amg | --prefill detections.json] [--port 8765]
  samjax annotate stats labels/            seconds, clicks and masks per round
  samjax annotate export labels/ --tar DIR SA-1B tar shards of the folder

Open the printed address in a browser. Click for a foreground point,
right-click (or Shift+click) for a background point, drag for a box; 1/2/3
pick among the three candidate masks; B brush, E eraser, P points; Z undo,
Y redo; Enter accepts the object; N / arrow keys move between images (all
shortcuts are shown on the page). The model and the image embeddings stay
in this process: the page gets masks as PNGs.

--checkpoint is what samjax loads: an official .pth, a samjax model
directory or a `samjax train` workdir (its newest checkpoint). --out gets,
per image, <stem>.json (the SA-1B record with every accepted object and its
provenance: source, clicks, box, seconds, interactions, annotator,
checkpoint, round) and <stem>.jpg, so `samjax data convert --src OUT` reads
the folder as it is. Every accept writes the JSON atomically: killing the
server loses at most the object being edited. A JSON in --out that samjax
did not write for that image is reported and never overwritten.

Embeddings are computed once per image, the next image's in the background,
and cached in --cache (default OUT/.annotate/embeddings), keyed by the
weights, the image bytes and the input size.

--prefill amg fills an "auto" layer per image with the automatic
generator's confident masks (predicted IoU >= 0.92, stability >= 0.96);
--prefill detections.json sends the boxes of a COCO detections file (score
>= --prefill-min-score) through the predictor. The annotator accepts,
rejects or edits them; U shows the pixels no accepted object covers.

The server binds to 127.0.0.1 and answers only this machine; --host
0.0.0.0 (or an address) serves others, with a warning: anyone who reaches
the port can read the images and write annotations.
"""


def register(subparsers):
  p = subparsers.add_parser("annotate", help="annotate images in a browser with SAM in the "
                                             "loop (SA-1B output)",
                            description=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("action", nargs="?", choices=("stats", "export"),
                 help="stats DIR / export DIR --tar DEST (default: serve the tool)")
  p.add_argument("folder", nargs="?", help="the annotation folder (stats, export)")
  p.add_argument("--images", help="folder of images to annotate (not recursive)")
  p.add_argument("--checkpoint", help="official .pth, samjax model directory or workdir")
  p.add_argument("--variant", help="expected model size (vit_b, ...); inferred if omitted")
  p.add_argument("--out", help="output folder of SA-1B JSONs (created if missing)")
  p.add_argument("--annotator", default=os.environ.get("USER", "anonymous"),
                 help="name stored with every object (default: $USER)")
  p.add_argument("--round", dest="round_name",
                 help="round name stored with every object (default: the checkpoint's "
                      "folder or file name)")
  p.add_argument("--prefill", help="'amg' or a COCO detections JSON (semi-automatic stage)")
  p.add_argument("--prefill-points-per-side", type=int, default=32,
                 help="--prefill amg: the generator's grid")
  p.add_argument("--prefill-min-score", type=float, default=0.5,
                 help="--prefill detections.json: lowest detection score used")
  p.add_argument("--cache", help="embedding cache folder (default OUT/.annotate/embeddings)")
  p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
  p.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
  p.add_argument("--tar", help="export: folder for the SA-1B tar shards")
  p.add_argument("--per-tar", type=int, default=100, help="export: images per tar shard")
  p.add_argument("--json", action="store_true", help="stats: print JSON instead of a table")
  p.set_defaults(func=run)


def run(args) -> int:
  if args.action == "stats":
    return _stats(args)
  if args.action == "export":
    from samjax.annotate.export import export_tars
    if not args.folder or not args.tar:
      raise ValueError("usage: samjax annotate export DIR --tar DEST")
    export_tars(args.folder, args.tar, args.per_tar)
    return 0
  missing = [f"--{k}" for k in ("images", "checkpoint", "out") if not getattr(args, k)]
  if missing:
    raise ValueError(f"{' '.join(missing)} required (see samjax annotate --help)")
  return _serve(args)


def _stats(args) -> int:
  from samjax.annotate.stats import collect, format_table
  if not args.folder:
    raise ValueError("usage: samjax annotate stats DIR")
  rows, problems = collect(args.folder)
  for p in problems:
    print(f"samjax annotate stats: skipped {p}", file=sys.stderr)
  if args.json:
    print(json.dumps(rows, indent=1))
  elif rows:
    print(format_table(rows))
  else:
    print(f"no annotations in {args.folder}")
  return 0


def _serve(args) -> int:
  from data_pipelines import storage
  from samjax.annotate.embeddings import weights_fingerprint
  from samjax.annotate.image_folder import ImageFolder
  from samjax.annotate.server import AnnotationServer, is_loopback
  from samjax.annotate.session import AnnotationSession, SessionOptions
  from samjax.loading import load_sam

  folder = ImageFolder(args.images)
  for s in folder.skipped:
    print(f"samjax annotate: skipping {s.name}: {s.reason}", file=sys.stderr)
  if args.prefill and args.prefill != "amg" and not storage.isfile(args.prefill):
    raise FileNotFoundError(f"--prefill {args.prefill}: neither 'amg' nor a file")
  storage.makedirs(args.out)
  checkpoint = storage.resolve(args.checkpoint)
  print(f"samjax annotate: loading {args.checkpoint}", flush=True)
  sam = load_sam(args.checkpoint, args.variant)
  options = SessionOptions(
      annotator=args.annotator, checkpoint=checkpoint,
      round_name=args.round_name or storage.basename(checkpoint.rstrip("/")),
      prefill=args.prefill, prefill_points_per_side=args.prefill_points_per_side,
      prefill_min_score=args.prefill_min_score)
  cache = args.cache or storage.join(args.out, ".annotate", "embeddings")
  session = AnnotationSession(sam, folder, args.out, cache, weights_fingerprint(sam.params),
                              options)
  session.open(folder.names[0])  # the first image's embedding starts now
  server = AnnotationServer(session, args.host, args.port)
  host, port = server.server_address[:2]
  if not is_loopback(args.host):
    print(f"samjax annotate: WARNING: serving on {args.host}: anyone who can reach port "
          f"{port} can see these images and change the annotations", file=sys.stderr)
  shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
  print(f"samjax annotate: {len(folder.names)} images, round {options.round_name!r}, "
        f"annotator {options.annotator!r}; open http://{shown}:{port}/", flush=True)
  try:
    server.serve_forever()
  finally:
    server.server_close()
  return 0
