"""The results file of an evaluation and its one-line, paper-style table row.

``results.json`` (written atomically)::

    {"protocol": "points", "settings": {...}, "model": {...},
     "code_version": {"samjax": "0.1.0", "git_commit": "...", "git_dirty": false},
     "num_images": 500, "num_masks": 3120, "created": "<UTC ISO time>",
     "this_run": {"images_evaluated": 120, "seconds": 61.2},
     <the protocol's metrics, e.g. "miou_1pt": 0.71, "miou_curve": [...]>}

``this_run`` counts the images evaluated by this run (a resumed run: those
left); on N processes, by all of them, ``seconds`` of the slowest, and
``"processes": N``. Only process 0 writes the file (``runner``).

Every path (``--out``, the checkpoint, the data) may be local, ``gs://`` or
``s3://`` (``data_pipelines.storage``).

Metrics are fractions (0..1) as computed (COCOeval's numbers as it gives
them, -1 where it has nothing to average); the table row shows them x100
with one decimal, as the paper's tables do.
"""

from __future__ import annotations

import datetime
import pathlib
import subprocess

from data_pipelines import atomic_io, storage


def code_version() -> dict:
  """samjax's version, plus the git commit (and whether the tree has
  uncommitted changes) when it runs from a git checkout."""
  import samjax
  out = {"samjax": samjax.__version__, "git_commit": None, "git_dirty": None}
  root = str(pathlib.Path(samjax.__file__).resolve().parents[1])  # samjax's own checkout
  try:
    commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                            text=True, timeout=10)
    if commit.returncode == 0:
      out["git_commit"] = commit.stdout.strip()
      status = subprocess.run(["git", "-C", root, "status", "--porcelain",
                               "--untracked-files=no"], capture_output=True, text=True,
                              timeout=10)
      out["git_dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
  except (OSError, subprocess.SubprocessError):  # no git, or a hung one
    pass
  return out


def model_info(checkpoint: str, config=None) -> dict:
  """What identifies the evaluated model: its path and architecture."""
  info = {"checkpoint": storage.resolve(checkpoint) if checkpoint else None}
  if config is not None:
    from samjax.model.configs import variant_name
    info["variant"] = variant_name(config)
    info["config"] = config.to_dict()
  return info


def check_out_path(out: str) -> None:
  """``--out`` checked (and its folder made) before a model loads, so a typo
  costs no waiting."""
  atomic_io.check_output_file(out, "--out")


def load_evaluated_model(checkpoint: str, variant: str | None):
  """(LoadedSam, model info for results.json) of ``--checkpoint``: an
  official .pth, a converted model folder or a training workdir."""
  if not storage.exists(checkpoint):
    raise FileNotFoundError(f"--checkpoint: no such file or directory: {checkpoint}")
  from samjax import load_sam
  sam = load_sam(checkpoint, variant)
  return sam, model_info(checkpoint, sam.config)


def results_document(protocol: str, settings: dict, model: dict, metrics: dict,
                     num_images: int, num_masks: int) -> dict:
  return {"protocol": protocol, "settings": settings, "model": model,
          "code_version": code_version(), "num_images": num_images,
          "num_masks": num_masks,
          "created": datetime.datetime.now(datetime.UTC).isoformat(), **metrics}


def write_results(path: str, doc: dict) -> None:
  atomic_io.write_json(path, doc, indent=2, sort_keys=True, end="\n")


def _pct(v) -> str:
  return "-" if v is None or v < 0 else f"{100 * v:.1f}"


def _fraction(v) -> str:
  """.768, as the paper's edge table prints ODS/OIS/AP/R50."""
  return "-" if v is None or v < 0 else f"{v:.3f}".replace("0.", ".", 1)


# (metric key, column title) of each protocol's table row.
COLUMNS = {
    "points": [("miou_1pt", "1pt"), ("miou_1pt_oracle", "1pt oracle")],
    "boxes": [("ap", "AP"), ("ap_small", "APs"), ("ap_medium", "APm"),
              ("ap_large", "APl")],
    "proposals": [("ar1000", "AR@1000"), ("ar1000_small", "small"),
                  ("ar1000_medium", "med."), ("ar1000_large", "large"),
                  ("ar1000_frequent", "freq."), ("ar1000_common", "com."),
                  ("ar1000_rare", "rare")],
    "edges": [("ods", "ODS"), ("ois", "OIS"), ("ap", "AP"), ("r50", "R50")],
}
# Protocols whose paper table prints fractions, not percentages.
FRACTION_PROTOCOLS = ("edges",)


def table_row(doc: dict) -> str:
  """One line for the results ``doc``: model, then the paper's columns."""
  model = doc["model"].get("variant") or storage.basename(doc["model"]["checkpoint"] or "?")
  cells = [doc["protocol"], model]
  fmt = _fraction if doc["protocol"] in FRACTION_PROTOCOLS else _pct
  cells += [f"{title} {fmt(doc[key])}" for key, title in COLUMNS.get(doc["protocol"], [])
            if key in doc]
  if doc["protocol"] == "points" and doc.get("miou_curve"):
    cells.append("curve " + " ".join(_pct(v) for v in doc["miou_curve"]))
  cells.append(f"{doc['num_images']} images, {doc['num_masks']} masks")
  return " | ".join(cells)
