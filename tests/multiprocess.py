"""Real multi-process runs for tests: N subprocesses joined by
jax.distributed over 127.0.0.1 (gloo collectives on CPU), as a pod launches
a command on every host.

Every process is stopped by its PID when the block ends, whatever happened:
when one process of a jax.distributed run dies, the others block at the
next barrier until jax's heartbeat timeout (100 s) aborts them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from tests.storage_servers import free_port

REPO = str(pathlib.Path(__file__).resolve().parents[1])
# `python -m samjax.cli ARGS`: the command line a user runs.
CLI = [sys.executable, "-m", "samjax.cli"]


def process_env(port: int, count: int, index: int) -> dict:
  """The environment of process ``index`` of ``count``: the variables
  ``samjax train`` documents, the coordinator bound to 127.0.0.1 only, and
  one CPU device per process (each process runs on its own)."""
  return dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
              JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
              JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}",
              JAX_NUM_PROCESSES=str(count), JAX_PROCESS_ID=str(index), JAX_PLATFORMS="cpu",
              XLA_FLAGS="--xla_force_host_platform_device_count=1")


@dataclasses.dataclass
class Process:
  """One started process; its output goes to files (no pipe can fill up
  while the test waits on another process)."""
  popen: subprocess.Popen
  stdout_file: object
  stderr_file: object

  def output(self) -> tuple[str, str]:
    texts = []
    for f in (self.stdout_file, self.stderr_file):
      f.seek(0)
      texts.append(f.read().decode("utf-8", "replace"))
    return texts[0], texts[1]


@contextlib.contextmanager
def launched(argvs: list[list[str]]):
  """Starts process i of len(argvs) with ``argvs[i]``; yields the Process
  list; on leaving, kills (SIGKILL, by PID) every one still running."""
  port, count, procs = free_port(), len(argvs), []
  with contextlib.ExitStack() as files:
    try:
      for index, argv in enumerate(argvs):
        out = files.enter_context(tempfile.TemporaryFile())
        err = files.enter_context(tempfile.TemporaryFile())
        popen = subprocess.Popen(argv, env=process_env(port, count, index), stdout=out,
                                 stderr=err, cwd=REPO)
        procs.append(Process(popen, out, err))
      yield procs
    finally:
      for p in procs:
        if p.popen.poll() is None:
          p.popen.kill()
      for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
          p.popen.wait(timeout=30)


def wait_all(procs: list[Process], timeout: float) -> list[tuple[int, str, str]]:
  """(exit status, stdout, stderr) of every process, once all exited;
  TimeoutError (with their output so far) after ``timeout`` seconds."""
  deadline = time.monotonic() + timeout
  for p in procs:
    try:
      p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      tails = "\n".join(f"--- process {i}: {p.output()[1][-2000:]}"
                        for i, p in enumerate(procs))
      raise TimeoutError(f"processes still running after {timeout} s\n{tails}") from None
  return [(p.popen.returncode, *p.output()) for p in procs]


def run_all(argvs: list[list[str]], timeout: float = 300) -> list[tuple[int, str, str]]:
  """``launched`` + ``wait_all``: the processes' (status, stdout, stderr)."""
  with launched(argvs) as procs:
    return wait_all(procs, timeout)
