"""`samjax amg` with the official command line against the official
scripts/amg.py, file by file, on the same weights (default: ViT-B).

The official script is not in the installed package; its code path is the
transcription in tests/official_amg_script.py (parser, registry loading,
``.to(device)``, OpenCV decoding, ``write_masks_to_folder``). Both run on
the same seeded random official weights, saved as a .pth, over a folder of
PNG photographs (PNG: OpenCV and PIL decode the same pixels). Random weights
keep few masks at the official thresholds, so the default run opens the
filters (``--pred-iou-thresh 0 --stability-score-thresh 0``); NMS still
merges random weights' masks into about one per image, so
``--box-nms-thresh 1.0`` keeps all of them (3 per point); give
``--official-thresholds`` for the official filters.

Prints, per image: masks, PNGs byte-identical, PNGs differing (and their
largest fraction of differing pixels), metadata.csv rows identical as text,
largest float difference in a row. Exit status 1 if the file lists differ.

  python experiments/check_amg_official.py [--variant vit_b] [--points-per-side 16]
  python experiments/check_amg_official.py --write experiments/results
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from bench_common import Report, make_parser  # noqa: E402


def _files(root):
  return sorted(os.path.relpath(os.path.join(dp, f), root)
                for dp, _, fs in os.walk(root) for f in fs)


def compare_folder(ours: str, ref: str) -> dict:
  """Per-image comparison of two official-layout output folders."""
  import cv2
  pngs = [n for n in _files(ref) if n.endswith(".png")]
  same = differ = 0
  worst = 0.0
  for name in pngs:
    with open(os.path.join(ours, name), "rb") as fa, open(os.path.join(ref, name), "rb") as fb:
      if fa.read() == fb.read():
        same += 1
        continue
    a = cv2.imread(os.path.join(ours, name), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(os.path.join(ref, name), cv2.IMREAD_UNCHANGED)
    differ += 1
    worst = max(worst, float((a != b).mean()) if a.shape == b.shape else 1.0)
  with open(os.path.join(ours, "metadata.csv")) as f:
    rows_a = list(csv.reader(f.read().split("\n")))
  with open(os.path.join(ref, "metadata.csv")) as f:
    rows_b = list(csv.reader(f.read().split("\n")))
  text_same = sum(ra == rb for ra, rb in zip(rows_a[1:], rows_b[1:]))
  float_diff = 0.0
  other_diff = 0
  for ra, rb in zip(rows_a[1:], rows_b[1:]):
    for col, x, y in zip(rows_a[0], ra, rb):
      if col in ("predicted_iou", "stability_score"):
        float_diff = max(float_diff, abs(float(x) - float(y)))
      elif x != y:
        other_diff += 1
  return {"masks": len(pngs), "png_same": same, "png_differ": differ,
          "worst_pixel_fraction": worst, "rows": len(rows_b) - 1,
          "rows_text_same": text_same, "max_float_diff": float_diff,
          "other_cells_differ": other_diff,
          "header_same": rows_a[0] == rows_b[0] and len(rows_a) == len(rows_b)}


def main(argv=None) -> int:
  ap = make_parser(__doc__, variant="vit_b")
  ap.add_argument("--points-per-side", type=int, default=16)
  ap.add_argument("--official-thresholds", action="store_true",
                  help="keep the official pred-iou / stability thresholds")
  ap.add_argument("--box-nms-thresh", type=float, default=None,
                  help="passed to both (1.0 keeps every mask: random weights "
                       "otherwise collapse to about one mask per image after NMS)")
  args = ap.parse_args(argv)

  import segment_anything
  import skimage.data
  import torch
  from PIL import Image

  from tests import official_amg_script
  from tests.conftest import randomize_official

  torch.manual_seed(0)
  sam = randomize_official(segment_anything.sam_model_registry[args.variant]().eval())
  flags = ["--points-per-side", str(args.points_per_side)]
  if not args.official_thresholds:
    flags += ["--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
  if args.box_nms_thresh is not None:
    flags += ["--box-nms-thresh", str(args.box_nms_thresh)]
  report = Report(f"samjax amg vs official scripts/amg.py, {args.variant}",
                  f"settings: {' '.join(flags)} (others: official defaults)",
                  f"torch threads: {torch.get_num_threads()}")
  say = report.say
  with tempfile.TemporaryDirectory() as tmp:
    pth = os.path.join(tmp, f"{args.variant}.pth")
    torch.save(sam.state_dict(), pth)
    images = os.path.join(tmp, "images")
    os.makedirs(images)
    Image.fromarray(skimage.data.chelsea()).save(os.path.join(images, "cat.png"))
    Image.fromarray(skimage.data.coffee()).save(os.path.join(images, "coffee.png"))
    ours, ref = os.path.join(tmp, "ours"), os.path.join(tmp, "ref")
    common = ["--checkpoint", pth, "--model-type", args.variant, "--input", images,
              "--device", "cpu", *flags]
    out = subprocess.run([sys.executable, "-m", "samjax.cli", "amg", *common, "--output", ours,
                          "--output-format", "official", "--no-progress"],
                         env=dict(os.environ, PYTHONPATH=REPO), text=True,
                         capture_output=True, check=False)
    if out.returncode != 0:
      raise SystemExit(f"samjax amg failed:\n{out.stderr[-3000:]}")
    package = types.SimpleNamespace(
        SamAutomaticMaskGenerator=segment_anything.SamAutomaticMaskGenerator,
        sam_model_registry=segment_anything.sam_model_registry)
    official_amg_script.run(package, [*common, "--output", ref])
    if _files(ours) != _files(ref):
      say(f"file lists differ: samjax {len(_files(ours))} files, official {len(_files(ref))}")
      report.write(args.write, f"check_amg_official_{args.variant}")
      return 1
    say("| image | masks | PNGs byte-identical | PNGs differing (worst pixel fraction) "
        "| csv rows identical as text | max IoU/stability diff | other cells differing |")
    say("|---|---|---|---|---|---|---|")
    for stem in sorted(os.listdir(ref)):
      r = compare_folder(os.path.join(ours, stem), os.path.join(ref, stem))
      say(f"| {stem} | {r['masks']} | {r['png_same']} | {r['png_differ']} "
          f"({r['worst_pixel_fraction']:.2e}) | {r['rows_text_same']}/{r['rows']} | "
          f"{r['max_float_diff']:.1e} | {r['other_cells_differ']} |")
  say("")
  say(f"Reproduce: `python experiments/check_amg_official.py --variant {args.variant} "
      f"--points-per-side {args.points_per_side}"
      f"{' --official-thresholds' if args.official_thresholds else ''}"
      f"{f' --box-nms-thresh {args.box_nms_thresh}' if args.box_nms_thresh is not None else ''}`")
  report.write(args.write, f"check_amg_official_{args.variant}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
