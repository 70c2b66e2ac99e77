"""The SDE-Drag point editor (``web/sdedit_points.js``) in ComfyUI's real frontend, in headless
chromium: real mouse events (CDP ``Input.dispatchMouseEvent``) on the canvas the extension adds to
``SDEditDrag`` nodes must write the expected pairs, in image pixels, into the ``points`` widget, and
the workflow built that way must run.

The expected pixels are computed here from the canvas' on-screen rectangle and the documented
geometry (the image is drawn "contain"-fitted and centred; a click in image cell (i, j) gives
(i, j)), not from the editor's own state.
"""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.comfy import browser, thumbnails
from tests.comfy.conftest import CKPT

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "workflows" / "sdedit_drag.json"

EDITOR = "(window.app.graph._nodes || window.app.graph.nodes).find(n => n.type === 'SDEditDrag').sdeditPointEditor"
NODE = "(window.app.graph._nodes || window.app.graph.nodes).find(n => n.type === 'SDEditDrag')"

# Bring the editor canvas into view at a given zoom: the DOM widget follows the litegraph canvas
# (position and CSS scale) on its next redraw, so iterate a few frames.
_FOCUS_JS = r"""
(async (scale) => {
  const app = window.app, node = __NODE__, ed = node.sdeditPointEditor;
  const frame = () => new Promise(r => requestAnimationFrame(() => r()));
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset = [-node.pos[0] + 300 / scale, -node.pos[1] + 40 / scale];
  for (let i = 0; i < 30; i++) {
    app.canvas.setDirty(true, true);
    app.canvas.draw(true, true);
    await frame();
    const r = ed.canvas.getBoundingClientRect();
    if (r.width > 10 && r.height > 10) {
      if (r.bottom > window.innerHeight - 20 || r.top < 20) {   // scroll the graph so it is on screen
        app.canvas.ds.offset[1] += (200 - r.top) / scale;
        continue;
      }
      const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
      if (hit === ed.canvas) return {left: r.left, top: r.top, width: r.width, height: r.height,
                                     cw: ed.canvas.clientWidth, ch: ed.canvas.clientHeight};
    }
  }
  const r = ed.canvas.getBoundingClientRect();
  const c = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  throw new Error('editor canvas not on screen: ' + JSON.stringify(r) + ' covered by ' + (c && c.outerHTML.slice(0, 200)));
})
""".replace("__NODE__", NODE)


