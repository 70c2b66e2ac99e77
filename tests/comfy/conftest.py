"""Fixtures for tests that run against a real ComfyUI (``tests/comfy/test_*.py``).

The environment comes from ``bash scripts/test.sh`` (ComfyUI 0.3.75 copied to
``${SDEDIT_TEST_CACHE:-~/.cache/sdedit-test}/comfyui``, chromium from Debian). When ComfyUI is
missing, these tests skip -- except in CI (``CI`` set), where they fail.

Session fixtures (one server for the whole run; every test in this folder is marked ``comfyui``):

``comfyui_dir -> pathlib.Path``
    The ComfyUI copy (has ``main.py``).
``tiny_sd3 -> pathlib.Path``
    The tiny real MMDiT (SD3-layout) checkpoint of ``tests/comfy/tiny_mmdit.py`` (server name
    ``SD3_CKPT``), generated in a subprocess on first use.
``tiny_models -> dict[str, pathlib.Path]``
    ``{"checkpoint", "lora", "controlnet"}``: the files of ``tests/fixtures/tiny_sd15.py``.
    In the server their names are ``CKPT``, ``LORA`` and ``CONTROLNET`` (importable from here).
``comfy_server -> harness.ComfyServer``
    Running server (``--cpu --preview-method latent2rgb``) with this repo linked as
    ``custom_nodes/comfyui-sdedit`` and the tiny models in ``models/{checkpoints,loras,controlnet}``.
    ``object_info(cls=None)``, ``queue_prompt(api_prompt) -> prompt_id``,
    ``wait(prompt_id, timeout=120) -> history entry`` (raises ``ComfyExecutionError`` with the
    server's message, ``ComfyInterrupted``), ``run(api_prompt, timeout=120) -> {node_id: {"images":
    [np.ndarray HxWxC uint8], "image_files": [...], ...}}``, ``upload_image(array|path) -> name``,
    ``interrupt()``, ``free()``, ``history(id)``, ``queue()``, ``log()``, ``assert_pack_loaded()``,
    ``import_failures()``, ``ws`` (websocket listener: ``ws.for_prompt(id)``, ``ws.wait_for(pred)``),
    ``progress_events(id)``, ``preview_frames(id)``.
    ComfyUI caches node results: an identical prompt executes nothing and its history repeats
    the earlier output files (no progress messages), so vary a seed (or call ``free()``) when a
    test needs the nodes to run again.
``comfy_browser -> browser.Browser``
    A headless chromium (Debian's, CDP over a pipe). Use with ``run_ui_workflow``.

Function fixtures:

``ui_server -> UiServer`` (session, parametrized)
    The server of a browser test with the renderer its pages use: ComfyUI's pinned frontend
    (classic), and the newest ``comfyui-frontend-package`` (``comfy_server_newest``, a second server
    with ``--front-end-root``) in the classic and the Nodes 2.0 (Vue) renderer. A test that uses it
    (or ``run_ui``) runs in each; upload to and read from ``ui_server``, not ``comfy_server``.
``run_ui(workflow: dict, replacements: dict | None = None, timeout=180) -> history entry``
    Runs a UI-format workflow through the real frontend (``app.loadGraphData`` +
    ``app.queuePrompt(0)``) on ``ui_server`` and fails on browser console errors.
    ``replacements = {node_id_or_title_or_type: {widget_name: value}}``.
``comfy_inprocess -> pathlib.Path``
    Puts the ComfyUI copy first on ``sys.path`` so ``import comfy.samplers``,
    ``import comfy.sd``, ``import latent_preview`` work in the test process (CPU, no server).
    Then ``harness.import_pack()`` imports this repo as package ``comfyui_sdedit`` (so
    ``comfyui_sdedit.nodes`` resolves the pack's relative imports), the way ComfyUI does.

Helpers: ``harness.txt2img_prompt(ckpt_name, seed=0, steps=4, width=64, height=64, ...)`` builds
the core txt2img API prompt (node ids "ckpt", "pos", "neg", "latent", "sampler", "decode",
"save"); ``UI_DATA`` is the folder of UI-format workflows used by the tests;
``tests.fixtures.tiny_sd15.reference_encode/reference_decode`` say what the tiny VAE computes
(8x8 average pooling / nearest upsampling), for pixel-level assertions.

Example (``tests/comfy/test_nodes_example.py``)::

    from tests.comfy import harness
    from tests.comfy.conftest import CKPT

    def test_my_node(comfy_server):
        assert "SDEdit_MyNode" in comfy_server.object_info()
        p = harness.txt2img_prompt(CKPT, seed=1, filename_prefix="my_node")
        p["img"] = {"class_type": "LoadImage", "inputs": {"image": comfy_server.upload_image(array)}}
        p["mine"] = {"class_type": "SDEdit_MyNode", "inputs": {...}}
        out = comfy_server.run(p)               # raises ComfyExecutionError with the traceback
        img = out["save"]["images"][0]          # np.uint8 (64, 64, 3)

    def test_my_workflow(comfy_server, run_ui):
        wf = json.loads((REPO / "workflows" / "x.json").read_text())
        entry = run_ui(wf, {"CheckpointLoaderSimple": {"ckpt_name": CKPT}})
        images = comfy_server.output_images(entry)

Run only these tests with ``bash scripts/test.sh tests/comfy``; skip them with ``-m "not comfyui"``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.comfy import browser as _browser
from tests.comfy import harness, tiny_mmdit
from tests.fixtures import tiny_sd15

CKPT = tiny_sd15.CHECKPOINT_NAME
LORA = tiny_sd15.LORA_NAME
CONTROLNET = tiny_sd15.CONTROLNET_NAME
SD3_CKPT = tiny_mmdit.CHECKPOINT_NAME
UI_DATA = Path(__file__).parent / "data"

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing(reason: str):
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI is set, so this is an error; run bash scripts/test.sh)", pytrace=False)
    pytest.skip(f"{reason}; run bash scripts/test.sh to install it")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.comfyui)


@pytest.fixture(scope="session")
def comfyui_dir() -> Path:
    d = harness.comfyui_dir()
    if d is None:
        _missing("ComfyUI is not installed (SDEDIT_COMFYUI_DIR / SDEDIT_TEST_CACHE/comfyui)")
    try:
        import torchvision  # noqa: F401  (ComfyUI needs it at start)
    except Exception as e:  # pragma: no cover
        _missing(f"torchvision does not import ({e}); the ComfyUI env needs the matching torch pair")
    return d


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    return tiny_sd15.ensure_all()


@pytest.fixture(scope="session")
def tiny_sd3(comfyui_dir) -> Path:
    """The tiny real MMDiT (SD3-layout) checkpoint of ``tests/comfy/tiny_mmdit.py``; name ``SD3_CKPT``."""
    return tiny_mmdit.ensure(comfyui_dir)


@pytest.fixture(scope="session")
def comfy_server(comfyui_dir, tiny_models, tiny_sd3, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui-base")
    server = harness.ComfyServer(
        comfyui_dir, base,
        models={
            "checkpoints": [tiny_models["checkpoint"], tiny_sd3],
            "loras": [tiny_models["lora"]],
            "controlnet": [tiny_models["controlnet"]],
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def comfy_browser():
    if _browser.chromium_path() is None:
        _missing("chromium is not installed (/usr/bin/chromium)")
    b = _browser.Browser()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="session")
def comfy_server_newest(comfyui_dir, tiny_models, tiny_sd3, tmp_path_factory):
    """A second server that serves the newest frontend (``--front-end-root``, see harness.newest_frontend_root)."""
    root = harness.newest_frontend_root()
    if root is None:
        _missing(f"comfyui-frontend-package {harness.NEWEST_FRONTEND_VERSION} is not unzipped in the test cache")
    server = harness.ComfyServer(
        comfyui_dir, tmp_path_factory.mktemp("comfyui-base-newest-frontend"),
        models={"checkpoints": [tiny_models["checkpoint"], tiny_sd3], "loras": [tiny_models["lora"]],
                "controlnet": [tiny_models["controlnet"]]},
        extra_args=["--front-end-root", str(root)],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


# The frontends the browser tests run in: the one ComfyUI 0.3.75 pins (classic litegraph canvas; its
# Vue node renderer predates the Nodes 2.0 setting), and the newest one in both renderers.
UI_VARIANTS = [("pinned", "classic"), ("newest", "classic"), ("newest", "vue")]


class UiServer:
    """A :class:`harness.ComfyServer` plus the renderer its pages use (``classic`` or ``vue`` = the
    Nodes 2.0 setting ``Comfy.VueNodes.Enabled``); everything else is the server's."""

    def __init__(self, server, frontend: str, renderer: str):
        self._server, self.frontend, self.renderer = server, frontend, renderer

    def __getattr__(self, name):
        return getattr(self._server, name)

    def __repr__(self):
        return f"UiServer({self.frontend}, {self.renderer})"


