"""The annotation tool's tests: a real server process on a free loopback
port (stopped by PID), small photos, and the trained vit_tiny weights of
``tests/data``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import trained_tiny_state_dict
from tests.storage_servers import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Screenshots of the browser tests (kept after the run; not in git).
ARTIFACTS = os.environ.get("SAMJAX_TEST_OUTPUT", os.path.join(REPO, "test-output"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for headless Chromium on a machine without a display or a network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
NAMES = ("img_0.jpg", "img_1.jpg", "img_2.jpg")


def write_photos(folder, size=(240, 180)) -> None:
  """Three skimage photos as JPEGs (``NAMES``)."""
  import skimage.data
  from PIL import Image
  for name, photo in zip(NAMES, (skimage.data.coffee(), skimage.data.chelsea(),
                                 skimage.data.astronaut())):
    Image.fromarray(photo).resize(size, Image.BILINEAR).save(os.path.join(folder, name),
                                                               quality=92)


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
  d = tmp_path_factory.mktemp("annotate_photos")
  write_photos(d)
  return str(d)


@pytest.fixture(scope="session")
def trained_pth(tmp_path_factory):
  """The trained vit_tiny weights of tests/data as a float32 official .pth."""
  from samjax.interop.torch_io import save_state_dict
  path = str(tmp_path_factory.mktemp("annotate_ckpt") / "sam_tiny_trained.pth")
  save_state_dict(trained_tiny_state_dict(), path)
  return path


@dataclasses.dataclass
class Server:
  url: str
  proc: subprocess.Popen
  log: str

  def get(self, path: str, headers=None):
    """(status, JSON or bytes) of a GET."""
    return _call(urllib.request.Request(self.url + path, headers=headers or {}))

  def post(self, path: str, body: dict, headers=None):
    data = json.dumps(body).encode()
    h = {"Content-Type": "application/json", **(headers or {})}
    return _call(urllib.request.Request(self.url + path, data=data, headers=h))

  def wait_ready(self, image: str, timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
      status, reply = self.post("/api/open", {"image": image})
      assert status == 200, reply
      if reply["ready"] or reply["state"] == "error":
        return reply
      time.sleep(0.1)
    raise TimeoutError(f"{image} not embedded after {timeout} s")

  def output(self) -> str:
    with open(self.log, encoding="utf-8", errors="replace") as f:
      return f.read()


def _call(req):
  try:
    with urllib.request.urlopen(req, timeout=120) as r:
      data, kind = r.read(), r.headers.get_content_type()
      status = r.status
  except urllib.error.HTTPError as e:
    data, kind, status = e.read(), e.headers.get_content_type(), e.code
  return status, (json.loads(data) if kind == "application/json" else data)


@contextlib.contextmanager
def annotate_server(tmp_path, *args, timeout: float = 180.0):
  """``samjax annotate ARGS --port P`` in its own process, on a free
  loopback port; yields a ``Server`` once /api/session answers; killed by
  PID at the end (SIGKILL: nothing it does on exit is relied on)."""
  port = free_port()
  log = str(tmp_path / f"annotate-{port}.log")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
  with open(log, "w") as out:
    proc = subprocess.Popen([sys.executable, "-m", "samjax.cli", "annotate", *args,
                             "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                            env=env, cwd=REPO)
  server = Server(f"http://127.0.0.1:{port}", proc, log)
  try:
    deadline = time.time() + timeout
    while True:
      if proc.poll() is not None:
        raise RuntimeError(f"samjax annotate exited ({proc.returncode}):\n{server.output()}")
      try:
        if server.get("/api/session")[0] == 200:
          break
      except OSError:
        pass
      if time.time() > deadline:
        raise TimeoutError(f"samjax annotate did not serve:\n{server.output()}")
      time.sleep(0.2)
    yield server
  finally:
    proc.kill()
    proc.wait()


@pytest.fixture
def chromium_browser():
  """Debian's chromium, headless, driven by Playwright (nothing downloaded).

  Per test: Playwright's sync API runs an asyncio loop in this thread while
  it is started, and a later test in the same worker that runs its own loop
  (orbax's, asyncio.run) would fail while it is still there."""
  sync_api = pytest.importorskip("playwright.sync_api")
  if not os.path.exists(CHROMIUM):
    pytest.skip(f"no chromium at {CHROMIUM} (make test installs Debian's chromium as root)")
  with sync_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()
