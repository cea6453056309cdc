import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import comfy_env  # noqa: E402

comfy_env.import_pack()   # the repository as package `sleight`, without ComfyUI