class Editor:
    """Drives the point editor of the (single) SDEditDrag node on a :class:`browser.ComfyFrontend`."""

    def __init__(self, fe: browser.ComfyFrontend):
        self.fe, self.page = fe, fe.page
        self.rect: dict | None = None
        self.size: tuple[int, int] | None = None

    def js(self, expr: str):
        return self.page.evaluate(expr)

    def wait_for_image(self, w: int, h: int):
        self.page.wait_for(f"(() => {{ const e = {EDITOR}; window.app.canvas.setDirty(true, true);"
                           f" window.app.canvas.draw(true, true);"
                           f" return !!(e && e.img && e.img.naturalWidth === {w} && e.img.naturalHeight === {h}); }})()",
                           timeout=90)
        self.size = (w, h)

    def close_dialogs(self):
        """A fresh user gets the templates browser over the canvas: close it (its x button)."""
        for _ in range(10):
            if not self.js("document.querySelectorAll('.p-dialog-mask, .p-dialog').length"):
                return
            self.js("(() => { document.querySelectorAll('.p-dialog button').forEach(b => {"
                    " if (b.querySelector('.pi-times')) b.click(); }); return true; })()")
            time.sleep(0.3)
        raise AssertionError("a dialog stays open over the canvas")

    def focus(self, scale: float):
        self.close_dialogs()
        self.rect = self.js(f"{_FOCUS_JS}({scale})")
        self.js(f"{EDITOR}.draw(), true")

    def client_xy(self, x: float, y: float) -> tuple[float, float]:
        """Screen position of the centre of image pixel (x, y), from the on-screen rectangle (read
        again each time: a banner or toast may shift the page)."""
        self.rect = self.js(f"(() => {{ const c = {EDITOR}.canvas, r = c.getBoundingClientRect();"
                            " return {left: r.left, top: r.top, width: r.width, height: r.height,"
                            " cw: c.clientWidth, ch: c.clientHeight}; })()")
        r, (w, h) = self.rect, self.size
        s = min(r["cw"] / w, r["ch"] / h)
        ox, oy = (r["cw"] - w * s) / 2, (r["ch"] - h * s) / 2
        k = r["width"] / r["cw"]  # CSS zoom of the node
        return r["left"] + (ox + (x + 0.5) * s) * k, r["top"] + (oy + (y + 0.5) * s) * k

    def mouse(self, kind: str, xy, button: str = "left"):
        buttons = {"left": 1, "right": 2, "none": 0}[button] if kind != "mouseReleased" else 0
        self.page.send("Input.dispatchMouseEvent", {
            "type": kind, "x": xy[0], "y": xy[1], "button": button if kind != "mouseMoved" or buttons else "none",
            "buttons": buttons, "clickCount": 1 if kind != "mouseMoved" else 0})

    def click(self, x: int, y: int, button: str = "left"):
        xy = self.client_xy(x, y)
        self.mouse("mouseMoved", xy, "none")
        self.mouse("mousePressed", xy, button)
        self.mouse("mouseReleased", xy, button)

    def drag(self, start, end, moves: int = 6):
        a, b = self.client_xy(*start), self.client_xy(*end)
        self.mouse("mouseMoved", a, "none")
        self.mouse("mousePressed", a)
        for i in range(1, moves + 1):
            t = i / moves
            self.mouse("mouseMoved", (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])), "left")
        self.mouse("mouseReleased", b)

    def press_button(self, label: str):
        r = self.js(f"(() => {{ const b = {EDITOR}.element.querySelector('.sdedit-points-{label}');"
                    f" const r = b.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()")
        self.mouse("mouseMoved", r, "none")
        self.mouse("mousePressed", r)
        self.mouse("mouseReleased", r)

    def points(self):
        """The ``points`` widget's value, parsed (what the graph saves and sends)."""
        return json.loads(self.js(f"{NODE}.widgets.find(w => w.name === 'points').value"))

    def pixel(self, x: int, y: int) -> list[int]:
        """RGBA the editor drew at the centre of image pixel (x, y)."""
        return self.js(f"""(() => {{ const e = {EDITOR}, dpr = window.devicePixelRatio || 1;
            const r = {json.dumps(self.rect)}, s = Math.min(r.cw / {self.size[0]}, r.ch / {self.size[1]});
            const cx = (r.cw - {self.size[0]} * s) / 2 + ({x} + 0.5) * s, cy = (r.ch - {self.size[1]} * s) / 2 + ({y} + 0.5) * s;
            return Array.from(e.canvas.getContext('2d').getImageData(Math.floor(cx * dpr), Math.floor(cy * dpr), 1, 1).data); }})()""")


def _image(w: int, h: int) -> np.ndarray:
    img = np.full((h, w, 3), 90, np.uint8)
    img[16:48, 8:32] = (250, 230, 60)
    return img


def _id_of(wf: dict, node_type: str) -> str:
    return str(next(n["id"] for n in wf["nodes"] if n["type"] == node_type))


def test_the_editor_and_its_help_page_are_served(comfy_server):
    js = comfy_server.get_bytes("/extensions/comfyui-sdedit/sdedit_points.js").decode()
    assert "registerExtension" in js and "SDEditDrag" in js
    doc = comfy_server.get_bytes("/extensions/comfyui-sdedit/docs/SDEditDrag.md").decode()
    assert doc.startswith("# SDE-Drag")


@pytest.fixture
def frontend(ui_server, comfy_browser):
    fe = browser.ComfyFrontend(comfy_browser, ui_server)
    try:
        yield fe
    finally:
        fe.close()


