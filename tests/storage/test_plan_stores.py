"""``samjax plan --json`` to a bucket (a real moto S3 server and a real
fake-gcs-server): the same report as a local file; a missing bucket is one
line before anything is planned."""

from __future__ import annotations

import json

from data_pipelines import storage
from tests.planning.test_plan import TINY, _run_cli

# Deterministic fields of a report (timings differ between runs).
FIXED = ("platform", "num_chips", "compiled", "param_bytes", "opt_state_bytes",
         "batch_bytes", "model_flops", "program_flops", "step_time_s")


def test_plan_json_on_s3_equals_the_local_one(s3_bucket, tmp_path):
  local, remote = str(tmp_path / "plan.json"), f"{s3_bucket}/plans/plan.json"
  for path in (local, remote):
    rc, _, err = _run_cli(["plan", *TINY, "--gpu", "2", "--gpu-kind", "h100",
                           "--json", path])
    assert rc == 0, err
  a, b = json.loads(storage.read_text(local)), json.loads(storage.read_text(remote))
  assert sorted(a) == sorted(b)
  assert {k: a[k] for k in FIXED} == {k: b[k] for k in FIXED}


def test_plan_json_to_a_missing_bucket_fails_before_planning(gcs_server):
  rc, out, err = _run_cli(["plan", *TINY, "--gpu", "2", "--json",
                           "gs://no-such-bucket-for-plans/plan.json"])
  assert rc == 1 and "no such bucket" in err and len(err.strip().splitlines()) == 1, err
  assert "samjax plan:" not in out  # nothing was planned
