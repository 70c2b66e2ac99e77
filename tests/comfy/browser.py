"""Headless Debian chromium driven over the Chrome DevTools Protocol (``--remote-debugging-pipe``),
standard library only, to run UI-format workflows through ComfyUI's real frontend.

Never downloads a browser: it uses ``/usr/bin/chromium`` (``$SDEDIT_CHROMIUM`` overrides), which
``scripts/test.sh`` installs from Debian.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--no-default-browser-check",
    "--disable-dev-shm-usage", "--window-size=1280,900",
]

# Console errors the frontend prints on a fresh, offline, single-user server. Anything else
# counts as an error of the page.
# An entry is a string, or a tuple of strings that must all occur in the message.
BENIGN_CONSOLE: tuple = (
    # fresh user dir: user.css, favicon, userdata listings, comfy.templates.json
    "Failed to load resource: the server responded with a status of 404",
    # no internet (api.comfy.org release and node lookups)
    "net::ERR_INTERNET_DISCONNECTED",
    "net::ERR_NAME_NOT_RESOLVED",
    "net::ERR_CONNECTION_REFUSED",
    # newer frontends ask for /api/jobs, which ComfyUI 0.3.75 does not have yet (queue/history still work)
    ("JobsApiError: Failed to fetch jobs: 404",),
    # frontend 1.32.9 at first page load: useRenderModeSetting sets a setting whose definition is
    # not registered yet -> onChange(undefined) (the settings store, not a custom node)
    ("TypeError: Cannot read properties of undefined (reading 'id')", "at onChange", "GraphView-"),
)


def _is_benign(text: str, ignore) -> bool:
    for pat in ignore:
        if isinstance(pat, str):
            if pat in text:
                return True
        elif all(p in text for p in pat):
            return True
    return False


def chromium_path() -> str | None:
    cand = os.environ.get("SDEDIT_CHROMIUM") or "/usr/bin/chromium"
    if os.path.isfile(cand) and os.access(cand, os.X_OK):
        return cand
    return shutil.which("chromium")


class CDPError(RuntimeError):
    pass


class Browser:
    """One chromium process; :meth:`new_page` opens tabs. Use as a context manager."""

    def __init__(self, executable: str | None = None, extra_flags: list[str] | None = None):
        exe = executable or chromium_path()
        if not exe:
            raise CDPError("chromium not found (apt-get install chromium, or set SDEDIT_CHROMIUM)")
        self.user_data_dir = tempfile.mkdtemp(prefix="sdedit-chromium-")
        self.log_path = Path(self.user_data_dir) / "chromium.log"
        argv = [exe, *CHROMIUM_FLAGS, *(extra_flags or []), f"--user-data-dir={self.user_data_dir}",
                "--remote-debugging-pipe", "about:blank"]
        # fd 3: commands to the browser, fd 4: its replies (NUL-terminated JSON)
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        actions = [
            (os.POSIX_SPAWN_DUP2, null_fd, 0), (os.POSIX_SPAWN_DUP2, log_fd, 1), (os.POSIX_SPAWN_DUP2, log_fd, 2),
            (os.POSIX_SPAWN_DUP2, cmd_r, 3), (os.POSIX_SPAWN_DUP2, res_w, 4),
        ]
        try:
            self.pid = os.posix_spawn(exe, argv, os.environ, file_actions=actions, setsid=True)
        finally:
            for fd in (cmd_r, res_w, log_fd, null_fd):
                os.close(fd)
        self._next_id = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._closed = False
        self._closing = False
        self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._reader.start()
        atexit.register(self.close)  # also when pytest is interrupted
        self.version = self.send("Browser.getVersion", timeout=30).get("product")

    def _read_loop(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._res_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                with self._cond:
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, session_id: str | None = None, timeout: float = 60) -> dict:
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            msg = {"id": mid, "method": method, "params": params or {}}
            if session_id:
                msg["sessionId"] = session_id
            data = json.dumps(msg).encode() + b"\0"
            while data:
                n = os.write(self._cmd_w, data)
                data = data[n:]
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies:
                if self._closed:
                    raise CDPError(f"chromium closed the pipe during {method}; log:\n{self.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"CDP {method} got no reply in {timeout}s")
                self._cond.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def new_page(self) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, target, session)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def close(self):
        if self._closing:
            return
        self._closing = True
        atexit.unregister(self.close)
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        for fd in (self._cmd_w, self._res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.user_data_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Page:
    """One tab with Runtime/Log/Page domains enabled; collects console errors and exceptions."""

    def __init__(self, browser: Browser, target_id: str, session_id: str):
        self.browser, self.target_id, self.session_id = browser, target_id, session_id
        self._events_seen = len(browser.events)
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        return self.browser.send(method, params, self.session_id, timeout)

    def navigate(self, url: str, timeout: float = 60):
        self.send("Page.navigate", {"url": url}, timeout=timeout)

    def evaluate(self, expression: str, timeout: float = 120, await_promise: bool = True) -> Any:
        """Evaluate JS in the page; returns the (JSON) value; raises on a JS exception."""
        res = self.send("Runtime.evaluate", {
            "expression": expression, "awaitPromise": await_promise, "returnByValue": True,
            "timeout": int(timeout * 1000),
        }, timeout=timeout + 5)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            desc = (d.get("exception") or {}).get("description") or d.get("text")
            raise CDPError(f"JS exception: {desc}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60, poll: float = 0.2) -> Any:
        """Poll a JS expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            try:
                v = self.evaluate(expression, timeout=10)
                if v:
                    return v
            except (CDPError, TimeoutError) as e:  # page still loading (or too busy parsing to answer)
                last_err = e
            time.sleep(poll)
        raise TimeoutError(f"timed out waiting for {expression!r} (last error: {last_err})")

    def _my_events(self) -> list[dict]:
        return [e for e in self.browser.events[self._events_seen:] if e.get("sessionId") == self.session_id]

    def console_messages(self) -> list[tuple[str, str]]:
        """``(level, text)`` of console calls, log entries and uncaught exceptions so far."""
        out = []
        for e in self._my_events():
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                out.append((p.get("type", "log"), text))
            elif m == "Log.entryAdded":
                ent = p.get("entry", {})
                out.append((ent.get("level", "info"), f"{ent.get('text', '')} {ent.get('url', '')}".strip()))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(("exception", (d.get("exception") or {}).get("description") or d.get("text", "")))
        return out

    def console_errors(self, ignore: tuple = BENIGN_CONSOLE) -> list[str]:
        """Errors and uncaught exceptions since the page opened, minus :data:`BENIGN_CONSOLE`."""
        return [t for lvl, t in self.console_messages()
                if lvl in ("error", "exception", "assert") and not _is_benign(t, ignore)]

    def screenshot(self, path: str | os.PathLike):
        import base64

        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self):
        try:
            self.browser.send("Target.closeTarget", {"targetId": self.target_id}, timeout=10)
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# ComfyUI frontend
# ---------------------------------------------------------------------------------------------
_SET_WIDGETS_JS = r"""
(async (repl) => {
  const g = window.app.graph;
  const nodes = g._nodes || g.nodes;
  const missing = [];
  for (const [key, values] of Object.entries(repl)) {
    const targets = nodes.filter(n => String(n.id) === key || n.title === key || n.type === key);
    if (!targets.length) { missing.push(key); continue; }
    for (const n of targets) {
      for (const [wname, v] of Object.entries(values)) {
        const w = (n.widgets || []).find(w => w.name === wname);
        if (!w) { missing.push(key + '.' + wname); continue; }
        w.value = v;
        if (w.callback) { try { w.callback(v, window.app.canvas, n); } catch (e) {} }
      }
    }
  }
  g.setDirtyCanvas && g.setDirtyCanvas(true, true);
  return missing;
})
"""


