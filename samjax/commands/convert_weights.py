"""``samjax convert``: official ``.pth`` <-> samjax model directory."""

from __future__ import annotations

import argparse
import sys
import time

from samjax.model.configs import VARIANTS

HELP = """\
Convert between official segment_anything checkpoints and samjax.

  samjax convert --from-torch sam_vit_b_01ec64.pth --variant vit_b --out DIR
      reads the .pth with torch.load(weights_only=True), checks every key and
      shape against the variant, and writes DIR/params (orbax) +
      DIR/samjax_model.json (model config).
  samjax convert --to-torch DIR --out sam.pth
      writes a state_dict that segment_anything.sam_model_registry[v] loads
      with strict=True, plus sam.pth.json with the official constructor
      arguments (needed to rebuild non-standard sizes).
"""


def register(subparsers):
  p = subparsers.add_parser("convert", help="official .pth <-> samjax model directory",
                            description=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--from-torch", metavar="PTH", help="official .pth to import")
  src.add_argument("--to-torch", metavar="DIR",
                   help="samjax model directory (or training workdir) to export")
  p.add_argument("--variant", choices=sorted(VARIANTS),
                 help="expected model size for --from-torch (checked against the "
                      "file; inferred from the shapes when omitted)")
  p.add_argument("--out", required=True, help="output directory / .pth path")
  p.add_argument("--overwrite", action="store_true",
                 help="replace an existing output: a samjax model directory (only one "
                      "samjax wrote, and only once the new one is complete) or a .pth "
                      "(+ its .pth.json)")
  p.set_defaults(func=run)


def run(args) -> int:
  from samjax import interop
  t0 = time.time()
  if args.from_torch:
    config, params = interop.import_official(args.from_torch, args.variant)
    interop.save_model_dir(args.out, params, config, source=args.from_torch,
                           overwrite=args.overwrite)
    print(f"imported {args.from_torch} ({config.describe()}) -> "
          f"{args.out} in {time.time() - t0:.1f}s")
  else:
    if args.variant:
      print("--variant is only used with --from-torch", file=sys.stderr)
      return 2
    import os
    if os.path.isdir(args.out):
      raise FileExistsError(f"--out {args.out} is a directory; give a .pth file path")
    if os.path.exists(args.out) and not args.overwrite:
      raise FileExistsError(f"{args.out} exists (pass --overwrite to replace it)")
    from samjax.loading import load_config_and_params
    config, params = load_config_and_params(args.to_torch)
    sd = interop.export_official(params, config, args.out)
    print(f"exported {args.to_torch} -> {args.out} ({len(sd)} tensors; constructor "
          f"arguments in {interop.sidecar_path(args.out)}) in {time.time() - t0:.1f}s")
  return 0