def test_clicks_and_drags_write_the_points_and_the_workflow_runs(ui_server, frontend):
    wf = json.loads(WORKFLOW.read_text())
    shipped = json.loads(next(n for n in wf["nodes"] if n["type"] == "SDEditDrag")["widgets_values"][0])
    square = ui_server.upload_image(_image(64, 64), "pe_square.png")
    frontend.load(copy.deepcopy(wf), {
        "CheckpointLoaderSimple": {"ckpt_name": CKPT},
        _id_of(wf, "LoadImage"): {"image": square},
        "SDEditDrag": {"t0": 0.4, "steps": 3, "step_size": 4.0, "patch_radius": 2},
        "SaveImage": {"filename_prefix": f"test_pe/{uuid.uuid4().hex[:8]}"},
    })
    ed = Editor(frontend)
    ed.wait_for_image(64, 64)
    # the shipped value is read and drawn as it is (nothing rewritten on load)
    assert ed.js(f"{EDITOR}.pairs") == shipped
    assert ed.points() == shipped
    # the shipped example points (for a 512 px image) lie outside this 64x64 one: a hint says so
    assert all(max(p["source"] + p["target"]) >= 64 for p in shipped)
    assert ed.js(f"{EDITOR}.outside") == len(shipped)
    assert f"({len(shipped)} outside the image)" in ed.js(f"{EDITOR}.status.textContent")

    ed.focus(1.25)  # zoomed: the DOM widget is CSS-scaled, clicks must still map to image pixels
    ed.press_button("clear")
    assert ed.points() == []

    ed.click(20, 32)  # source
    assert ed.points() == [], "a source alone is not a pair yet"
    ed.click(44, 32)  # target
    assert ed.points() == [{"source": [20, 32], "target": [44, 32]}]
    assert ed.js(f"{EDITOR}.outside") == 0 and "outside" not in ed.js(f"{EDITOR}.status.textContent")
    red, blue = ed.pixel(20, 32), ed.pixel(44, 32)
    assert red[0] > 200 and red[2] < 100, red  # sources red
    assert blue[2] > 200 and blue[0] < 100, blue  # targets blue

    ed.drag((44, 32), (50, 40))  # move the target
    assert ed.points() == [{"source": [20, 32], "target": [50, 40]}]
    ed.drag((20, 32), (12, 30))  # and the source
    assert ed.points() == [{"source": [12, 30], "target": [50, 40]}]

    ed.click(5, 5)
    ed.click(60, 60)
    assert len(ed.points()) == 2
    ed.click(5, 5, button="right")  # right click on a point deletes its pair
    assert ed.points() == [{"source": [12, 30], "target": [50, 40]}]
    ed.click(30, 10)  # a pending source ...
    ed.press_button("undo")  # ... is dropped by Undo
    ed.click(33, 12)
    assert ed.points() == [{"source": [12, 30], "target": [50, 40]}], "Undo should have dropped the pending source"
    ed.click(40, 12)
    assert ed.points()[-1] == {"source": [33, 12], "target": [40, 12]}
    ed.press_button("undo")  # Undo removes the last pair
    assert ed.points() == [{"source": [12, 30], "target": [50, 40]}]
    if os.environ.get("SDEDIT_SCREENSHOTS"):  # to look at the editor: a folder for the screenshot
        frontend.page.screenshot(Path(os.environ["SDEDIT_SCREENSHOTS"]) / "point_editor.png")

    # the graph saves the JSON in `points` only (the editor widget is not serialised) ...
    saved = ed.js("window.app.graphToPrompt().then(p => p.workflow)")
    node = next(n for n in saved["nodes"] if n["type"] == "SDEditDrag")
    assert len(node["widgets_values"]) == len(next(n for n in wf["nodes"] if n["type"] == "SDEditDrag")["widgets_values"])
    assert json.loads(node["widgets_values"][0]) == [{"source": [12, 30], "target": [50, 40]}]
    # ... and queues it: the node drags with the clicked points and an image comes out
    pid = frontend.queue()
    entry = ui_server.wait(pid, timeout=180)
    prompt = entry["prompt"][2]
    assert json.loads(prompt[_id_of(wf, "SDEditDrag")]["inputs"]["points"]) == [{"source": [12, 30], "target": [50, 40]}]
    images = ui_server.output_images(entry)[_id_of(wf, "SaveImage")]
    assert len(images) == 1 and images[0].shape == (64, 64, 3)
    thumbnails.record("sdedit_drag", images[0], _image(64, 64))
    assert not frontend.page.console_errors(), frontend.page.console_errors()


