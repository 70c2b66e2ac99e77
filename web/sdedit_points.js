// SDE-Drag point editor for the SDEditDrag node (ComfyUI frontend extension, no dependencies).
//
// Shows the image connected to the node's `image` input (a Load Image upstream, followed through
// other IMAGE nodes if needed) on a canvas inside the node:
//   * left click: first click = source (red), second click = target (blue): one drag pair;
//   * drag a point to move it;
//   * right click on a point: delete its pair; right click elsewhere: drop a pending source;
//   * Undo: remove the last pair (or the pending source); Clear: remove everything.
// The pairs are written into the node's `points` widget as JSON in image pixels (integers,
// x = column, y = row): [{"source":[x,y],"target":[x,y]}, ...]. That widget is what the graph
// saves and sends, so the editor itself stores nothing; it re-reads `points` whenever it changes
// (a loaded workflow, a hand edit, KJNodes-style flat point lists) and draws it.
//
// Geometry: the image is drawn "contain"-fitted and centred in the canvas; a click in image cell
// (i, j) gives the point (i, j) (floor of the image coordinate). Pairs with a point outside the
// current image are not drawn; a hint over the image says how many there are.
//
// Redraws follow the events that change what is shown: a new `points` value (any writer: a click,
// a hand edit, a loaded workflow, another extension), a changed connection, a graph change
// (api "graphChanged": e.g. another file picked in Load Image) or a finished run (api "executed"),
// the image loading, and a resize; a per-frame comparison backs them up. The litegraph redraw hook
// (classic renderer) is not relied on: the Nodes 2.0 (Vue) renderer never calls it.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "SDEditDrag";
const HIT_RADIUS = 9; // canvas px around a point that grab it
const COLOR = { source: "#ff2d2d", target: "#2d6bff", arrow: "#ffffff" };

// Pairs from the `points` text: the formats the node accepts (see POINTS_TOOLTIP in the node).
export function parsePoints(text) {
  let data;
  try {
    data = JSON.parse(text && String(text).trim() ? text : "[]");
  } catch (e) {
    return { pairs: [], error: "not valid JSON" };
  }
  const point = (p) => {
    if (Array.isArray(p) && p.length === 2) return [Number(p[0]), Number(p[1])];
    if (p && typeof p === "object" && "x" in p && "y" in p) return [Number(p.x), Number(p.y)];
    return null;
  };
  let raw = [];
  if (data && !Array.isArray(data) && Array.isArray(data.source) && Array.isArray(data.target)) {
    raw = data.source.map((s, i) => [s, data.target[i]]); // DragBench style
  } else if (Array.isArray(data) && data.every((p) => p && typeof p === "object" && "source" in p)) {
    raw = data.map((p) => [p.source, p.target]);
  } else if (Array.isArray(data)) {
    for (let i = 0; i + 1 < data.length; i += 2) raw.push([data[i], data[i + 1]]); // flat list
  } else {
    return { pairs: [], error: "expected a JSON list" };
  }
  const pairs = [];
  for (const [s, t] of raw) {
    const a = point(s), b = point(t);
    if (!a || !b || ![...a, ...b].every(Number.isFinite)) return { pairs, error: "a point is not [x, y]" };
    pairs.push({ source: a, target: b });
  }
  return { pairs, error: null };
}

// /view URL of a LoadImage-style widget value: "sub/name.png", optionally "... [output]".
function viewUrl(value) {
  let name = value, type = "input";
  const m = /^(.*) \[(input|output|temp)\]$/.exec(value);
  if (m) [name, type] = [m[1], m[2]];
  const cut = name.lastIndexOf("/");
  const q = new URLSearchParams({ filename: name.slice(cut + 1), type, subfolder: cut >= 0 ? name.slice(0, cut) : "" });
  return api.apiURL(`/view?${q}`);
}

// Call `after()` whenever `widget.value` is assigned, keeping the widget's own storage (a plain data
// property in older frontends, an accessor in newer ones). False if the property cannot be wrapped.
function onValueSet(widget, after) {
  let owner = widget, desc = null;
  while (owner && !(desc = Object.getOwnPropertyDescriptor(owner, "value"))) owner = Object.getPrototypeOf(owner);
  if (desc && owner === widget && !desc.configurable) return false;
  if (desc && desc.get && !desc.set) return false; // read-only: nothing assigns it
  let stored = desc && !desc.get ? desc.value : undefined;
  const get = desc?.get ? function () { return desc.get.call(this); } : function () { return stored; };
  const set = desc?.set ? function (v) { desc.set.call(this, v); after(); } : function (v) { stored = v; after(); };
  Object.defineProperty(widget, "value", { get, set, configurable: true, enumerable: true });
  return true;
}