_WRAP_API_JS = r"""
(() => {
  const api = window.app.api;
  if (!api.__sdeditQueued) {
    api.__sdeditQueued = [];
    const orig = api.queuePrompt.bind(api);
    api.queuePrompt = async (...args) => {
      try {
        const result = await orig(...args);
        api.__sdeditQueued.push({ ok: true, result });
        return result;
      } catch (e) {
        api.__sdeditQueued.push({ ok: false, error: String(e), response: (e && e.response) || null });
        throw e;
      }
    };
  }
  return api.__sdeditQueued.length;
})()
"""


class ComfyFrontend:
    """A tab showing the ComfyUI page of ``server`` (a :class:`~tests.comfy.harness.ComfyServer`)."""

    def __init__(self, browser: Browser, server, load_timeout: float = 300):
        self.browser, self.server = browser, server
        self._loaded_ids: list[str] | None = None
        self.renderer = getattr(server, "renderer", None)
        if self.renderer is not None:  # before the page reads its settings
            server.post_json("/settings/Comfy.VueNodes.Enabled", self.renderer == "vue")
        server.post_json("/settings/Comfy.TutorialCompleted", True)  # no templates dialog over the canvas
        self.page = browser.new_page()
        self.page.navigate(server.url)
        # window.app is set before the frontend opens its startup workflow (previous, default or,
        # for a new user, blank); a graph loaded earlier gets replaced. Wait for the active workflow.
        self.page.wait_for(
            "!!(window.app && window.app.graph && window.app.loadGraphData && window.app.queuePrompt"
            " && window.app.api && window.app.api.clientId && window.app.extensionManager"
            " && window.app.extensionManager.workflow && window.app.extensionManager.workflow.activeWorkflow)",
            timeout=load_timeout)

    def load(self, workflow: dict, replacements: dict | None = None):
        """``app.loadGraphData(workflow)`` then set widget values.

        ``replacements``: ``{node_key: {widget_name: value}}`` where node_key is a node id (as a
        string), a node title or a node type (every node of that type).
        """
        want = sorted(str(n["id"]) for n in workflow.get("nodes", []))
        for _attempt in range(3):
            self.page.evaluate(f"window.app.loadGraphData({json.dumps(workflow)}).then(() => true)")
            time.sleep(0.2)
            if self._graph_node_ids() == want:
                break
        else:
            raise CDPError(f"the frontend did not keep the loaded graph (nodes {self._graph_node_ids()}, want {want})")
        self._loaded_ids = want
        if replacements:
            missing = self.page.evaluate(f"{_SET_WIDGETS_JS}({json.dumps(replacements)})")
            if missing:
                raise CDPError(f"replacements matched no node/widget: {missing}")

    def _graph_node_ids(self) -> list[str]:
        return sorted(self.page.evaluate(
            "(window.app.graph._nodes || window.app.graph.nodes).map(n => String(n.id))") or [])

    def graph_to_prompt(self) -> dict:
        """The API prompt the frontend would send (``app.graphToPrompt()``)."""
        return self.page.evaluate("window.app.graphToPrompt().then(p => p.output)")

    def queue(self, timeout: float = 60) -> str:
        """``await app.queuePrompt(0)``; returns the new prompt_id.

        ``app.queuePrompt`` returns ``!lastNodeErrors``, which is false even on success (the server
        answers ``node_errors: {}``), so the page's ``api.queuePrompt`` is wrapped to record the
        server's answer; a refused prompt raises with the server's ``node_errors``.
        """
        before = _known_prompt_ids(self.server)
        loaded = getattr(self, "_loaded_ids", None)
        if loaded is not None and self._graph_node_ids() != loaded:
            raise CDPError(f"the graph changed after loading (nodes {self._graph_node_ids()}, loaded {loaded})")
        n0 = self.page.evaluate(_WRAP_API_JS)
        self.page.evaluate("window.app.queuePrompt(0).then(() => true)")
        answers = self.page.evaluate(f"window.app.api.__sdeditQueued.slice({n0})") or []
        for a in answers:
            if not a.get("ok"):
                raise CDPError(f"the server refused the frontend's prompt: {a.get('error')} "
                               f"{json.dumps(a.get('response'))[:3000]}")
        ids = [a["result"]["prompt_id"] for a in answers if (a.get("result") or {}).get("prompt_id")]
        if ids:
            return ids[0]
        deadline = time.monotonic() + timeout  # fallback: find it on the server
        while time.monotonic() < deadline:
            new = _known_prompt_ids(self.server) - before
            if new:
                return sorted(new)[0]
            time.sleep(0.1)
        raise CDPError(f"app.queuePrompt(0) sent no prompt to the server; console: "
                       f"{self.page.console_messages()[-20:]}")

    def run(self, workflow: dict, replacements: dict | None = None, timeout: float = 180) -> dict:
        self.load(workflow, replacements)
        pid = self.queue()
        return self.server.wait(pid, timeout)

    def close(self):
        self.page.close()