def test_the_editor_follows_a_new_image_and_maps_a_wide_one(ui_server, frontend):
    wf = json.loads(WORKFLOW.read_text())
    frontend.load(copy.deepcopy(wf), {
        "CheckpointLoaderSimple": {"ckpt_name": CKPT},
        _id_of(wf, "LoadImage"): {"image": ui_server.upload_image(_image(64, 64), "pe_square.png")},
        "SDEditDrag": {"points": '[{"x": 10, "y": 11}, {"x": 30, "y": 12}]'},  # KJNodes-style flat list
    })
    ed = Editor(frontend)
    ed.wait_for_image(64, 64)
    assert ed.js(f"{EDITOR}.pairs") == [{"source": [10, 11], "target": [30, 12]}]
    # another image in the Load Image node: the editor reloads it (letterboxed: 96 x 40)
    wide = ui_server.upload_image(_image(96, 40), "pe_wide.png")
    ed.js(f"(() => {{ const n = (window.app.graph._nodes || window.app.graph.nodes).find(n => n.type === 'LoadImage');"
          f" const w = n.widgets.find(w => w.name === 'image'); w.value = {json.dumps(wide)}; w.callback?.(w.value); return true; }})()")
    ed.wait_for_image(96, 40)
    ed.focus(1.0)
    ed.press_button("clear")
    ed.click(0, 0)
    ed.click(95, 39)
    ed.click(80, 3)
    ed.click(7, 36)
    assert ed.points() == [{"source": [0, 0], "target": [95, 39]}, {"source": [80, 3], "target": [7, 36]}]
    # a click in the letterbox (outside the image) adds nothing
    r = ed.rect
    above = (r["left"] + r["width"] / 2, r["top"] + 2)
    ed.mouse("mousePressed", above)
    ed.mouse("mouseReleased", above)
    ed.click(50, 20)
    assert len(ed.points()) == 2, "the letterbox click must not have become a source"
    # a hand edit of the text is picked up and drawn
    ed.js(f"(() => {{ const w = {NODE}.widgets.find(w => w.name === 'points');"
          " w.value = '[{\"source\":[1,2],\"target\":[3,4]}]'; window.app.canvas.setDirty(true, true);"
          " window.app.canvas.draw(true, true); return true; })()")
    time.sleep(0.2)
    assert ed.js(f"{EDITOR}.pairs") == [{"source": [1, 2], "target": [3, 4]}]
    assert not frontend.page.console_errors(), frontend.page.console_errors()


_SET_POINTS_AND_LOOK_JS = r"""
(async (text) => {
  const node = __NODE__, ed = node.sdeditPointEditor;
  node.widgets.find(w => w.name === 'points').value = text;   // no canvas redraw asked for
  await new Promise(r => setTimeout(r, 100));
  return {pairs: ed.pairs, status: ed.status.textContent};
})
""".replace("__NODE__", NODE)


def test_a_new_points_value_is_drawn_at_once_without_a_canvas_redraw(ui_server, frontend):
    """The Nodes 2.0 renderer never calls the litegraph redraw hook, and a widget write does not ask
    the classic one for a frame: the editor must follow the `points` value itself (within 100 ms
    here, three times in a row; the old 500 ms timer would pass that by chance 1 time in 125)."""
    wf = json.loads(WORKFLOW.read_text())
    frontend.load(copy.deepcopy(wf), {
        "CheckpointLoaderSimple": {"ckpt_name": CKPT},
        _id_of(wf, "LoadImage"): {"image": ui_server.upload_image(_image(64, 64), "pe_square.png")},
    })
    ed = Editor(frontend)
    ed.wait_for_image(64, 64)
    ed.focus(1.0)
    for k, (sx, tx) in enumerate([(4, 40), (10, 50), (20, 60)]):
        pairs = [{"source": [sx, 20 + k], "target": [tx, 30]}]
        seen = ed.js(f"{_SET_POINTS_AND_LOOK_JS}({json.dumps(json.dumps(pairs))})")
        assert seen["pairs"] == pairs, (k, seen)
        assert "1 pair ·" in seen["status"], seen
        red = ed.pixel(sx, 20 + k)
        assert red[0] > 200 and red[2] < 100, red
    assert not frontend.page.console_errors(), frontend.page.console_errors()
