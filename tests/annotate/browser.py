"""Driving the annotation page in headless Chromium: image-pixel clicks,
waits on the page's own ready flag, and the requests it sent."""

from __future__ import annotations

import json
import os

from tests.annotate.conftest import ARTIFACTS


class Page:
  """A Playwright page on the tool, with the API requests it made."""

  def __init__(self, browser, url: str, viewport=(1280, 800)):
    self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    self.page = self.context.new_page()
    self.errors: list[str] = []
    self.requests: list[tuple[str, dict]] = []
    self.page.on("pageerror", lambda e: self.errors.append(str(e)))
    self.page.on("request", self._record)
    self.page.goto(url)
    self.wait()

  def _record(self, request):
    if request.method == "POST" and "/api/" in request.url:
      self.requests.append((request.url.split("/api/")[1], json.loads(request.post_data)))

  def sent(self, endpoint: str) -> list[dict]:
    return [body for name, body in self.requests if name == endpoint]

  def state(self, key: str):
    return self.page.evaluate(f"window.samjax.{key}")

  def wait(self, timeout_ms: float = 120_000) -> None:
    """Until the current image is shown and no request is in flight."""
    self.page.wait_for_function("document.body.dataset.ready === '1'", timeout=timeout_ms)
    assert not self.errors, self.errors

  def screen(self, x: float, y: float) -> tuple[float, float]:
    """Image pixel (x, y) -> page coordinates of the mouse."""
    box = self.page.locator("#input-canvas").bounding_box()
    w, h = self.page.evaluate("[view.width, view.height]")
    return box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h

  def click(self, x, y, *, negative: bool = False) -> None:
    sx, sy = self.screen(x, y)
    if negative:
      self.page.mouse.click(sx, sy, button="right")
    else:
      self.page.mouse.click(sx, sy)
    self.wait()

  def drag(self, points) -> None:
    """Mouse down at the first image point, through the others, up at the last."""
    m = self.page.mouse
    m.move(*self.screen(*points[0]))
    m.down()
    for p in points[1:]:
      m.move(*self.screen(*p), steps=4)
    m.up()
    self.wait()

  def key(self, key: str) -> None:
    self.page.keyboard.press(key)
    self.wait()

  def screenshot(self, name: str) -> str:
    os.makedirs(os.path.join(ARTIFACTS, "annotate"), exist_ok=True)
    path = os.path.join(ARTIFACTS, "annotate", name)
    self.page.screenshot(path=path)
    return path

  def close(self) -> None:
    self.context.close()
