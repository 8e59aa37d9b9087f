"""A loopback TCP proxy that adds a fixed delay to every HTTP request.

  python experiments/latency_proxy.py --target 127.0.0.1:PORT --delay-ms 50

Listens on 127.0.0.1 (a free port, printed as ``PORT <n>`` on the first line
of stdout) and forwards each connection to ``--target`` (also loopback only).
The first bytes a client sends after the server has answered (or on a new
connection) start a new HTTP/1.1 request: they are held ``--delay-ms``
before being forwarded, the rest of the request and the whole response pass
at once. Each request thus waits the delay once, the way a remote object
store's first byte does, and requests on different connections wait
concurrently (asyncio), so many requests in flight overlap their delays as
they would against a real bucket. ``bench_data_bucket.py`` puts it in front
of fake-gcs-server.

Runs as its own process so that its event loop does not compete with the
measured pipeline for the GIL. ``proxy(target, delay_s)`` starts one and
yields its URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

LOOPBACK = "127.0.0.1"


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: dict,
                delay_s: float, upstream: bool) -> None:
  try:
    while data := await reader.read(1 << 16):
      if upstream:
        if state["new_request"]:
          state["new_request"] = False
          await asyncio.sleep(delay_s)
      else:
        state["new_request"] = True  # the client's next bytes are a new request
      writer.write(data)
      await writer.drain()
  except (ConnectionError, asyncio.IncompleteReadError):
    pass
  finally:
    with contextlib.suppress(Exception):
      writer.close()


async def _serve(target_host: str, target_port: int, delay_s: float) -> None:
  async def handle(client_r, client_w):
    try:
      server_r, server_w = await asyncio.open_connection(target_host, target_port)
    except OSError:
      client_w.close()
      return
    state = {"new_request": True}
    await asyncio.gather(_pump(client_r, server_w, state, delay_s, upstream=True),
                         _pump(server_r, client_w, state, delay_s, upstream=False))

  server = await asyncio.start_server(handle, LOOPBACK, 0)
  print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
  async with server:
    await server.serve_forever()


@contextlib.contextmanager
def proxy(target: str, delay_s: float) -> Iterator[str]:
  """Runs the proxy in a child process; yields ``http://127.0.0.1:<port>``.

  The child holds nothing worth a clean shutdown: it is ended with SIGKILL
  (by its pid), which also spares the event loop's noise about cancelled
  connections."""
  proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--target", target,
                           "--delay-ms", str(delay_s * 1000)],
                          stdout=subprocess.PIPE, text=True)
  try:
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "PORT":
      raise RuntimeError(f"latency proxy did not start (said {line!r})")
    yield f"http://{LOOPBACK}:{line[1]}"
  finally:
    if proc.poll() is None:
      os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--target", required=True, help="HOST:PORT to forward to (loopback)")
  ap.add_argument("--delay-ms", type=float, default=50.0, help="added to every request")
  args = ap.parse_args()
  host, _, port = args.target.rpartition(":")
  if host not in (LOOPBACK, "localhost"):
    ap.error("the proxy only forwards to loopback (127.0.0.1)")
  asyncio.run(_serve(host, int(port), args.delay_ms / 1000))
  return 0


if __name__ == "__main__":
  sys.exit(main())
