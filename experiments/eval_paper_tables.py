"""The SAM paper's zero-shot tables with `samjax eval`, from public datasets on disk.

  python experiments/eval_paper_tables.py --checkpoint sam_vit_h_4b8939.pth \\
      --data DATA --out-dir experiments/results/eval_vit_h [--tables points boxes proposals] \\
      [--limit 50] [--dry-run]

Nothing is downloaded: each dataset must already sit under --data in the
layout below (docs/evaluation.md says where each one comes from). Missing
datasets are listed and skipped.

  DATA/coco/val2017/*.jpg
  DATA/coco/annotations/instances_val2017.json
  DATA/coco/train2017/*.jpg                       LVIS v1 val uses images of both splits
  DATA/lvis/lvis_v1_val.json
  DATA/detections/coco_val2017.json               a detector's COCO results (the paper: ViTDet-H)
  DATA/detections/lvis_v1_val.json
  DATA/points/<dataset>/annotations.json + images/    one folder per dataset of the
                                                      23-dataset suite, COCO format
  (or DATA/points/<dataset>/ as an SA-1B-layout folder: <stem>.jpg + <stem>.json)

Tables (one `samjax eval` run each, a subprocess, resumable: rerun the same
command after an interruption):
  points     single point -> mask on each dataset of DATA/points (paper Fig. 9):
             1-click mIoU (model's ranking and oracle), mIoU over 1..9 clicks
  boxes      COCO and LVIS mask AP from detector boxes (paper Table 5); without
             DATA/detections/<name>.json the GT boxes are used (an oracle setting)
  proposals  LVIS v1 mask AR@1000 (paper Table 4)

Writes <out-dir>/<table>_<dataset>.json per run and <out-dir>/tables.md.
LVIS AP in the paper is the LVIS API's (federated); `ap` here is COCOeval's,
so for the paper's LVIS number run the LVIS API on the masks file written
beside the results (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# The 23 datasets of the paper's point evaluation, in its order; folders under
# DATA/points are matched by these names (others found there are run too).
POINT_DATASETS = ("ADE20K", "BBBC038v1", "Cityscapes", "DOORS", "DRAM", "EgoHOS", "GTEA",
                  "Hypersim", "IBD", "iShape", "LVIS", "NDD20", "NDISPark", "OVIS", "PPDLS",
                  "Plittersdorf", "STREETS", "TimberSeg", "TrashCan", "VISOR", "WoodScape",
                  "PIDRay", "ZeroWaste-f")


def point_runs(data: str) -> tuple[list[dict], list[str]]:
  root = os.path.join(data, "points")
  found = sorted(os.listdir(root)) if os.path.isdir(root) else []
  order = [n for n in POINT_DATASETS if n in found] + [n for n in found
                                                       if n not in POINT_DATASETS]
  runs, missing = [], [f"points/{n}" for n in POINT_DATASETS if n not in found]
  for name in order:
    folder = os.path.join(root, name)
    ann = os.path.join(folder, "annotations.json")
    if os.path.isfile(ann):
      args = ["--annotations", ann, "--images", os.path.join(folder, "images")]
    else:  # an SA-1B-layout folder
      args = ["--annotations", folder]
    runs.append({"table": "points", "dataset": name, "args": ["--max-points", "9", *args]})
  return runs, missing


def box_runs(data: str) -> tuple[list[dict], list[str]]:
  runs, missing = [], []
  for name, ann, images in (("coco_val2017", "coco/annotations/instances_val2017.json",
                             "coco/val2017"),
                            ("lvis_v1_val", "lvis/lvis_v1_val.json", "coco")):
    ann, images = os.path.join(data, ann), os.path.join(data, images)
    if not os.path.isfile(ann):
      missing.append(os.path.relpath(ann, data))
      continue
    args = ["--annotations", ann, "--images", images]
    dets = os.path.join(data, "detections", name + ".json")
    if os.path.isfile(dets):
      args += ["--detections", dets]
    else:
      print(f"note: no {os.path.relpath(dets, data)}: boxes/{name} uses GT boxes",
            file=sys.stderr)
    runs.append({"table": "boxes", "dataset": name, "args": args})
  return runs, missing


def proposal_runs(data: str) -> tuple[list[dict], list[str]]:
  ann = os.path.join(data, "lvis", "lvis_v1_val.json")
  if not os.path.isfile(ann):
    return [], ["lvis/lvis_v1_val.json"]
  return [{"table": "proposals", "dataset": "lvis_v1_val",
           "args": ["--annotations", ann, "--images", os.path.join(data, "coco"),
                    "--max-proposals", "1000"]}], []


TABLES = {"points": point_runs, "boxes": box_runs, "proposals": proposal_runs}
# Metric columns of tables.md per table (keys of the results JSON).
COLUMNS = {"points": ("miou_1pt", "miou_1pt_oracle", "miou_curve"),
           "boxes": ("ap", "ap_small", "ap_medium", "ap_large"),
           "proposals": ("ar1000", "ar1000_small", "ar1000_medium", "ar1000_large",
                         "ar1000_frequent", "ar1000_common", "ar1000_rare")}


def _cell(v) -> str:
  if isinstance(v, list):
    return " ".join(_cell(x) for x in v)
  return "-" if v is None or v < 0 else f"{100 * v:.1f}"


def markdown(results: list[tuple[dict, dict]]) -> str:
  out = []
  for table, cols in COLUMNS.items():
    rows = [(run, doc) for run, doc in results if run["table"] == table]
    if not rows:
      continue
    out += [f"## {table}", "", "| dataset | " + " | ".join(cols) + " | images | masks |",
            "|" + "---|" * (len(cols) + 3)]
    for run, doc in rows:
      out.append(f"| {run['dataset']} | " + " | ".join(_cell(doc.get(c)) for c in cols)
                 + f" | {doc['num_images']} | {doc['num_masks']} |")
    out.append("")
  return "\n".join(out)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True)
  p.add_argument("--data", required=True, help="folder with the datasets (layout above)")
  p.add_argument("--out-dir", required=True)
  p.add_argument("--tables", nargs="+", choices=sorted(TABLES), default=sorted(TABLES))
  p.add_argument("--limit", type=int, help="first N images of each dataset (a smoke run)")
  p.add_argument("--dry-run", action="store_true", help="print the commands only")
  args = p.parse_args(argv)
  runs, missing = [], []
  for table in args.tables:
    r, m = TABLES[table](args.data)
    runs += r
    missing += m
  if missing:
    print(f"skipped, not under --data: {', '.join(missing)}", file=sys.stderr)
  os.makedirs(args.out_dir, exist_ok=True)
  results, failed = [], []
  for run in runs:
    out = os.path.join(args.out_dir, f"{run['table']}_{run['dataset']}.json")
    cmd = [sys.executable, "-m", "samjax.cli", "eval", run["table"], "--checkpoint",
           args.checkpoint, "--out", out, *run["args"]]
    if args.limit:
      cmd += ["--limit", str(args.limit)]
    print("$", " ".join(cmd), flush=True)
    if args.dry_run:
      continue
    if subprocess.run(cmd).returncode != 0:
      failed.append(run["dataset"])
      continue
    with open(out) as f:
      results.append((run, json.load(f)))
  if results:
    path = os.path.join(args.out_dir, "tables.md")
    with open(path, "w") as f:
      f.write(markdown(results))
    print(f"tables: {path}")
  for name in failed:
    print(f"failed: {name}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
