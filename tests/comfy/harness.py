"""Drive a real, headless ComfyUI server from tests (no pytest here; see conftest.py for fixtures).

``ComfyServer`` starts ``python main.py --cpu`` from the ComfyUI copy that ``scripts/test.sh``
installs, in a scratch base directory that holds this repo as ``custom_nodes/comfyui-sdedit`` and
the tiny fixture models, and talks to it over HTTP (``urllib``) and its ``/ws`` websocket.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_DIR_NAME = "comfyui-sdedit"

# comfy_extras files that fail without torchaudio (not installed in the test env on purpose).
EXPECTED_IMPORT_FAILURES = ("nodes_audio.py", "nodes_audio_encoder.py")


# ---------------------------------------------------------------------------------------------
# locating ComfyUI
# ---------------------------------------------------------------------------------------------
def comfyui_dir() -> Path | None:
    """The ComfyUI copy (a folder with ``main.py``), or None when it is not installed.

    ``$SDEDIT_COMFYUI_DIR``, else ``${SDEDIT_TEST_CACHE:-~/.cache/sdedit-test}/comfyui`` (where
    ``scripts/test.sh`` puts it).
    """
    env = os.environ.get("SDEDIT_COMFYUI_DIR")
    if env:
        cand = Path(env)
    else:
        cache = os.environ.get("SDEDIT_TEST_CACHE") or str(Path.home() / ".cache" / "sdedit-test")
        cand = Path(cache) / "comfyui"
    return cand if (cand / "main.py").is_file() and (cand / "comfy").is_dir() else None


NEWEST_FRONTEND_VERSION = os.environ.get("SDEDIT_NEW_FRONTEND_VERSION") or "1.58.1"  # scripts/test.sh pins it


def newest_frontend_root() -> Path | None:
    """The static folder of the newest ``comfyui-frontend-package`` (served with ``--front-end-root``),
    which ``scripts/test.sh`` unzips to ``${SDEDIT_TEST_CACHE}/comfyui-frontend-<version>``; None if absent."""
    cache = os.environ.get("SDEDIT_TEST_CACHE") or str(Path.home() / ".cache" / "sdedit-test")
    root = Path(cache) / f"comfyui-frontend-{NEWEST_FRONTEND_VERSION}" / "comfyui_frontend_package" / "static"
    return root if (root / "index.html").is_file() else None


def add_comfyui_to_sys_path(comfy_dir: str | os.PathLike | None = None, cpu: bool | None = None) -> Path:
    """Make ``import comfy.samplers`` (and ``nodes``, ``folder_paths``...) work in this process.

    Puts the ComfyUI folder first on ``sys.path``. This repo's own ``nodes`` package shadows
    ComfyUI's ``nodes.py`` when the repo root is on the path, so a previously imported top-level
    ``nodes`` that is ours is dropped from ``sys.modules``. Import the pack itself with
    :func:`import_pack`. ComfyUI's command line is not parsed (defaults apply); ``cpu`` (default:
    when CUDA is unavailable) sets ``--cpu`` -- the CUDA torch build would otherwise try to
    initialise a driver that is not there.
    """
    d = Path(comfy_dir) if comfy_dir is not None else comfyui_dir()
    if d is None:
        raise RuntimeError("ComfyUI is not installed (run bash scripts/test.sh once)")
    d = d.resolve()
    if str(d) in sys.path:
        sys.path.remove(str(d))
    sys.path.insert(0, str(d))
    mod = sys.modules.get("nodes")
    if mod is not None and not str(getattr(mod, "__file__", "") or "").startswith(str(d)):
        del sys.modules["nodes"]
    # ComfyUI's comfy/, comfy_api/, comfy_extras/... have no __init__.py (namespace packages), so any
    # regular package of the same name anywhere on sys.path wins over them -- e.g. this very
    # folder, tests/comfy, when a test puts tests/ on sys.path. Pin them to the ComfyUI copy.
    import importlib.machinery
    import importlib.util

    for name in ("comfy", "comfy_api", "comfy_extras", "comfy_execution", "comfy_config"):
        pkg_dir = d / name
        cur = sys.modules.get(name)
        if cur is not None and str(pkg_dir) in list(getattr(cur, "__path__", []) or []):
            continue
        for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[k]
        if pkg_dir.is_dir():
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(pkg_dir)]
            sys.modules[name] = importlib.util.module_from_spec(spec)
    if "comfy.model_management" not in sys.modules:
        import comfy.options

        comfy.options.enable_args_parsing(False)
        import comfy.cli_args

        if cpu is None:
            import torch

            cpu = not torch.cuda.is_available()
        if cpu:
            comfy.cli_args.args.cpu = True
    return d


def import_pack(name: str = "comfyui_sdedit"):
    """Import this repo as a package the way ComfyUI does (``name.nodes`` etc.), after
    :func:`add_comfyui_to_sys_path`. Returns the package module."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def box_mask(h: int, w: int, box: tuple[int, int, int, int]):
    """A white (editable) box ``(x0, y0, x1, y1)`` on black, as an RGB uint8 image for LoadImageMask."""
    import numpy as np

    m = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    return m


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
class ComfyError(RuntimeError):
    """Base class of the harness' errors."""


