"""Training input pipeline reading its TFRecords from a bucket 50 ms away, vs local disk.

  .venv/bin/python experiments/bench_data_bucket.py --write experiments/results

Data: bench_data.py's SA-1B-sized sample (--images JPEGs of 1500x2250, ~90
masks each, converted with the converter's defaults: originals + the 1024
training copy + 256 RLEs), built once under --work.

The bucket: a real fake-gcs-server on 127.0.0.1 (tests/storage_servers.py)
holding the converted shards, read through gcsfs as a pod reads gs://. The
latency: a loopback TCP proxy (experiments/latency_proxy.py, its own
process) between gcsfs and the server holds the first bytes of every HTTP
request --delay-ms (50) before forwarding them, so each byte-range request
waits that long once, and requests on different connections wait
concurrently, as against a real bucket. The script measures the added
delay (median of single 1-byte range reads, direct vs through the proxy).

Measured: the pipeline with its default settings (PipelineConfig defaults:
worker_count 0, read_threads None = 16 for gs:// and 2 for a local
directory) at the ViT-H recipe's sizes (image 1024, GT 256, K 64) and its
per-host batch on v5p-128 (256 images / 16 hosts = 16): wall-clock images/s
over --batches batches after 4 warm-up batches, best of --passes interleaved
passes;
then the same over a sweep of read_threads on the bucket. read_threads (=
records read and decoded at once: byte-range requests in flight) is the
setting that governs the bucket rate.

Target: the per-host image rate of the ViT-H recipe on v5p-128, 2.0 img/s per
chip x 4 chips per host = 8 img/s per host (README planning table).
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)
from bench_common import host_description, make_parser, today, write_result  # noqa: E402
from bench_data import build_data  # noqa: E402
from latency_proxy import proxy  # noqa: E402

from data_pipelines import atomic_io, dataset_layout, pipeline, storage  # noqa: E402
from data_pipelines.grain_source import TFRecordSource  # noqa: E402
from tests.storage_servers import gcs_server  # noqa: E402

TARGET_PER_HOST = 8.0  # img/s: ViT-H on v5p-128, 2.0 img/s/chip x 4 chips per host
RECIPE_HOST_BATCH = 16  # ViT-H global batch 256 over v5p-128's 16 hosts


WARMUP_BATCHES = 4


def rate(data_dir: str, batch: int, batches: int, **overrides) -> tuple[float, float]:
  """(wall-clock images/s, CPU ms per image) of the pipeline over ``batches``
  batches after ``WARMUP_BATCHES`` (the source opened, threads started, and
  the records grain read ahead while the first batches were assembled used
  up: 2 batches timed after 2 warm-up batches gave 600 img/s on local disk
  where the steady state is ~100)."""
  cfg = pipeline.PipelineConfig(data_dir, batch_size=batch, image_size=1024, gt_size=256,
                                max_masks=64, seed=0, **overrides)
  it = pipeline.make_iterator(cfg)
  for _ in range(WARMUP_BATCHES):
    b = next(it)
  assert b["image"].shape == (batch, 1024, 1024, 3)
  t0, c0 = time.perf_counter(), time.process_time()
  for _ in range(batches):
    next(it)
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  it.close()  # stops its read threads: they would compete with the next measurement
  n = batches * batch
  return n / wall, 1000 * cpu / n


def request_ms(path: str, runs: int = 20) -> float:
  """Median wall ms of one 1-byte range read of ``path``."""
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    storage.read_range(path, 0, 1)
    times.append(time.perf_counter() - t0)
  return 1000 * statistics.median(times)


def main() -> int:
  ap = make_parser(__doc__, write=False)
  ap.add_argument("--write", metavar="DIR",
                  help="also write DIR/bench_data_bucket_<date>_<host>.md")
  ap.add_argument("--work", default="bench_out/data", help="cache for the sample data")
  ap.add_argument("--images", type=int, default=16)
  ap.add_argument("--batch", type=int, default=RECIPE_HOST_BATCH)
  ap.add_argument("--batches", type=int, default=12, help="timed batches per pass")
  ap.add_argument("--passes", type=int, default=2, help="interleaved passes; the best counts")
  ap.add_argument("--delay-ms", type=float, default=50.0, help="added to every request")
  ap.add_argument("--sweep", default="1,4,8,32",
                  help="read_threads values on the bucket besides the default (16)")
  args = ap.parse_args()
  sweep = [int(x) for x in args.sweep.split(",")]
  # google.auth says once that there is no GCE metadata server (the emulator
  # needs none).
  logging.getLogger("google.auth").setLevel(logging.ERROR)
  local_row = f"local disk, default (read_threads {pipeline.LOCAL_READ_THREADS})"
  default_row = (f"gs:// +{args.delay_ms:g} ms, default (read_threads "
             f"{pipeline.REMOTE_READ_THREADS})")

  local = build_data(args.work, args.images, 1500, 2250, 34, 85)
  load0 = os.getloadavg()
  with tempfile.TemporaryDirectory(prefix="bench-gcs-") as root, gcs_server(root) as server:
    os.environ.update(server.env)
    remote = server.bucket("bench") + "/tfr"
    for rel in storage.walk_files(local):  # uploaded straight to the server
      atomic_io.copy_file(os.path.join(local, rel), storage.join(remote, rel))
    shard = storage.join(remote, storage.listdir(remote)[0])
    direct_ms = request_ms(shard)
    with proxy(server.url.removeprefix("http://"), args.delay_ms / 1000) as url:
      # gcsfs reads STORAGE_EMULATOR_HOST at every request: from here on
      # every request of this process goes through the proxy.
      os.environ["STORAGE_EMULATOR_HOST"] = url
      proxied_ms = request_ms(shard)
      t0 = time.perf_counter()
      n_records = len(TFRecordSource(remote))
      open_ms = 1000 * (time.perf_counter() - t0)
      threads = {local_row: pipeline.LOCAL_READ_THREADS, default_row: pipeline.REMOTE_READ_THREADS}
      rows = {local_row: lambda: rate(local, args.batch, args.batches),
              default_row: lambda: rate(remote, args.batch, args.batches)}
      for t in sweep:
        threads[f"gs:// +{args.delay_ms:g} ms, read_threads {t}"] = t
        rows[f"gs:// +{args.delay_ms:g} ms, read_threads {t}"] = (
            lambda t=t: rate(remote, args.batch, args.batches, read_threads=t))
      runs: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
      for _ in range(args.passes):
        for name, fn in rows.items():
          r, cpu = fn()
          print(f"  {name}: {r:.1f} img/s ({cpu:.1f} CPU ms/img)", flush=True)
          runs[name].append((r, cpu))
  load1 = os.getloadavg()

  best = {name: max(rs) for name, rs in runs.items()}

  def bound(t: int, request_ms: float) -> float:
    """Latency bound (img/s) of t threads at request_ms per request."""
    return 1000 * t / (request_ms + best[default_row][1])
  base, default = best[local_row][0], best[default_row][0]
  n_shards = dataset_layout.load_manifest(local)["num_shards"]
  lines = [
      f"# bench_data_bucket: training input pipeline from a bucket {args.delay_ms:g} ms "
      f"away vs local disk ({today()})",
      "",
      f"Machine: {host_description()}; Python {platform.python_version()}; shared with "
      f"other jobs (load average {load0[0]:.1f} at the start, {load1[0]:.1f} at the end), "
      "so the rates are wall-clock images/s on a busy 2-core host.",
      f"Command: `python experiments/bench_data_bucket.py --images {args.images} --batch "
      f"{args.batch} --batches {args.batches} --passes {args.passes} --delay-ms "
      f"{args.delay_ms:g} --sweep {args.sweep}`.",
      f"Data: {n_records} SA-1B-sized records (2250x1500, ~90 masks, stored 1024 copy + "
      f"256 RLEs; bench_data.py's sample) in {n_shards} shards.",
      "Bucket: fake-gcs-server on 127.0.0.1 read through gcsfs; latency added by a "
      "loopback TCP proxy (experiments/latency_proxy.py, its own process) that holds the "
      f"first bytes of every HTTP request {args.delay_ms:g} ms. One 1-byte range read: "
      f"{direct_ms:.1f} ms direct, {proxied_ms:.1f} ms through the proxy (median of 20). "
      f"Opening the source (manifest + {n_shards} .idx files read concurrently): "
      f"{open_ms:.0f} ms.",
      "Pipeline: PipelineConfig defaults (worker_count 0: one process; read_threads "
      f"None = {pipeline.REMOTE_READ_THREADS} for gs://, {pipeline.LOCAL_READ_THREADS} "
      f"local) at image 1024, GT 256, K 64, batch {args.batch} (ViT-H's per-host batch on "
      f"v5p-128); wall-clock over {args.batches} batches after {WARMUP_BATCHES} warm-up "
      f"batches, best of {args.passes} interleaved passes (all passes listed).",
      "Latency bound: what read_threads requests in flight allow at most, read_threads / "
      "(one request + the CPU ms per image), ignoring CPU limits.",
      "",
      "| what | images/s (wall, best) | all passes | CPU ms per image | latency bound | "
      "vs local default | vs target 8 img/s |",
      "|---|---:|---:|---:|---:|---:|---:|",
  ]
  for name, (r, cpu) in best.items():
    limit = "-" if name == local_row else f"{1000 * threads[name] / (proxied_ms + cpu):.0f}"
    lines.append(f"| {name} | {r:.1f} | {', '.join(f'{x:.0f}' for x, _ in runs[name])} | "
                 f"{cpu:.1f} | {limit} | {r / base:.2f} | {r / TARGET_PER_HOST:.1f}x |")
  lines += [
      "",
      f"Default on the bucket: {default:.1f} img/s, local disk {base:.1f} img/s, ratio "
      f"{default / base:.2f}; target {TARGET_PER_HOST:g} img/s per host (ViT-H, v5p-128: "
      f"2.0 img/s per chip x 4 chips): {'met' if default >= TARGET_PER_HOST else 'NOT met'}"
      f" ({default / TARGET_PER_HOST:.1f}x).",
      "",
      "The setting that governs it is `read_threads` (PipelineConfig; records read and "
      "decoded at once = byte-range requests in flight, per process, or per grain worker "
      "with worker_count > 0). Few threads are latency-bound (each waits for its request "
      "and decodes nothing meanwhile: 1 thread reaches its latency bound); from about 8 "
      "threads on, this 2-core host runs out of CPU instead, and the bucket costs only the "
      "HTTP client's extra CPU per image (the CPU ms column). The default, "
      f"{pipeline.REMOTE_READ_THREADS}, keeps the latency bound (~"
      f"{bound(pipeline.REMOTE_READ_THREADS, proxied_ms):.0f} img/s here) above what one "
      "process decodes, with room for slower requests: at 100 ms per request it is ~"
      f"{bound(pipeline.REMOTE_READ_THREADS, 100):.0f} img/s (8 threads: ~"
      f"{bound(8, 100):.0f}), at the cost of idle threads and up to {pipeline.REMOTE_READ_THREADS} "
      "records (~1 MB each) in flight.",
  ]
  text = "\n".join(lines)
  print(text)
  write_result(args.write, "bench_data_bucket", lines)
  return 0


if __name__ == "__main__":
  sys.exit(main())
