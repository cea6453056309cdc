"""scripts/comfy_server.py Client on newer ComfyUI's Jobs API, against the response shape that ComfyUI documents in
comfy_execution/jobs.py and server.py (GET /api/jobs, GET /api/jobs/{id}; read in ComfyUI 0.38.1). The /history
path runs against the real 0.3.75 server in tests/server/test_api_compat.py."""
import comfy_server

PROMPT_ID = "5f0c3b52-7d7e-4b8e-9f3e-0d6a0f3f9a11"
OUTPUTS = {"9": {"images": [{"filename": "best_00001_.png", "subfolder": "sleight", "type": "output"}]},
           "12": {"text": ["{}"]}}
STATUS = {"status_str": "success", "completed": True,
          "messages": [["execution_start", {"prompt_id": PROMPT_ID, "timestamp": 1}],
                       ["execution_success", {"prompt_id": PROMPT_ID, "timestamp": 2}]]}
# normalize_history_item(prompt_id, history_item, include_outputs=True)
JOB = {"id": PROMPT_ID, "status": "completed", "priority": 3, "create_time": 1700000000000,
       "execution_start_time": 1, "execution_end_time": 2, "outputs_count": 1,
       "preview_output": {**OUTPUTS["9"]["images"][0], "nodeId": "9", "mediaType": "images"},
       "outputs": OUTPUTS, "execution_status": STATUS, "workflow": {"prompt": {}, "extra_data": {}}}


def test_a_finished_job_reads_as_a_history_entry():
    entry = comfy_server.entry_from_job(JOB)
    assert entry["outputs"] == OUTPUTS and entry["status"] == STATUS
    assert comfy_server.Client.output_images(entry) == [("9", OUTPUTS["9"]["images"][0])]
    failed = comfy_server.entry_from_job({**JOB, "status": "failed", "execution_status": None,
                                          "execution_error": {"exception_message": "boom"}})
    assert failed["status"]["status_str"] == "error" and failed["outputs"] == OUTPUTS


def test_a_queued_or_running_job_is_not_finished():
    # normalize_queue_item: no outputs, status pending / in_progress
    for status in ("pending", "in_progress"):
        assert comfy_server.entry_from_job({"id": PROMPT_ID, "status": status, "priority": 1, "outputs_count": 0}) is None
    assert comfy_server.entry_from_job(None) is None


class Reply:
    def __init__(self, status, body):
        self.status_code, self.body = status, body

    def json(self):
        return self.body

    def raise_for_status(self):
        assert self.status_code == 200


def test_client_prefers_jobs_and_falls_back_to_history(monkeypatch):
    asked = []

    def newer(url, params=None, timeout=None):           # a server with the Jobs API: the job is running, then done
        asked.append(url.split("127.0.0.1:1", 1)[1])
        if url.endswith("/api/jobs"):
            return Reply(200, {"jobs": [], "pagination": {"offset": 0, "limit": 1, "total": 0, "has_more": False}})
        running = sum("/api/jobs/" in a for a in asked) == 1
        return Reply(200, {"id": PROMPT_ID, "status": "in_progress"} if running else JOB)

    monkeypatch.setattr(comfy_server.requests, "get", newer)
    client = comfy_server.Client("http://127.0.0.1:1")
    assert client.history(PROMPT_ID, wait=5)["outputs"] == OUTPUTS
    assert asked == ["/api/jobs", f"/api/jobs/{PROMPT_ID}", f"/api/jobs/{PROMPT_ID}"]

    def older(url, params=None, timeout=None):           # 0.3.75: /api/jobs is a 404 from the static route
        asked.append(url.split("127.0.0.1:1", 1)[1])
        if "/api/jobs" in url:
            return Reply(404, None)
        return Reply(200, {PROMPT_ID: {"outputs": OUTPUTS, "status": STATUS, "prompt": []}})

    asked.clear()
    monkeypatch.setattr(comfy_server.requests, "get", older)
    client = comfy_server.Client("http://127.0.0.1:1")
    assert client.history(PROMPT_ID)["outputs"] == OUTPUTS and not client.has_jobs_api()
    assert asked == ["/api/jobs", f"/history/{PROMPT_ID}"]
