"""Run a real ComfyUI server (CPU, loopback only) with the pack loaded, and talk to it over HTTP + WebSocket.

    with ComfyServer(log_path="output/server.log") as server:
        result = server.client.run(api_prompt, on_progress=print)   # raises PromptError / ExecutionError
        paths = server.client.download_outputs(result.history, "output/x")

The pack is loaded through the symlink build/ComfyUI/custom_nodes/sleight that `make setup` creates.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests
import websocket

import comfy_env


# Every ComfyUI route this module calls: name -> (method, path). The compatibility test checks each against the
# routes the running ComfyUI declares (tests/comfy/test_compat_scan.py); NEWER_ROUTES exist only after 0.3.75.
ROUTES = {
    "prompt": ("POST", "/prompt"), "interrupt": ("POST", "/interrupt"), "ws": ("GET", "/ws"),
    "history": ("GET", "/history/{prompt_id}"), "histories": ("GET", "/history"), "jobs": ("GET", "/api/jobs"), "job": ("GET", "/api/jobs/{prompt_id}"),
    "object_info": ("GET", "/object_info"), "object_info_node": ("GET", "/object_info/{node_class}"),
    "view": ("GET", "/view"), "system_stats": ("GET", "/system_stats"), "settings": ("POST", "/settings/{id}"),
}
NEWER_ROUTES = {"jobs", "job"}     # the Jobs API (comfy_execution/jobs.py): read in ComfyUI 0.38.1


def route(base, name, **fields):
    return base.rstrip("/") + ROUTES[name][1].format(**fields)


class PromptError(RuntimeError):
    """POST /prompt was refused (HTTP 400: validation failed). `.body` is the server's JSON answer."""

    def __init__(self, body):
        err = body.get("error") or {}
        lines = [f"{err.get('type', 'error')}: {err.get('message', '')} {err.get('details', '')}".rstrip()]
        for node_id, ne in (body.get("node_errors") or {}).items():
            lines += [f"  node {node_id} ({ne.get('class_type')}): {e.get('message')}: {e.get('details')}"
                      for e in ne.get("errors", [])]
        super().__init__("\n".join(lines))
        self.body = body


class ExecutionError(RuntimeError):
    """The prompt ran and failed (`execution_error`) or was interrupted. `.data` is the WebSocket message."""

    def __init__(self, kind, data):
        msg = data.get("exception_message", kind) if kind == "execution_error" else kind
        where = f"node {data.get('node_id')} ({data.get('node_type')})" if data.get("node_id") else ""
        super().__init__(f"{kind} {where}: {str(msg).strip()}")
        self.kind, self.data = kind, data


@dataclass
class Result:
    prompt_id: str
    status: str  # "execution_success", "execution_error" or "execution_interrupted"
    history: dict
    messages: list = field(default_factory=list)  # every (type, data) JSON message seen for this prompt

    def of_type(self, kind):
        return [d for t, d in self.messages if t == kind]


def entry_from_job(job):
    """A finished job of ComfyUI's Jobs API (GET /api/jobs/{id}, newer than 0.3.75) as the /history entry shape
    the rest of this module reads ({"outputs", "status"}); None while the job is pending or running.
    The job's shape (comfy_execution/jobs.py, normalize_history_item with outputs): {"id", "status":
    pending|in_progress|completed|failed, "outputs": {node_id: {...}}, "execution_status": the history's status
    {"status_str", "completed", "messages"}, "execution_error", "workflow": {"prompt", "extra_data"}, ...}."""
    if not job or job.get("status") not in ("completed", "failed"):
        return None
    status = job.get("execution_status") or {"status_str": "success" if job["status"] == "completed" else "error",
                                             "completed": job["status"] == "completed", "messages": []}
    return {"outputs": job.get("outputs") or {}, "status": status, "job": job}


