"""What accelerator hardware this host has, asked before jax starts its backends.

jax picks its platform when a backend first starts, and that choice cannot be
undone; these checks look only at device nodes and installed plugins, so
they can run first. They also keep libtpu quiet on hosts without a TPU:
the ``plan`` extra (and ``make install``) adds libtpu so that ``samjax plan``
can compile for TPU topologies, and without a TPU libtpu prints several lines
of warnings at every jax start-up.

Only samjax's own processes call ``quiet_libtpu_without_tpu`` (``samjax``
commands, the test suite, the experiments): it sets environment variables,
and ``import samjax`` sets none. A Python program on such a host calls it
itself before jax starts, if it wants the quiet.
"""

from __future__ import annotations

import glob
import importlib.util
import os

# What libtpu reads at load time. On a host without a TPU (compile-only
# devices for `samjax plan`) these silence "could not determine TPU
# accelerator type / worker hostnames" and the metadata-server query; there
# is no chip to own, and without ALLOW_MULTIPLE_LIBTPU_LOAD a second process
# using libtpu fails while one runs.
LIBTPU_QUIET_ENV = {"TPU_ACCELERATOR_TYPE": "v5p-8", "TPU_WORKER_HOSTNAMES": "localhost",
                    "TPU_SKIP_MDS_QUERY": "1", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}


def installed(*modules: str) -> bool:
  """Whether any of ``modules`` can be imported (without importing it)."""
  try:
    return any(importlib.util.find_spec(m) is not None for m in modules)
  except (ImportError, ValueError):
    return False


def tpu_present() -> bool:
  """A TPU chip is attached: TPU v2-v4 expose /dev/accel*, v5e/v5p/v6e VFIO
  groups under /dev/vfio."""
  if glob.glob("/dev/accel*"):  # local-only: device nodes of this machine
    return True
  return any(not p.endswith("/vfio")
             for p in glob.glob("/dev/vfio/*"))  # local-only: device nodes of this machine


def gpu_present() -> bool:
  """An NVIDIA GPU is attached (/dev/nvidia0, ...)."""
  return bool(glob.glob("/dev/nvidia[0-9]*"))  # local-only: device nodes of this machine


def has_accelerator() -> bool:
  """A GPU or TPU that jax would use: the hardware and its jax plugin."""
  if tpu_present() and installed("libtpu"):
    return True
  return gpu_present() and installed("jax_cuda12_plugin", "jax_cuda13_plugin")


def quiet_libtpu_env() -> None:
  """Sets ``LIBTPU_QUIET_ENV`` (unless already set); call before libtpu loads."""
  for k, v in LIBTPU_QUIET_ENV.items():
    os.environ.setdefault(k, v)


def quiet_libtpu_without_tpu() -> None:
  """``quiet_libtpu_env`` where libtpu is installed but no TPU is attached.

  Call before jax starts its backends (``samjax.cli.main`` does, first)."""
  if installed("libtpu") and not tpu_present():
    quiet_libtpu_env()