@pytest.fixture(scope="session", params=UI_VARIANTS, ids=[f"{f}-{r}" for f, r in UI_VARIANTS])
def ui_server(request):
    """The server (and renderer) of a browser test; tests using it run once per :data:`UI_VARIANTS`."""
    frontend, renderer = request.param
    server = request.getfixturevalue("comfy_server" if frontend == "pinned" else "comfy_server_newest")
    return UiServer(server, frontend, renderer)


@pytest.fixture(scope="session")
def _ui_pages():
    pages: dict = {}
    yield pages
    for fe in pages.values():
        fe.close()


@pytest.fixture
def ui_page(ui_server, comfy_browser, _ui_pages) -> _browser.ComfyFrontend:
    """One page per :data:`UI_VARIANTS` entry, kept for the session (a page load is the slow part of a
    browser test); each ``load`` replaces its graph."""
    key = (ui_server.frontend, ui_server.renderer)
    if key not in _ui_pages:
        _ui_pages[key] = _browser.ComfyFrontend(comfy_browser, ui_server)
    return _ui_pages[key]


@pytest.fixture
def run_ui(ui_server, ui_page):
    def _run(workflow: dict, replacements: dict | None = None, timeout: float = 180, check_console: bool = True):
        seen = len(ui_page.page.console_errors())
        try:
            entry = ui_page.run(workflow, replacements, timeout)
        except Exception as e:
            msgs = "\n".join(f"  [{lvl}] {text[:500]}" for lvl, text in ui_page.page.console_messages()[-30:])
            e.add_note(f"browser console (last 30):\n{msgs}\nserver log tail:\n{ui_server.log_tail(30)}")
            raise
        errors = ui_page.page.console_errors()[seen:]
        if check_console and errors:
            raise AssertionError("browser console errors:\n" + "\n".join(errors))
        return entry

    return _run


@pytest.fixture(scope="session")
def comfy_inprocess(comfyui_dir) -> Path:
    return harness.add_comfyui_to_sys_path(comfyui_dir)
