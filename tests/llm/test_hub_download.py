"""A hub id downloads once, with a progress bar, when the hub is reachable.

The hub is a local HTTP server speaking the Hugging Face hub's documented endpoints (repo info,
file tree, HEAD/GET of /resolve/) for a checkpoint the test builds: no network here.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from core.config import Settings
from core.llm.model import load_model
from tests.llm.test_bigger_models import llama3_checkpoint

REPO = "someone/llama3-tiny-instruct"
SHA = "a" * 40


def fake_hub(folder: Path) -> ThreadingHTTPServer:
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    class Hub(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str], *, head: bool = False) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _route(self, head: bool) -> None:
            path = self.path.split("?")[0]
            if path in (f"/api/models/{REPO}/revision/main", f"/api/models/{REPO}/revision/{SHA}"):
                info = {"id": REPO, "sha": SHA, "siblings": [{"rfilename": n} for n in files]}
                return self._send(
                    200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head=head
                )
            if path.startswith(f"/api/models/{REPO}/tree/"):
                tree = [
                    {"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                    for n, b in files.items()
                ]
                return self._send(
                    200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, head=head
                )
            for rev in ("main", SHA):
                prefix = f"/{REPO}/resolve/{rev}/"
                if path.startswith(prefix) and path[len(prefix) :] in files:
                    body = files[path[len(prefix) :]]
                    etag = hashlib.sha256(body).hexdigest()
                    return self._send(200, body, {"X-Repo-Commit": SHA, "ETag": f'"{etag}"'}, head=head)
            return self._send(404, b"{}", {"X-Error-Code": "EntryNotFound"}, head=head)

        def do_GET(self) -> None:
            self._route(head=False)

        def do_HEAD(self) -> None:
            self._route(head=True)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_hub_id_downloads_with_a_progress_bar_then_loads(tmp_path, monkeypatch, capfd, bundled_models_dir):
    server = fake_hub(llama3_checkpoint(tmp_path / "ckpt", bundled_models_dir, seed=0))
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")  # our probe
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
        import huggingface_hub.constants as hub_constants

        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        # huggingface_hub read HF_ENDPOINT when it was imported; point its constants here too
        monkeypatch.setattr(hub_constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(
            hub_constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        )
        monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
        loaded = load_model(Settings(data_dir=tmp_path, model=REPO, _env_file=None))
    finally:
        server.shutdown()
    assert loaded.model.config.rope_parameters["rope_type"] == "llama3"
    assert "<|eot_id|>" in loaded.tokenizer.convert_ids_to_tokens(sorted(loaded.eos_token_ids))
    err = capfd.readouterr().err
    assert "100%" in err, "the download shows a progress bar"
    assert any((tmp_path / "hf" / "hub").rglob("model.safetensors")), "kept in the hub cache"
