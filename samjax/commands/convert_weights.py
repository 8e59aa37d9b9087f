"""``samjax convert``: official ``.pth`` / Hugging Face ``SamModel`` <-> samjax model directory."""

from __future__ import annotations

import argparse
import sys
import time

from data_pipelines import storage
from samjax.model.configs import VARIANTS

HELP = """\
Convert between official segment_anything checkpoints, Hugging Face
transformers SamModel folders and samjax.

  samjax convert --from-torch sam_vit_b_01ec64.pth --variant vit_b --out DIR
      reads the .pth with torch.load(weights_only=True), checks every key and
      shape against the variant, and writes DIR/params (orbax) +
      DIR/samjax_model.json (model config).
  samjax convert --to-torch DIR --out sam.pth [--format safetensors]
      writes a state_dict that segment_anything.sam_model_registry[v] loads
      with strict=True, plus sam.pth.json with the official constructor
      arguments (needed to rebuild non-standard sizes). --format safetensors
      writes the same tensors as a safetensors file (load it with
      safetensors.torch.load_file).
  samjax convert --to-hf DIR --out HF_DIR
      writes a folder transformers.SamModel.from_pretrained(HF_DIR) loads
      (config.json + model.safetensors, HF's key names).
  samjax convert --from-hf HF_DIR --out DIR
      reads such a folder (any transformers SamModel checkpoint saved as
      safetensors) into a samjax model directory, as --from-torch does.

--to-torch and --to-hf take a samjax model directory, a training workdir
(its newest checkpoint) or an official .pth.

Every path may be local, gs:// or s3://. Model directories (orbax
checkpoints) are local or gs:// only: orbax cannot write checkpoints to
s3:// yet, so --from-torch / --from-hf --out s3://... is refused up front.
.pth, safetensors and Hugging Face exports work on all three.
"""


def register(subparsers):
  p = subparsers.add_parser("convert",
                            help="official .pth / Hugging Face SamModel <-> samjax model directory",
                            description=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--from-torch", metavar="PTH", help="official .pth to import")
  src.add_argument("--to-torch", metavar="DIR",
                   help="samjax model directory (or training workdir) to export")
  src.add_argument("--from-hf", metavar="HF_DIR",
                   help="Hugging Face transformers SamModel folder to import")
  src.add_argument("--to-hf", metavar="DIR",
                   help="samjax model directory (or training workdir) to export as a "
                        "Hugging Face SamModel folder")
  p.add_argument("--variant", choices=sorted(VARIANTS),
                 help="expected model size for --from-torch / --from-hf (checked "
                      "against the file; inferred when omitted)")
  p.add_argument("--format", choices=("pth", "safetensors"), default=None,
                 help="file format of --to-torch (default pth)")
  p.add_argument("--out", required=True,
                 help="output directory (--from-*, --to-hf) / file path (--to-torch)")
  p.add_argument("--overwrite", action="store_true",
                 help="replace an existing output: a samjax model directory or a "
                      "Hugging Face folder (only one samjax wrote, and only once the "
                      "new one is complete) or a .pth (+ its .pth.json)")
  p.set_defaults(func=run)


def run(args) -> int:
  if args.format is not None and not args.to_torch:
    print("--format is only used with --to-torch", file=sys.stderr)
    return 2
  if args.variant and (args.to_torch or args.to_hf):
    print("--variant is only used with --from-torch / --from-hf", file=sys.stderr)
    return 2
  if args.from_torch:
    return _from_torch(args)
  if args.from_hf:
    return _from_hf(args)
  if args.to_hf:
    return _to_hf(args)
  return _to_torch(args)


def _check_model_dir_out(args) -> None:
  """A model-directory ``--out`` that cannot be written fails before the
  weights are read (an s3:// path, a folder samjax did not write)."""
  from samjax import formats
  from samjax.interop import staged_folder
  from samjax.interop.model_dir import KIND
  out = storage.check_checkpoint_location(args.out)
  staged_folder.check_target(out, formats.MODEL_JSON, args.overwrite, KIND)


def _from_torch(args) -> int:
  from samjax import interop
  t0 = time.time()
  _check_model_dir_out(args)
  config, params = interop.import_official(args.from_torch, args.variant)
  interop.save_model_dir(args.out, params, config, source=args.from_torch,
                         overwrite=args.overwrite)
  print(f"imported {args.from_torch} ({config.describe()}) -> "
        f"{args.out} in {time.time() - t0:.1f}s")
  return 0


def _from_hf(args) -> int:
  from samjax import interop
  from samjax.interop import hf_io
  from samjax.model.configs import get_config
  t0 = time.time()
  _check_model_dir_out(args)
  config, params = hf_io.load_hf_dir(args.from_hf)
  if args.variant and not get_config(args.variant).same_architecture(config):
    raise ValueError(f"--variant {args.variant} was given but {args.from_hf} holds "
                     f"{config.describe()}")
  interop.save_model_dir(args.out, params, config, source=storage.resolve(args.from_hf),
                         overwrite=args.overwrite)
  print(f"imported Hugging Face {args.from_hf} ({config.describe()}) -> "
        f"{args.out} in {time.time() - t0:.1f}s")
  return 0


def _to_hf(args) -> int:
  from samjax.interop import hf_io
  from samjax.loading import load_config_and_params
  t0 = time.time()
  hf_io.require_safetensors()  # fail before loading the model when it is missing
  out = storage.resolve(args.out)
  hf_io.check_target(out, args.overwrite)
  config, params = load_config_and_params(args.to_hf)
  tensors = hf_io.save_hf_dir(out, params, config, source=storage.resolve(args.to_hf),
                              overwrite=args.overwrite)
  print(f"exported {args.to_hf} ({config.describe()}) -> Hugging Face SamModel folder "
        f"{args.out} ({len(tensors)} tensors) in {time.time() - t0:.1f}s")
  return 0


def _to_torch(args) -> int:
  from samjax import interop
  from samjax.interop import hf_io
  from samjax.loading import load_config_and_params
  t0 = time.time()
  fmt = args.format or "pth"
  if storage.isdir(args.out):
    raise FileExistsError(f"--out {args.out} is a directory; give a .{fmt} file path")
  if storage.exists(args.out) and not args.overwrite:
    raise FileExistsError(f"{args.out} exists (pass --overwrite to replace it)")
  if fmt == "safetensors":
    hf_io.require_safetensors()  # fail before loading the model when it is missing
  config, params = load_config_and_params(args.to_torch)
  if fmt == "safetensors":
    sd = hf_io.export_official_safetensors(params, config, args.out)
  else:
    sd = interop.export_official(params, config, args.out)
  print(f"exported {args.to_torch} -> {args.out} ({fmt}, {len(sd)} tensors; constructor "
        f"arguments in {interop.sidecar_path(args.out)}) in {time.time() - t0:.1f}s")
  return 0