class Client:
    """HTTP + WebSocket client of one ComfyUI server. Results come from the Jobs API where the server has it
    (newer ComfyUI), else from /history (0.3.75)."""

    def __init__(self, base_url, client_id=None, timeout=600):
        self.base, self.timeout = base_url.rstrip("/"), timeout
        self.client_id = client_id or uuid.uuid4().hex
        self._jobs = None

    def has_jobs_api(self):
        """Whether the server offers GET /api/jobs (asked once)."""
        if self._jobs is None:
            try:
                r = requests.get(route(self.base, "jobs"), params={"limit": 1}, timeout=30)
                self._jobs = r.status_code == 200 and isinstance(r.json(), dict) and "jobs" in r.json()
            except (requests.RequestException, ValueError):
                self._jobs = False
        return self._jobs

    def get(self, name, params=None, **fields):
        r = requests.get(route(self.base, name, **fields), params=params, timeout=30)
        r.raise_for_status()
        return r

    def queue(self, prompt, extra_data=None):
        body = {"prompt": prompt, "client_id": self.client_id, "extra_data": extra_data or {}}
        # json.dumps writes NaN / inf as the tokens NaN / Infinity, which the server's JSON reader takes
        # (requests' json= refuses them): a prompt can carry them as a careless client's would
        r = requests.post(route(self.base, "prompt"), data=json.dumps(body),
                          headers={"Content-Type": "application/json"}, timeout=60)
        if r.status_code != 200:
            try:
                body = r.json()
            except ValueError:
                body = {"error": {"message": f"HTTP {r.status_code}: {r.text[:500]}"}}
            raise PromptError(body)
        return r.json()["prompt_id"]

    def run(self, prompt, on_progress=None, extra_data=None, check=True):
        """Queue `prompt`, follow it on the WebSocket until it ends, return a Result (raise on failure if check)."""
        ws = websocket.create_connection(route(self.base.replace("http", "ws", 1), "ws") + f"?clientId={self.client_id}",
                                         timeout=self.timeout)
        try:
            prompt_id = self.queue(prompt, extra_data)
            messages, deadline = [], time.monotonic() + self.timeout
            status, end = None, {}
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"prompt {prompt_id} did not finish within {self.timeout}s")
                frame = ws.recv()
                if not isinstance(frame, str):
                    continue  # binary previews
                msg = json.loads(frame)
                kind, data = msg.get("type"), msg.get("data") or {}
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                messages.append((kind, data))
                if kind == "progress" and on_progress:
                    on_progress(data)
                if kind in ("execution_success", "execution_error", "execution_interrupted"):
                    status, end = kind, data
                # history is written after execution_*; `executing {node: null}` follows it
                if kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
        finally:
            ws.close()
        result = Result(prompt_id, status, self.history(prompt_id, wait=10), messages)
        if check and status != "execution_success":
            raise ExecutionError(status, end)
        return result

    def history(self, prompt_id, wait=0):
        """The finished prompt's record {"outputs", "status", ...} ({} if not there within `wait` seconds)."""
        deadline = time.monotonic() + wait
        while True:
            if self.has_jobs_api():
                r = requests.get(route(self.base, "job", prompt_id=prompt_id), timeout=30)
                entry = entry_from_job(r.json()) if r.status_code == 200 else None
            else:
                entry = self.get("history", prompt_id=prompt_id).json().get(prompt_id)
            if entry or time.monotonic() >= deadline:
                return entry or {}
            time.sleep(0.2)

    def interrupt(self):
        requests.post(route(self.base, "interrupt"), json={}, timeout=30).raise_for_status()

    def object_info(self, node_class=None):
        if node_class:
            return self.get("object_info_node", node_class=node_class).json()
        return self.get("object_info").json()

    @staticmethod
    def output_images(history):
        """[(node_id, {"filename", "subfolder", "type"})] of a history entry, in node order."""
        return [(nid, img) for nid, out in sorted(history.get("outputs", {}).items(), key=lambda kv: int(kv[0]))
                for img in out.get("images", [])]

    def view(self, filename, subfolder="", type="output"):
        return self.get("view", {"filename": filename, "subfolder": subfolder, "type": type}).content

    def download_outputs(self, history, dest):
        """Fetch every output image of a history entry into dest; returns {node_id: [paths]}."""
        dest, paths = Path(dest), {}
        dest.mkdir(parents=True, exist_ok=True)
        for nid, img in self.output_images(history):
            path = dest / Path(img["filename"]).name
            if any(path in p for p in paths.values()):
                path = dest / f"{nid}-{path.name}"  # same name from another subfolder
            path.write_bytes(self.view(img["filename"], img.get("subfolder", ""), img.get("type", "output")))
            paths.setdefault(nid, []).append(path)
        return paths


