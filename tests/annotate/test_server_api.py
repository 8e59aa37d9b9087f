"""`samjax annotate` refuses bad input safely and keeps what was accepted:
path traversal, non-image files, a decompression bomb, foreign requests, a
corrupt JSON in --out, and kill -9 in the middle of a session."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import zlib

import pytest

from samjax.annotate.server import make_handler
from tests.annotate.conftest import annotate_server


def write_bomb_png(path, side=20000) -> None:
  """A PNG header claiming side x side pixels (far above PIL's bomb limit)
  with almost no data: refused before any decoding."""
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def folders(photos, tmp_path_factory):
  """Images: the photos, a bomb, a text file; --out: a corrupt img_1.json."""
  root = tmp_path_factory.mktemp("annotate_api")
  images, out = root / "images", root / "out"
  shutil.copytree(photos, images)
  write_bomb_png(images / "bomb.png")
  (images / "notes.txt").write_text("not an image")
  (root / "secret.jpg").write_bytes((images / "img_0.jpg").read_bytes())
  out.mkdir()
  (out / "img_1.json").write_text('{"image": {"image_id": 1, "wid')
  return root


def test_bad_input_is_refused_in_one_line(folders, trained_pth, tmp_path):
  images, out = folders / "images", folders / "out"
  corrupt = (out / "img_1.json").read_bytes()
  with annotate_server(tmp_path, "--images", str(images), "--checkpoint", trained_pth,
                       "--out", str(out)) as server:
    status, info = server.get("/api/session")
    assert status == 200
    assert [i["name"] for i in info["images"]] == ["bomb.png", "img_0.jpg", "img_1.jpg",
                                                  "img_2.jpg"]
    assert info["skipped"] == [{"name": "notes.txt",
                                "reason": "not an image file (by its extension)"}]
    assert "skipping notes.txt: not an image file" in server.output()

    # Path traversal: names are looked up in the listing, never joined to a path.
    for name in ("../secret.jpg", "/etc/passwd", "notes.txt", "img_0.jpg/.."):
      status, reply = server.post("/api/open", {"image": name})
      assert status == 404 and "no image named" in reply["error"]
    status, _ = server.get("/api/pixels?image=..%2Fsecret.jpg")
    assert status == 404
    assert server.get("/static/../server.py")[0] == 404
    assert server.get("/static/annotate.css")[0] == 200

    # The bomb is refused by the image reader, before any decoding.
    reply = server.wait_ready("bomb.png")
    assert reply["state"] == "error" and "too large to decode" in reply["error"]

    # Requests that could come from another site are refused.
    status, reply = server.get("/api/session", headers={"Host": "evil.example:80"})
    assert status == 403 and "evil.example" in reply["error"]
    status, reply = server.post("/api/open", {"image": "img_0.jpg"},
                                headers={"Origin": "http://evil.example"})
    assert status == 403
    status, reply = server.post("/api/open", {"image": "img_0.jpg"},
                                headers={"Content-Type": "text/plain"})
    assert status == 400 and "application/json" in reply["error"]

    # A corrupt JSON in --out is reported, and a prompt/accept never writes it.
    assert server.wait_ready("img_1.jpg")["ready"]
    status, reply = server.get("/api/objects?image=img_1.jpg")
    assert status == 409 and "img_1.json is unreadable" in reply["error"]
    status, pred = server.post("/api/predict", {"image": "img_1.jpg", "points": [[60, 50]],
                                                "labels": [1]})
    assert status == 200
    status, reply = server.post("/api/accept", {"image": "img_1.jpg", "token": pred["token"],
                                                "candidate": 0, "points": [[60, 50]],
                                                "labels": [1]})
    assert status == 409
  assert (out / "img_1.json").read_bytes() == corrupt


def test_a_client_that_is_not_loopback_is_refused():
  """The handler of a loopback-bound server, on a real TCP connection, told
  that its peer is another machine (what a non-loopback client looks like
  to it when the server is bound to all addresses)."""
  with socket.create_server(("127.0.0.1", 0)) as listener:
    theirs = socket.create_connection(listener.getsockname())
    ours, _ = listener.accept()
  with ours, theirs:
    theirs.sendall(b"GET /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   b"Connection: close\r\n\r\n")
    make_handler(session=None, loopback_only=True)(ours, ("10.0.0.7", 40000), None)
    reply = theirs.recv(65536).decode()
  assert reply.startswith("HTTP/1.1 403")
  assert json.loads(reply.split("\r\n\r\n", 1)[1])["error"] == \
      "refused: 10.0.0.7 is not this machine"


def _prompt_and_accept(server, image, points, labels, seconds=2.0):
  status, pred = server.post("/api/predict", {"image": image, "points": points,
                                              "labels": labels})
  assert status == 200, pred
  status, reply = server.post("/api/accept", {
      "image": image, "token": pred["token"], "candidate": pred["selected"],
      "points": points, "labels": labels, "seconds": seconds, "interactions": 1})
  assert status == 200, reply
  return reply


def test_kill_9_mid_session_keeps_every_accepted_object(photos, trained_pth, tmp_path):
  out = tmp_path / "out"
  args = ("--images", photos, "--checkpoint", trained_pth, "--out", str(out),
          "--annotator", "ann")
  with annotate_server(tmp_path, *args) as server:
    assert server.wait_ready("img_0.jpg")["ready"]
    _prompt_and_accept(server, "img_0.jpg", [[120, 90]], [1])
    reply = _prompt_and_accept(server, "img_0.jpg", [[30, 30], [120, 90]], [1, 0])
    assert [o["id"] for o in reply["objects"]] == [0, 1]
    saved = (out / "img_0.json").read_bytes()
    # An object in progress when the server dies: prompted, not accepted.
    server.post("/api/predict", {"image": "img_0.jpg", "points": [[200, 150]], "labels": [1]})
    server.proc.kill()  # SIGKILL
    server.proc.wait()
  assert (out / "img_0.json").read_bytes() == saved
  assert not [n for n in os.listdir(out) if ".tmp" in n]
  with annotate_server(tmp_path, *args) as server:
    reply = server.wait_ready("img_0.jpg")
    assert reply["cached"]  # the embedding came from the disk cache
    status, objects = server.get("/api/objects?image=img_0.jpg")
    assert status == 200 and [o["id"] for o in objects["objects"]] == [0, 1]
    reply = _prompt_and_accept(server, "img_0.jpg", [[200, 150]], [1])
    assert [o["id"] for o in reply["objects"]] == [0, 1, 2]
  doc = json.loads((out / "img_0.json").read_text())
  assert [a["clicks"] for a in doc["annotations"]] == [
      [[120.0, 90.0, 1]], [[30.0, 30.0, 1], [120.0, 90.0, 0]], [[200.0, 150.0, 1]]]
  assert {a["annotator"] for a in doc["annotations"]} == {"ann"}
