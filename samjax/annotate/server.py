"""HTTP for an annotation session: the page (``static/``) and a JSON API
(docs/annotate_api.md) on top of ``session.AnnotationSession``.

Bound to loopback (the default), the server also refuses what could reach it
from elsewhere: a client address that is not loopback, a Host header that
does not name this machine (DNS rebinding: a web page on another site that
resolves its name to 127.0.0.1), and a POST whose Origin is another site or
whose body is not JSON (a cross-site form). Every refusal is a one-line JSON
error.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import os
import socket
import socketserver
import sys
import urllib.parse
from typing import ClassVar

from samjax.annotate.records import RecordRefused

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")  # local-only: package data
STATIC_FILES = {"index.html": "text/html; charset=utf-8",
                "annotate.js": "text/javascript; charset=utf-8",
                "annotate.css": "text/css; charset=utf-8"}
MAX_BODY = 16 << 20
LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


def is_loopback(host: str) -> bool:
  try:
    return ipaddress.ip_address(host.strip("[]")).is_loopback
  except ValueError:
    return host == "localhost"


def host_is_local(host_header: str | None) -> bool:
  """True when a Host header names this machine (any port)."""
  if not host_header:
    return False
  host = host_header.strip().lower()
  if host.startswith("["):
    host = host[:host.find("]") + 1]
  else:
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
  return host in LOCAL_NAMES or is_loopback(host)


def _routes(session):
  """(method, path) -> handler(query, body) -> (status, JSON or bytes, type)."""
  def q(query, key):
    values = query.get(key)
    if not values:
      raise ValueError(f"missing ?{key}=")
    return values[0]

  def body_ok(fn):
    return lambda query, body: (200, fn(body))

  return {
      ("GET", "/api/session"): lambda query, body: (200, session.info()),
      ("GET", "/api/objects"): lambda query, body: (200, session.objects(q(query, "image"))),
      ("GET", "/api/uncovered"): lambda query, body: (200, session.uncovered(q(query, "image"))),
      ("GET", "/api/pixels"): lambda query, body: (200, session.pixels(q(query, "image"))),
      ("POST", "/api/open"): body_ok(lambda b: session.open(b["image"])),
      ("POST", "/api/predict"): body_ok(lambda b: session.predict(
          b["image"], b.get("points"), b.get("labels"), b.get("box"), b.get("previous"),
          b.get("previous_candidate"), b.get("strokes"))),
      ("POST", "/api/blank"): body_ok(lambda b: session.blank(b["image"])),
      ("POST", "/api/render"): body_ok(lambda b: session.render(
          b["image"], b["token"], b.get("candidate", 0), b.get("strokes"))),
      ("POST", "/api/accept"): body_ok(lambda b: session.accept(
          b["image"], b["token"], b.get("candidate", 0), b.get("strokes"), b.get("points"),
          b.get("labels"), b.get("box"), float(b.get("seconds", 0.0)),
          int(b.get("interactions", 0)), b.get("replaces"))),
      ("POST", "/api/edit"): body_ok(lambda b: session.edit(b["image"], b["id"])),
      ("POST", "/api/delete"): body_ok(lambda b: session.delete(b["image"], b["id"])),
      ("POST", "/api/reject"): body_ok(lambda b: session.reject(b["image"], b["id"])),
      ("POST", "/api/accept_auto"): body_ok(lambda b: session.accept_auto(b["image"],
                                                                        b["id"])),
  }


def make_handler(session, loopback_only: bool):
  """The request handler class of ``session`` (``loopback_only``: refuse
  what could come from another machine or site)."""
  return type("Handler", (_Handler,), {"routes": _routes(session),
                                       "loopback_only": loopback_only})


class _Handler(http.server.BaseHTTPRequestHandler):
  server_version = "samjax-annotate"
  protocol_version = "HTTP/1.1"
  routes: ClassVar[dict] = {}
  loopback_only = True
  # Headers and body go out in two writes; with Nagle's algorithm on, the
  # second waits for the browser's delayed ACK (~40 ms on every request).
  disable_nagle_algorithm = True

  def log_message(self, fmt, *args):  # quiet: errors are printed by _handle
    pass

  def do_GET(self):
    self._handle("GET")

  def do_POST(self):
    self._handle("POST")

  def _handle(self, method: str):
    url = urllib.parse.urlsplit(self.path)
    try:
      refusal = self._refusal(method)
      if refusal:
        return self._send(403, {"error": refusal})
      if method == "GET" and not url.path.startswith("/api/"):
        return self._static(url.path)
      route = self.routes.get((method, url.path))
      if route is None:
        return self._send(404, {"error": f"no such endpoint: {method} {url.path}"})
      body = self._body() if method == "POST" else None
      status, result = route(urllib.parse.parse_qs(url.query), body)
      return self._send(status, result, "image/jpeg" if isinstance(result, bytes)
                        else "application/json")
    except RecordRefused as e:
      return self._send(409, {"error": str(e)})
    except KeyError as e:
      return self._send(404, {"error": e.args[0] if e.args else "not found"})
    except (ValueError, TypeError) as e:
      return self._send(400, {"error": str(e)})
    except TimeoutError as e:
      return self._send(503, {"error": str(e)})
    except Exception as e:  # the page shows it; the server keeps serving
      print(f"samjax annotate: {method} {url.path}: {type(e).__name__}: {e}",
            file=sys.stderr)
      return self._send(500, {"error": f"{type(e).__name__}: {e}"})

  def _refusal(self, method: str) -> str | None:
    if not self.loopback_only:
      return None
    if not is_loopback(self.client_address[0]):
      return f"refused: {self.client_address[0]} is not this machine"
    if not host_is_local(self.headers.get("Host")):
      return f"refused: Host {self.headers.get('Host')!r} is not this machine"
    origin = self.headers.get("Origin")
    if method == "POST" and origin and origin != "null" and not host_is_local(
        urllib.parse.urlsplit(origin).netloc):
      return f"refused: a request from {origin}"
    return None

  def _body(self):
    if self.headers.get_content_type() != "application/json":
      raise ValueError("POST bodies must be application/json")
    n = int(self.headers.get("Content-Length") or 0)
    if n > MAX_BODY:
      raise ValueError(f"request body over {MAX_BODY} bytes")
    try:
      body = json.loads(self.rfile.read(n) or b"{}")
    except ValueError as e:
      raise ValueError(f"request body is not JSON ({e})") from e
    if not isinstance(body, dict) or not isinstance(body.get("image"), str):
      raise ValueError("a request needs {\"image\": name, ...}")
    return body

  def _static(self, path: str):
    name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
    if name not in STATIC_FILES:
      return self._send(404, {"error": f"no such file: {path}"})
    with open(os.path.join(STATIC_DIR, name), "rb") as f:  # local-only: package data
      self._send(200, f.read(), STATIC_FILES[name])

  def _send(self, status: int, payload, content_type: str = "application/json"):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    self.send_response(status)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(data)))
    self.send_header("Cache-Control", "no-store")
    self.end_headers()
    self.wfile.write(data)


class AnnotationServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
  daemon_threads = True
  allow_reuse_address = True

  def __init__(self, session, host: str, port: int):
    if ":" in host:
      self.address_family = socket.AF_INET6
    super().__init__((host, port), make_handler(session, is_loopback(host)))