def _die_with_parent():
    """In the server's process, before exec: SIGTERM it when the process that started it dies (Linux), so a test run
    killed from outside (a timeout, ^C twice) leaves no server behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY_NODES = comfy_env.ROOT / "scripts" / "tiny_nodes"   # the tiny models' test-only loaders (never in the pack)


class ComfyServer:
    """`python main.py --cpu` in build/ComfyUI on a free loopback port, tiny models via extra_model_paths.yaml
    (with the test-only loaders of scripts/tiny_nodes).
    Input (the example image), output, temp and user directories (and the log, unless log_path is given) live in a temporary folder
    that stop() removes. Use as a context manager: the server is always terminated."""

    def __init__(self, log_path=None, models_dir=None, output_dir=None, port=None, ready_timeout=180,
                 extra_args=(), custom_nodes_dir=TINY_NODES):
        self.models_dir, self.log_path = Path(models_dir or comfy_env.MODELS), log_path and Path(log_path)
        self.custom_nodes_dir = custom_nodes_dir  # a folder of more custom nodes (the tiny models' loaders), or None
        self.output_dir, self.extra_args = output_dir and Path(output_dir), list(extra_args)
        self.ready_timeout = ready_timeout
        self.url = f"http://127.0.0.1:{port or free_port()}"
        self.client = Client(self.url)
        self.proc = self._tmp = self._log = self.startup_s = None

    def start(self):
        import example_inputs
        import tiny_models  # writes the yaml a user's install would use; the pack comes from the symlink

        try:
            self._tmp = Path(tempfile.mkdtemp(prefix="sleight-comfy-"))
            self.output_dir = self.output_dir or self._tmp / "output"
            self.log_path = self.log_path or self._tmp / "server.log"
            for d in (self.output_dir, self._tmp / "user", self.log_path.parent):
                d.mkdir(parents=True, exist_ok=True)
            example_inputs.write(self._tmp / "input")
            yaml = tiny_models.write_extra_model_paths(self._tmp / "extra_model_paths.yaml", self.models_dir,
                                                       self.custom_nodes_dir)
            cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1],
                   "--use-pytorch-cross-attention", "--disable-auto-launch", "--extra-model-paths-config", str(yaml),
                   "--output-directory", str(self.output_dir), "--temp-directory", str(self._tmp),
                   "--input-directory", str(self._tmp / "input"),
                   "--user-directory", str(self._tmp / "user"), "--database-url", "sqlite:///:memory:",
                   *self.extra_args]
            env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
            self._log = open(self.log_path, "w")
            t0 = time.monotonic()
            self.proc = subprocess.Popen(cmd, cwd=comfy_env.COMFY, stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                         preexec_fn=_die_with_parent)
            while time.monotonic() - t0 < self.ready_timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} on start:\n{self.log_tail()}")
                try:
                    if requests.get(route(self.url, "system_stats"), timeout=2).status_code == 200:
                        self.startup_s = time.monotonic() - t0
                        return self
                except requests.RequestException:
                    time.sleep(0.25)
            raise TimeoutError(f"ComfyUI not ready after {self.ready_timeout}s:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        if self._log:
            self._log.close()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)  # a log_path given by the caller is kept

    def log_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