// The URL of the image that reaches `node`'s `image` input, or null.
function upstreamImageUrl(node) {
  let cur = node, slot = node.findInputSlot("image");
  for (let hops = 0; cur && slot >= 0 && hops < 8; hops++) {
    const up = cur.getInputNode(slot);
    if (!up) return null;
    const w = up.widgets?.find((w) => w.name === "image" && typeof w.value === "string" && w.value);
    if (w) return viewUrl(w.value);
    const img = up.imgs?.[up.imageIndex ?? 0];
    if (img?.src) return img.src; // e.g. a node that has run and shows its output
    cur = up;
    slot = up.inputs?.findIndex((i) => i.type === "IMAGE" || i.type === "*") ?? -1; // "*": a Reroute node
  }
  return null;
}

class PointEditor {
  constructor(node, pointsWidget) {
    this.node = node;
    this.fallbackWidget = pointsWidget;
    this.hooked = null; // the widget object whose `value` setter calls soon()
    this.pairs = []; // [{source: [x, y], target: [x, y]}] in image pixels
    this.pending = null; // a source waiting for its target
    this.grab = null; // {pair, key} while dragging a point
    this.text = null; // the `points` value the pairs were read from / written to
    this.error = null;
    this.url = null;
    this.img = null;

    this.element = document.createElement("div");
    this.element.className = "sdedit-points-editor";
    Object.assign(this.element.style, { display: "flex", flexDirection: "column", gap: "4px", width: "100%", height: "100%" });
    const bar = document.createElement("div");
    Object.assign(bar.style, { display: "flex", gap: "4px", alignItems: "center", font: "11px sans-serif", color: "#ccc" });
    this.status = document.createElement("span");
    this.status.style.flex = "1";
    bar.append(this.status, this.button("Undo", () => this.undo()), this.button("Clear", () => this.clear()));
    this.canvas = document.createElement("canvas");
    Object.assign(this.canvas.style, { flex: "1", minHeight: "0", width: "100%", cursor: "crosshair", borderRadius: "4px" });
    this.element.append(bar, this.canvas);

    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => this.onDown(e));
    c.addEventListener("pointermove", (e) => this.onMove(e));
    c.addEventListener("pointerup", (e) => this.onUp(e));
    c.addEventListener("contextmenu", (e) => this.onContextMenu(e));
    this.resizeObserver = new ResizeObserver(() => this.draw());
    this.resizeObserver.observe(c);
    // Event-driven updates (see the top of the file); tick() is cheap when nothing changed.
    this.soon = () => { if (!this.queued) { this.queued = true; queueMicrotask(() => { this.queued = false; this.tick(); }); } };
    this.hookPoints();
    for (const ev of ["graphChanged", "executed"]) api.addEventListener(ev, this.soon);
    // Backstop for writers no hook sees (e.g. a frontend that stores widget values elsewhere): one
    // cheap comparison per animation frame (tick() only redraws when the value or image changed).
    const frame = () => {
      if (this.disposed) return;
      if (this.element.isConnected) this.tick();
      this.raf = requestAnimationFrame(frame);
    };
    this.raf = requestAnimationFrame(frame);
  }

  // The node's current `points` widget: frontends may replace the widget objects after
  // onNodeCreated (e.g. with reactive copies), so it is looked up, not kept.
  get points() {
    return this.node.widgets?.find((w) => w.name === "points") ?? this.fallbackWidget;
  }

  hookPoints() {
    const w = this.points;
    if (w !== this.hooked && onValueSet(w, this.soon)) this.hooked = w;
  }

  dispose() {
    this.resizeObserver.disconnect();
    for (const ev of ["graphChanged", "executed"]) api.removeEventListener(ev, this.soon);
    this.disposed = true;
    cancelAnimationFrame(this.raf);
  }

  button(label, onClick) {
    const b = document.createElement("button");
    b.textContent = label;
    b.className = `sdedit-points-${label.toLowerCase()}`;
    Object.assign(b.style, { font: "11px sans-serif", padding: "1px 8px", cursor: "pointer" });
    b.addEventListener("click", (e) => { e.stopPropagation(); onClick(); });
    return b;
  }

  // Called on every canvas redraw of the node: picks up a new image or a new `points` value.
  tick() {
    if (!this.node.graph) return; // removed, or not added yet
    this.hookPoints();
    const url = upstreamImageUrl(this.node);
    if (url !== this.url) {
      this.url = url;
      this.img = null;
      this.failed = false;
      if (url) {
        const img = new Image();
        img.onload = () => { if (this.url === url) { this.img = img; this.draw(); } };
        img.onerror = () => { if (this.url === url) { this.failed = true; this.draw(); } };
        img.src = url;
      }
      this.draw();
    }
    const value = String(this.points.value ?? "");
    if (value !== this.text && !this.grab) {
      this.text = value;
      ({ pairs: this.pairs, error: this.error } = parsePoints(value));
      this.pending = null;
      this.draw();
    }
  }

  // Write the pairs into the `points` widget (what gets saved and sent to the server).
  commit() {
    this.text = JSON.stringify(this.pairs.map((p) => ({ source: p.source, target: p.target })));
    this.error = null;
    this.points.value = this.text;
    this.node.setDirtyCanvas?.(true, true);
    this.draw();
  }

  undo() {
    if (this.pending) this.pending = null;
    else if (this.pairs.length) { this.pairs.pop(); this.commit(); }
    this.draw();
  }

  clear() {
    this.pending = null;
    this.pairs = [];
    this.commit();
  }

  // Image placement in canvas (CSS) pixels: scale s, offset (ox, oy); null without an image.
  fit() {
    if (!this.img) return null;
    const cw = this.canvas.clientWidth, ch = this.canvas.clientHeight;
    const iw = this.img.naturalWidth, ih = this.img.naturalHeight;
    const s = Math.min(cw / iw, ch / ih);
    return { s, ox: (cw - iw * s) / 2, oy: (ch - ih * s) / 2, iw, ih };
  }

  // Event → canvas CSS pixels (the node may be zoomed by a CSS transform, hence the rect ratio).
  local(e) {
    const r = this.canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * this.canvas.clientWidth / r.width, (e.clientY - r.top) * this.canvas.clientHeight / r.height];
  }

  toImage([cx, cy], clamp) {
    const f = this.fit();
    if (!f) return null;
    let x = Math.floor((cx - f.ox) / f.s), y = Math.floor((cy - f.oy) / f.s);
    if (clamp) [x, y] = [Math.min(Math.max(x, 0), f.iw - 1), Math.min(Math.max(y, 0), f.ih - 1)];
    return x >= 0 && y >= 0 && x < f.iw && y < f.ih ? [x, y] : null;
  }

  toCanvas([x, y]) {
    const f = this.fit();
    return [f.ox + (x + 0.5) * f.s, f.oy + (y + 0.5) * f.s];
  }

  // The point under the cursor: {pair: index or -1 for the pending source, key}.
  hit(pos) {
    if (!this.fit()) return null;
    let best = null, bestD = HIT_RADIUS;
    const consider = (p, pair, key) => {
      const [px, py] = this.toCanvas(p);
      const d = Math.hypot(px - pos[0], py - pos[1]);
      if (d <= bestD) [best, bestD] = [{ pair, key }, d];
    };
    this.pairs.forEach((p, i) => { consider(p.source, i, "source"); consider(p.target, i, "target"); });
    if (this.pending) consider(this.pending, -1, "source");
    return best;
  }

  onDown(e) {
    if (e.button !== 0) return;
    e.preventDefault();
    e.stopPropagation();
    const pos = this.local(e);
    const hit = this.hit(pos);
    if (hit) {
      this.grab = hit;
      this.canvas.setPointerCapture?.(e.pointerId);
      return;
    }
    const p = this.toImage(pos, false);
    if (!p) return;
    if (this.pending) {
      if (p[0] === this.pending[0] && p[1] === this.pending[1]) return; // source == target: not a drag
      this.pairs.push({ source: this.pending, target: p });
      this.pending = null;
      this.commit();
    } else {
      this.pending = p;
      this.draw();
    }
  }

  onMove(e) {
    if (!this.grab) return;
    e.stopPropagation();
    const p = this.toImage(this.local(e), true);
    if (!p) return;
    if (this.grab.pair < 0) this.pending = p;
    else this.pairs[this.grab.pair][this.grab.key] = p;
    this.draw();
  }

  onUp(e) {
    if (!this.grab) return;
    e.stopPropagation();
    const moved = this.grab.pair >= 0;
    this.grab = null;
    this.canvas.releasePointerCapture?.(e.pointerId);
    if (moved) this.commit();
  }

  onContextMenu(e) {
    e.preventDefault();
    e.stopPropagation();
    const hit = this.hit(this.local(e));
    if (hit && hit.pair >= 0) { this.pairs.splice(hit.pair, 1); this.commit(); }
    else { this.pending = null; this.draw(); }
  }

  draw() {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const cw = c.clientWidth, ch = c.clientHeight;
    if (!cw || !ch) return;
    if (c.width !== Math.round(cw * dpr) || c.height !== Math.round(ch * dpr)) {
      c.width = Math.round(cw * dpr);
      c.height = Math.round(ch * dpr);
    }
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#1b1b1b";
    ctx.fillRect(0, 0, cw, ch);
    const f = this.fit();
    const n = this.pairs.length;
    if (!f) {
      ctx.fillStyle = "#888";
      ctx.font = "12px sans-serif";
      ctx.textAlign = "center";
      const msg = !this.url ? "connect an image (Load Image) to place points"
        : this.failed ? "cannot load the input image" : "loading image…";
      ctx.fillText(msg, cw / 2, ch / 2);
      this.status.textContent = `${n} pair${n === 1 ? "" : "s"}`;
      return;
    }
    ctx.imageSmoothingEnabled = f.s < 1;
    ctx.drawImage(this.img, f.ox, f.oy, f.iw * f.s, f.ih * f.s);
    const r = Math.max(3, Math.min(6, f.s * 2));
    const inside = (p) => p[0] >= 0 && p[1] >= 0 && p[0] < f.iw && p[1] < f.ih;
    const shown = this.pairs.map((p, i) => [p, i]).filter(([p]) => inside(p.source) && inside(p.target));
    this.outside = n - shown.length;
    shown.forEach(([p]) => this.arrow(ctx, this.toCanvas(p.source), this.toCanvas(p.target), r));
    shown.forEach(([p, i]) => {
      this.dot(ctx, this.toCanvas(p.source), r, COLOR.source, String(i + 1));
      this.dot(ctx, this.toCanvas(p.target), r, COLOR.target);
    });
    if (this.pending) this.dot(ctx, this.toCanvas(this.pending), r, COLOR.source, "?");
    if (this.outside) this.banner(ctx, cw, `${this.outside} of ${n} pair${n === 1 ? "" : "s"} outside this ${f.iw}×${f.ih} image: Clear, or edit points`);
    const hint = this.pending ? "now click the target" : "click a source point";
    const count = `${n} pair${n === 1 ? "" : "s"}` + (this.outside ? ` (${this.outside} outside the image)` : "");
    this.status.textContent = this.error ? `points: ${this.error} (clicking starts over)`
      : `${f.iw}×${f.ih} · ${count} · ${hint}`;
  }

  // A line of text on a dark band across the top of the canvas.
  banner(ctx, cw, text) {
    ctx.font = "12px sans-serif";
    ctx.textAlign = "center";
    ctx.fillStyle = "rgba(0, 0, 0, 0.7)";
    ctx.fillRect(0, 0, cw, 20);
    ctx.fillStyle = "#ffcf4d";
    ctx.fillText(text, cw / 2, 14, cw - 8);
  }

  dot(ctx, [x, y], r, color, label) {
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = color;
    ctx.fill();
    ctx.lineWidth = 1;
    ctx.strokeStyle = "#000";
    ctx.stroke();
    if (label) {
      ctx.font = "bold 11px sans-serif";
      ctx.textAlign = "left";
      ctx.fillStyle = "#fff";
      ctx.fillText(label, x + r + 2, y - r - 1);
    }
  }

  // Arrow from source to target, its head just outside the target dot (radius r).
  arrow(ctx, [x0, y0], [tx, ty], r) {
    const a = Math.atan2(ty - y0, tx - x0), head = 8;
    const x1 = tx - (r + 1) * Math.cos(a), y1 = ty - (r + 1) * Math.sin(a);
    ctx.strokeStyle = COLOR.arrow;
    ctx.fillStyle = COLOR.arrow;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(x1, y1);
    ctx.stroke();
    ctx.beginPath();
    ctx.moveTo(x1, y1);
    ctx.lineTo(x1 - head * Math.cos(a - 0.4), y1 - head * Math.sin(a - 0.4));
    ctx.lineTo(x1 - head * Math.cos(a + 0.4), y1 - head * Math.sin(a + 0.4));
    ctx.closePath();
    ctx.fill();
  }
}

app.registerExtension({
  name: "comfyui-sdedit.PointEditor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_TYPE) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      const points = this.widgets?.find((w) => w.name === "points");
      if (!points) return r;
      const editor = new PointEditor(this, points);
      const widget = this.addDOMWidget("point_editor", "sdedit_points", editor.element, {
        serialize: false, // the JSON lives in `points`; this widget is view only
        hideOnZoom: false,
        getValue: () => undefined,
        setValue: () => {},
        getMinHeight: () => 220,
      });
      widget.serialize = false; // not in the workflow's widgets_values either
      const onRemove = widget.onRemove;
      widget.onRemove = function () { editor.dispose(); return onRemove?.apply(this, arguments); };
      this.sdeditPointEditor = editor;
      const [w, h] = this.computeSize();
      this.setSize([Math.max(this.size[0], 340), Math.max(this.size[1], h)]);
      return r;
    };

    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function () {
      const r = onConnectionsChange?.apply(this, arguments);
      this.sdeditPointEditor?.soon();
      return r;
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function () {
      const r = onDrawForeground?.apply(this, arguments);
      this.sdeditPointEditor?.tick();
      return r;
    };
  },
});