class ComfyPromptError(ComfyError):
    """``POST /prompt`` refused the prompt (validation). ``.body`` is the server's JSON."""

    def __init__(self, message: str, body: Any = None):
        super().__init__(message)
        self.body = body


class ComfyExecutionError(ComfyError):
    """The prompt failed while executing. ``.data`` is the ``execution_error`` message."""

    def __init__(self, message: str, data: dict | None = None, entry: dict | None = None):
        super().__init__(message)
        self.data = data or {}
        self.entry = entry


class ComfyInterrupted(ComfyError):
    """The prompt was interrupted (``execution_interrupted``)."""

    def __init__(self, message: str, entry: dict | None = None):
        super().__init__(message)
        self.entry = entry


# ---------------------------------------------------------------------------------------------
# websocket listener
# ---------------------------------------------------------------------------------------------
@dataclass
class WsEvent:
    """One message from ``/ws``: ``type`` is the JSON ``type`` or ``"binary"``."""

    type: str
    data: Any
    t: float = field(default_factory=time.monotonic)
    binary_event: int | None = None  # for binary frames: 1 = PREVIEW_IMAGE, 4 = ..._WITH_METADATA
    payload: bytes | None = None  # binary frame body after the 4-byte event type


class WsListener:
    """Background reader of ``ws://host/ws?clientId=...``; keeps every message in order."""

    def __init__(self, url: str, client_id: str):
        import websocket  # websocket-client, from the [test] extras

        self.client_id = client_id
        self.events: list[WsEvent] = []
        self.cond = threading.Condition()
        self._ws = websocket.create_connection(f"{url}/ws?clientId={client_id}", timeout=30)
        self._ws.settimeout(None)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="comfy-ws", daemon=True)
        self._thread.start()

    def _loop(self):
        import websocket

        while not self._closed:
            try:
                opcode, msg = self._ws.recv_data()
            except (websocket.WebSocketException, OSError):
                break
            if opcode == websocket.ABNF.OPCODE_BINARY:
                kind = int.from_bytes(msg[:4], "big") if len(msg) >= 4 else -1
                ev = WsEvent("binary", None, binary_event=kind, payload=bytes(msg[4:]))
            elif opcode == websocket.ABNF.OPCODE_TEXT:
                try:
                    obj = json.loads(msg)
                except ValueError:
                    continue
                ev = WsEvent(obj.get("type", "?"), obj.get("data"))
            else:
                continue
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()

    def close(self):
        self._closed = True
        try:
            self._ws.close()
        except Exception:
            pass

    def wait_for(self, predicate, timeout: float = 60.0) -> WsEvent:
        """Block until an event satisfying ``predicate(event)`` has arrived; returns it."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for ev in self.events[seen:]:
                    if predicate(ev):
                        return ev
                seen = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no matching websocket event")
                self.cond.wait(left)

    def for_prompt(self, prompt_id: str) -> list[WsEvent]:
        """The events of one prompt: from its ``execution_start`` to its end message, including
        binary preview frames in between (prompts run one at a time)."""
        with self.cond:
            events = list(self.events)
        out, inside = [], False
        for ev in events:
            pid = ev.data.get("prompt_id") if isinstance(ev.data, dict) else None
            if ev.type == "execution_start" and pid == prompt_id:
                inside = True
            if inside and (ev.type == "binary" or pid in (None, prompt_id)):
                out.append(ev)
            if inside and pid == prompt_id and ev.type in (
                "execution_success", "execution_error", "execution_interrupted"
            ):
                break
        return out


# ---------------------------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------------------------
class ComfyServer:
    """A headless ComfyUI server process (``--cpu``) in its own base directory.

    Typical use (the ``comfy_server`` fixture does this)::

        server = ComfyServer(comfy_dir, base_dir, models={"checkpoints": [ckpt], "loras": [lora]})
        server.start()
        outputs = server.run(api_prompt)          # {node_id: {"images": [np.ndarray, ...], ...}}
        server.stop()
    """

    def __init__(
        self,
        comfy_dir: str | os.PathLike,
        base_dir: str | os.PathLike,
        models: dict[str, list[str | os.PathLike]] | None = None,
        port: int | None = None,
        preview_method: str = "latent2rgb",
        extra_args: list[str] | None = None,
        python: str | None = None,
        link_pack: bool = True,
    ):
        self.comfy_dir = Path(comfy_dir)
        self.base_dir = Path(base_dir)
        self.models = models or {}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.preview_method = preview_method
        self.extra_args = list(extra_args or [])
        self.python = python or sys.executable
        self.link_pack = link_pack
        self.client_id = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base_dir / "comfyui.log"
        self._log_file = None
        self._ws: WsListener | None = None
        self.startup_seconds: float | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def prepare_base_dir(self):
        for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        if self.link_pack:
            link = self.base_dir / "custom_nodes" / PACK_DIR_NAME
            if not link.exists():
                try:
                    link.symlink_to(REPO_ROOT, target_is_directory=True)
                except OSError:  # no symlinks (e.g. some Windows setups): copy the pack
                    shutil.copytree(REPO_ROOT, link, ignore=shutil.ignore_patterns(
                        ".git", ".venv", "__pycache__", "tests", "bench", "out", "*.egg-info"))
        for folder, files in self.models.items():
            d = self.base_dir / "models" / folder
            d.mkdir(parents=True, exist_ok=True)
            for f in files:
                f = Path(f)
                dst = d / f.name
                if not dst.exists():
                    try:
                        dst.symlink_to(f.resolve())
                    except OSError:
                        shutil.copy2(f, dst)

    def command(self) -> list[str]:
        return [
            self.python, "main.py", "--cpu",
            "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir),
            "--database-url", f"sqlite:///{self.base_dir / 'user' / 'comfyui.db'}",
            "--preview-method", self.preview_method,
            "--disable-auto-launch",
            *self.extra_args,
        ]

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        self.prepare_base_dir()
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the repo root would shadow ComfyUI's nodes.py with ours
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", DO_NOT_TRACK="1")
        self._log_file = open(self.log_path, "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(), cwd=self.comfy_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise ComfyError(f"ComfyUI exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=2)
                break
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ComfyError(f"ComfyUI did not answer /system_stats within {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.25)
        self.startup_seconds = time.monotonic() - t0
        atexit.register(self.stop)  # also when pytest is interrupted
        return self

    def stop(self, timeout: float = 20.0):
        """Stop the server by its own pid (SIGINT, then SIGKILL)."""
        atexit.unregister(self.stop)
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 10)):
                try:
                    self.proc.send_signal(sig)
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- log ------------------------------------------------------------------------------
    def log(self) -> str:
        """Everything the server wrote (stdout + stderr) so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 80) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def import_failures(self) -> list[str]:
        """Lines reporting a failed import, except the torchaudio ones that are expected."""
        bad = []
        for line in self.log().splitlines():
            if "IMPORT FAILED" in line and not any(x in line for x in EXPECTED_IMPORT_FAILURES):
                bad.append(line.strip())
        return bad

    def assert_pack_loaded(self):
        """Raise if ComfyUI reported an import failure for this pack (or anything unexpected)."""
        log = self.log()
        bad = self.import_failures()
        if bad:
            raise AssertionError("import failures:\n" + "\n".join(bad) + "\n--- log ---\n" + log[-6000:])
        if f"custom_nodes/{PACK_DIR_NAME}" not in log and f"custom_nodes\\{PACK_DIR_NAME}" not in log:
            raise AssertionError(f"the pack was not imported (no {PACK_DIR_NAME} in the log):\n{log[-6000:]}")

    # -- http -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> bytes:
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()

    def get_json(self, path: str, timeout: float = 60) -> Any:
        return json.loads(self._request("GET", path, timeout=timeout))

    def post_json(self, path: str, body: Any = None, timeout: float = 60) -> Any:
        raw = self._request("POST", path, body if body is not None else {}, timeout=timeout)
        return json.loads(raw) if raw.strip() else None

    def get_bytes(self, path: str, timeout: float = 60) -> bytes:
        return self._request("GET", path, timeout=timeout)

    # -- API --------------------------------------------------------------------------------
    def object_info(self, node_class: str | None = None) -> dict:
        """``GET /object_info`` (all nodes) or ``/object_info/<class>`` (that node's entry)."""
        if node_class is None:
            return self.get_json("/object_info")
        return self.get_json(f"/object_info/{urllib.parse.quote(node_class)}")[node_class]

    @property
    def ws(self) -> WsListener:
        """The websocket listener (connected on first use with :attr:`client_id`)."""
        if self._ws is None:
            self._ws = WsListener(self.url.replace("http://", "ws://"), self.client_id)
        return self._ws

    def queue_prompt(self, prompt: dict, client_id: str | None = None, extra_data: dict | None = None) -> str:
        """``POST /prompt`` with an API-format prompt; returns its prompt_id.

        Progress/preview messages go to ``client_id`` (default: this harness' websocket, which is
        connected first so none are missed). Raises :class:`ComfyPromptError` on validation errors.
        """
        if client_id is None:
            _ = self.ws  # the property connects: connect before queueing
            client_id = self.client_id
        body = {"prompt": prompt, "client_id": client_id}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            res = self.post_json("/prompt", body)
        except urllib.error.HTTPError as e:
            raw = e.read().decode(errors="replace")
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw
            raise ComfyPromptError(f"POST /prompt refused ({e.code}): {_describe_prompt_error(parsed)}", parsed) from None
        if res.get("node_errors"):
            raise ComfyPromptError(f"node errors: {json.dumps(res['node_errors'])[:2000]}", res)
        return res["prompt_id"]

    def history(self, prompt_id: str | None = None) -> dict:
        if prompt_id is None:
            return self.get_json("/history")
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def queue(self) -> dict:
        return self.get_json("/queue")

    def wait(self, prompt_id: str, timeout: float = 120.0, poll: float = 0.1) -> dict:
        """Block until the prompt finished; returns its ``/history`` entry.

        Raises :class:`ComfyExecutionError` (with the server's message and traceback) on
        ``execution_error``, :class:`ComfyInterrupted` when interrupted, TimeoutError otherwise.
        """
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id)
            if entry is not None:  # ComfyUI writes the history entry when the prompt is done
                for kind, data in (entry.get("status") or {}).get("messages") or []:
                    if kind == "execution_error":
                        raise ComfyExecutionError(_describe_execution_error(data), data, entry)
                    if kind == "execution_interrupted":
                        raise ComfyInterrupted(f"prompt {prompt_id} was interrupted", entry)
                return entry
            if not self.alive:
                raise ComfyError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout}s; queue={self.queue()}")
            time.sleep(poll)

    def run(self, prompt: dict, timeout: float = 120.0, fetch_images: bool = True) -> dict:
        """Queue, wait, and return the outputs: ``{node_id: ui_output}``; with ``fetch_images``
        each ``images`` list holds ``numpy`` arrays (H, W, C uint8) instead of file records
        (the records stay under ``"image_files"``)."""
        pid = self.queue_prompt(prompt)
        entry = self.wait(pid, timeout)
        outputs = entry.get("outputs", {})
        if fetch_images:
            outputs = {nid: self._with_images(out) for nid, out in outputs.items()}
        return outputs

    def _with_images(self, out: dict) -> dict:
        out = dict(out)
        if "images" in out:
            out["image_files"] = out["images"]
            out["images"] = [self.fetch_image(rec) for rec in out["images"]]
        return out

    def output_images(self, entry: dict) -> dict[str, list]:
        """``{node_id: [np.ndarray, ...]}`` for every image output of a history entry."""
        return {
            nid: [self.fetch_image(rec) for rec in out.get("images", [])]
            for nid, out in entry.get("outputs", {}).items() if out.get("images")
        }

    def fetch_image(self, rec: dict):
        """Download an image record (``filename``, ``subfolder``, ``type``) via ``/view``."""
        import numpy as np
        from PIL import Image

        q = urllib.parse.urlencode({"filename": rec["filename"], "subfolder": rec.get("subfolder", ""),
                                    "type": rec.get("type", "output")})
        return np.array(Image.open(io.BytesIO(self.get_bytes(f"/view?{q}"))))

    def upload_image(self, image, name: str | None = None, overwrite: bool = True) -> str:
        """``POST /upload/image``: a ``numpy`` array (H, W, C uint8), a PIL image or a file path.
        Returns the name to use in ``LoadImage``."""
        import numpy as np
        from PIL import Image

        if isinstance(image, (str, os.PathLike)):
            data = Path(image).read_bytes()
            name = name or Path(image).name
        else:
            img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            data = buf.getvalue()
            name = name or f"upload_{uuid.uuid4().hex[:8]}.png"
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\n'
            f'{"true" if overwrite else "false"}\r\n'.encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        req = urllib.request.Request(self.url + "/upload/image", data=b"".join(parts), method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            res = json.loads(r.read())
        return (res["subfolder"] + "/" if res.get("subfolder") else "") + res["name"]

    def interrupt(self):
        """``POST /interrupt``: stop the running prompt."""
        self._request("POST", "/interrupt", {})

    def clear_queue(self):
        self.post_json("/queue", {"clear": True})

    def free(self, unload_models: bool = False, free_memory: bool = True):
        """``POST /free``: drop the execution cache (and models) so identical prompts run again."""
        self.post_json("/free", {"unload_models": unload_models, "free_memory": free_memory})

    def progress_events(self, prompt_id: str) -> list[WsEvent]:
        """``progress`` messages of one prompt (call after :meth:`wait`)."""
        return [e for e in self.ws.for_prompt(prompt_id) if e.type == "progress"]

    def preview_frames(self, prompt_id: str) -> list[WsEvent]:
        """Binary preview-image frames sent while the prompt ran."""
        return [e for e in self.ws.for_prompt(prompt_id) if e.type == "binary" and e.binary_event in (1, 2, 4)]


def _describe_prompt_error(body: Any) -> str:
    if not isinstance(body, dict):
        return str(body)[:2000]
    err = body.get("error") or {}
    parts = [f"{err.get('type', '')}: {err.get('message', '')} {err.get('details', '')}".strip()]
    for nid, ne in (body.get("node_errors") or {}).items():
        for e in ne.get("errors", []):
            parts.append(f"node {nid} ({ne.get('class_type')}): {e.get('message')} {e.get('details', '')}")
    return "; ".join(parts)


def _describe_execution_error(data: dict) -> str:
    tb = "".join(data.get("traceback") or [])
    return (f"node {data.get('node_id')} ({data.get('node_type')}) raised "
            f"{data.get('exception_type')}: {data.get('exception_message')}\n{tb}")


# ---------------------------------------------------------------------------------------------
# API-prompt builders for the tiny models
# ---------------------------------------------------------------------------------------------
def txt2img_prompt(
    ckpt_name: str,
    seed: int = 0,
    steps: int = 4,
    width: int = 64,
    height: int = 64,
    cfg: float = 4.0,
    sampler_name: str = "euler",
    scheduler: str = "normal",
    positive: str = "a red square",
    negative: str = "",
    filename_prefix: str = "sdedit_test",
    denoise: float = 1.0,
) -> dict:
    """Core-only API prompt: CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage ->
    KSampler -> VAEDecode -> SaveImage. Node ids: "ckpt", "pos", "neg", "latent", "sampler",
    "decode", "save" (edit the dict to insert LoRA/ControlNet nodes)."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "sampler": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler_name, "scheduler": scheduler,
            "denoise": denoise}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": filename_prefix}},
    }
