"""`samjax eval` on several processes: each evaluates its share into the
shared per-image log, process 0 alone merges and writes results.json, with
the numbers of one process."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from samjax.cli import main
from samjax.evaluation.per_image_log import read_records
from samjax.evaluation.runner import ProcessFailed, run_protocol
from samjax.inference.process_group import ProcessGroup
from tests.multiprocess import CLI, run_all

# Keys that differ between any two runs (time, this run's share).
_RUN_KEYS = ("created", "this_run", "per_image_log")


@pytest.mark.xdist_group("processes")
def test_points_on_two_processes_has_the_numbers_of_one(tiny_official_pth, eval_set,
                                                        tmp_path):
  args = ["eval", "points", "--checkpoint", tiny_official_pth, "--annotations",
          eval_set["annotations"], "--images", eval_set["images"], "--max-points", "1"]
  one, two = tmp_path / "one" / "r.json", tmp_path / "two" / "r.json"
  assert main([*args, "--out", str(one), "--no-progress"]) == 0
  runs = run_all([CLI + [*args, "--out", str(two)]] * 2)
  for index, (rc, _, stderr) in enumerate(runs):
    assert rc == 0, stderr[-3000:]
    share = (2, 1)[index]  # 3 images, round robin
    assert f"points: process {index}/2: {share} of 3 images (0 already in" in stderr, stderr
  assert "points | vit_tiny | 1pt " in runs[0][1]
  assert "points |" not in runs[1][1] and "process 1/2: done; process 0 wrote" in runs[1][1]
  ref, got = json.loads(one.read_text()), json.loads(two.read_text())
  assert got["this_run"]["images_evaluated"] == 3 and got["this_run"]["processes"] == 2
  assert {k: v for k, v in got.items() if k not in _RUN_KEYS} == {
      k: v for k, v in ref.items() if k not in _RUN_KEYS}
  # One results file; the per-image files are those of one process, byte for byte.
  assert sorted(os.listdir(two.parent)) == ["r.images", "r.json"]
  ref_log, log = one.parent / "r.images", two.parent / "r.images"
  assert sorted(os.listdir(log)) == sorted(os.listdir(ref_log))
  for name in os.listdir(ref_log):
    assert (log / name).read_bytes() == (ref_log / name).read_bytes(), name


@dataclasses.dataclass(frozen=True)
class _TwoProcesses(ProcessGroup):
  """Process ``index`` of 2 in one process: the other's summary at each
  meeting is given (``peer``); the meetings held are recorded."""
  peer: dict = dataclasses.field(default_factory=dict)
  met: list = dataclasses.field(default_factory=list)

  def exchange(self, name, summary):
    self.met.append((name, summary))
    return [summary, self.peer[name]] if self.index == 0 else [self.peer[name], summary]


def _run(out, group, evaluate_image=lambda i: {"v": i}, summarized=None):
  """A protocol over images 1..4; ``summarized`` gets the records summarized."""
  def summarize(records):
    if summarized is not None:
      summarized.extend(records)
    return {"m": 1}

  return run_protocol(protocol="t", out=str(out), settings={}, model={},
                      image_ids=[1, 2, 3, 4], evaluate_image=evaluate_image,
                      summarize=summarize, count_masks=lambda r: 1, progress=False,
                      group=group)


def _logged(out) -> list[str]:
  return sorted(r["image"] for r in read_records(str(out.parent / "r.images")))


def test_process_1_evaluates_its_share_and_process_0_merges(tmp_path):
  out = tmp_path / "r.json"
  done = {"images_evaluated": 2, "seconds": 1.0}
  assert _run(out, _TwoProcesses(1, 2, peer={"eval": done, "eval-results": {}})) is None
  assert _logged(out) == ["2", "4"] and not out.exists()
  records = []
  doc = _run(out, _TwoProcesses(0, 2, peer={"eval": done, "eval-results": {}}),
             summarized=records)
  assert _logged(out) == ["1", "2", "3", "4"]
  assert [r["v"] for r in records] == [1, 2, 3, 4]  # every image, in list order
  assert doc["this_run"] == {"images_evaluated": 4, "seconds": 1.0, "processes": 2}
  assert json.loads(out.read_text())["num_images"] == 4


def test_an_error_anywhere_stops_every_process_without_results(tmp_path):
  out = tmp_path / "r.json"
  failed = {"error": "OSError: disk full"}
  with pytest.raises(ProcessFailed, match="process 1/2: OSError: disk full"):
    _run(out, _TwoProcesses(0, 2, peer={"eval": failed}))
  assert not out.exists()

  def broken(image_id):
    raise OSError("no space")

  group = _TwoProcesses(1, 2, peer={"eval": {"images_evaluated": 2, "seconds": 1.0}})
  with pytest.raises(OSError, match="no space"):
    _run(tmp_path / "b" / "r.json", group, evaluate_image=broken)
  assert group.met == [("eval", {"error": "OSError: no space"})]  # the others are told
