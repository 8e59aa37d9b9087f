"""`samjax amg` on several processes, as on every host of a pod: real
processes joined by jax.distributed over 127.0.0.1 (gloo on CPU).

Together they write exactly the files of a one-process run, byte for byte,
and after a kill -9 of one of them a restart on another number of processes
finishes the rest and loses nothing.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import pytest

from data_pipelines import atomic_io
from samjax.cli import main
from samjax.commands import amg
from samjax.inference import process_group
from samjax.inference.process_group import ProcessGroup
from tests.inference.amg_helpers import KILLING_RUNNER, SETTINGS, assert_equal_folders
from tests.multiprocess import CLI, launched, run_all, wait_all

# Several processes at once: one such test at a time on the 2 CI cores.
pytestmark = pytest.mark.xdist_group("processes")


def _argv(checkpoint, images, out) -> list[str]:
  return ["amg", "--checkpoint", checkpoint, "--images", str(images), "--out", str(out),
          *SETTINGS, "--copy-images"]


def test_two_processes_write_what_one_writes(tiny_official_pth, amg_images, amg_reference,
                                             tmp_path):
  out = tmp_path / "out"
  runs = run_all([CLI + _argv(tiny_official_pth, amg_images, out)] * 2)
  for index, (rc, stdout, stderr) in enumerate(runs):
    assert rc == 0, stderr[-3000:]
    # Round robin: images 0 and 2 to process 0, 1 and 3 to process 1.
    assert f"process {index}/2: 2 of 4 images (0 already done, 2 to do)" in stderr, stderr
    assert f"process {index}/2: 2 image(s) labelled" in stdout, stdout
  assert "2 processes: 4 of 4 images done, 0 failed" in runs[0][1]
  assert_equal_folders(out, amg_reference)


def test_kill_one_of_two_then_restart_on_three(tiny_official_pth, amg_images, amg_reference,
                                               tmp_path):
  """Process 1 of 2 (sa_2, sa_4) is SIGKILLed halfway through writing its
  second JSON; process 0 finishes its share and waits for it until killed.
  Three processes then redo sa_4 alone, whose temp file the new owner
  (process 0 of 3) removes."""
  out = tmp_path / "out"
  argv = _argv(tiny_official_pth, amg_images, out)
  with launched([CLI + argv, [sys.executable, "-c", KILLING_RUNNER, ".json", "2", *argv]]
                ) as procs:
    assert wait_all(procs[1:], timeout=300)[0][0] == -9
    _wait_for(lambda: all((out / f"sa_{i}.json").exists() for i in (1, 3)), procs[0], 120)
    assert procs[0].popen.poll() is None  # it waits for process 1 at the end
  names = set(os.listdir(out))
  temps = {n for n in names if atomic_io.TEMP_MARKER in n}
  assert len(temps) == 1 and next(iter(temps)).startswith("sa_4.json"), names
  assert names - temps == {f"sa_{i}.{e}" for i in (1, 2, 3) for e in ("jpg", "json")} | {
      "sa_4.jpg"}
  runs = run_all([CLI + argv] * 3)
  for rc, _, stderr in runs:
    assert rc == 0, stderr[-3000:]
  assert "process 0/3: 1 image(s) labelled" in runs[0][1], runs[0][1]
  assert "removed 1 temp file(s)" in runs[0][2], runs[0][2]
  for index in (1, 2):
    assert f"process {index}/3: all 1 image(s) already done" in runs[index][1]
  assert_equal_folders(out, amg_reference)


def _wait_for(condition, proc, timeout: float) -> None:
  deadline = time.monotonic() + timeout
  while not condition():
    assert proc.popen.poll() is None, proc.output()[1][-3000:]
    assert time.monotonic() < deadline, proc.output()[1][-3000:]
    time.sleep(0.2)


@dataclasses.dataclass(frozen=True)
class _OneOfTwo(ProcessGroup):
  """Process ``index`` of 2 run in this process; the other's summary says
  it had nothing to do."""

  def exchange(self, name, summary):
    other = {"labelled": 0, "recopied": 0, "done_before": 0, "failed": 0}
    return [summary, other] if self.index == 0 else [other, summary]


def test_official_layout_is_split_the_same_way(tiny_official_pth, amg_images, tmp_path,
                                               monkeypatch, capsys):
  """--output-format official (PNG folders): the shares of process 0 and 1
  of 2, run one after the other here, write a one-process run's files."""
  one, two = tmp_path / "one", tmp_path / "two"
  argv = ["amg", "--checkpoint", tiny_official_pth, "--images", str(amg_images), *SETTINGS,
          "--output-format", "official"]
  assert main([*argv, "--out", str(one)]) == 0
  for index in (0, 1):
    monkeypatch.setattr(process_group, "join", lambda index=index: _OneOfTwo(index, 2))
    assert main([*argv, "--out", str(two)]) == 0
    assert f"process {index}/2: 2 image(s) labelled" in capsys.readouterr().out
    written = [(1, 3), (1, 2, 3, 4)][index]  # process 0: images 0 and 2; then 1 and 3
    assert sorted(os.listdir(two)) == [f"sa_{i}" for i in written]
  assert_equal_folders(two, one)


@pytest.mark.parametrize("summaries, status", [
    ([{"labelled": 0, "recopied": 0, "done_before": 0, "failed": 2},
      {"labelled": 1, "recopied": 0, "done_before": 0, "failed": 0}], 0),
    ([{"labelled": 0, "recopied": 0, "done_before": 0, "failed": 2},
      {"labelled": 0, "recopied": 0, "done_before": 0, "failed": 0}], 1),
    ([{"labelled": 3, "recopied": 0, "done_before": 0, "failed": 0},
      {"error": "OSError: disk full"}], 1),
])
def test_exit_status_is_one_process_rule_over_all(summaries, status, capsys):
  """Every process exits with the status one process would have: 1 when no
  image at all was processed, or when any process stopped on an error."""
  assert amg._exit_status(summaries, ProcessGroup(0, 2), 5) == status
  if any("error" in s for s in summaries):
    assert "process 1/2 stopped: OSError: disk full" in capsys.readouterr().err