def _known_prompt_ids(server) -> set[str]:
    ids = set(server.history().keys())
    q = server.queue()
    for item in q.get("queue_running", []) + q.get("queue_pending", []):
        ids.add(item[1])
    return ids


def run_ui_workflow(server, workflow: dict, replacements: dict | None = None, timeout: float = 180,
                    browser: Browser | None = None, check_console: bool = True) -> dict:
    """Run a UI-format workflow through the real frontend; returns the ``/history`` entry.

    Opens the served page in headless chromium, waits for ``app``, calls
    ``app.loadGraphData(workflow)``, applies ``replacements`` (see :meth:`ComfyFrontend.load`),
    ``await app.queuePrompt(0)`` and waits for the server to finish the prompt. With
    ``check_console`` any console error/exception (other than :data:`BENIGN_CONSOLE`) fails.
    Pass ``browser`` to reuse a running chromium (the ``comfy_browser`` fixture).
    """
    own = browser is None
    browser = browser or Browser()
    try:
        fe = ComfyFrontend(browser, server)
        try:
            entry = fe.run(workflow, replacements, timeout)
            if check_console:
                errors = fe.page.console_errors()
                if errors:
                    raise AssertionError("browser console errors:\n" + "\n".join(errors))
            return entry
        except Exception as e:
            if hasattr(e, "add_note"):  # Python 3.11+: keep the type, add what the page said
                msgs = "\n".join(f"  [{lvl}] {text[:500]}" for lvl, text in fe.page.console_messages()[-30:])
                e.add_note(f"browser console (last 30):\n{msgs}\nserver log tail:\n{server.log_tail(30)}")
            raise
        finally:
            fe.close()
    finally:
        if own:
            browser.close()
