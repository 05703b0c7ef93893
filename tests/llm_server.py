"""A scripted OpenAI-compatible chat server on 127.0.0.1 for the LLM association tests.

``ScriptedServer`` answers ``POST /v1/chat/completions`` by the script registered for the
request's ``model``: a list of behaviours, one per request, the last one repeated. Behaviours:

* ``("reply", text)`` -- a normal completion with ``text`` as the message content;
* ``("status", code)`` -- HTTP ``code`` with an OpenAI-style error body;
* ``("hang", seconds)`` -- accept, then send nothing for ``seconds`` (then close);
* ``("drop",)`` -- close the connection without a response;
* ``("garbage",)`` -- HTTP 200 whose body is not JSON;
* ``("no-choices",)`` -- HTTP 200 with ``{"choices": []}``;
* ``("echo-key",)`` -- a completion whose text repeats the Authorization header;
* ``("solve",)`` -- read the SINR table from the prompt and answer ``exact``'s association
  (an oracle: ``exact`` is itself checked against enumeration in test_li_association.py);
* ``("picky",)`` -- like llama-cpp-python's server: HTTP 500 to ``response_format`` of type
  ``json_schema``, else ``("solve",)``;
* ``("greedy",)`` -- read the table and answer each CU's best-SINR BS (may leave a BS empty).

Every request is recorded (path, headers, JSON body) in ``server.requests``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def sinr_from_prompt(body: dict[str, Any]) -> list[list[float]]:
    """The K x N SINR table of the user message (rows ``BS<k> v1 v2 ...``)."""
    text = next(m["content"] for m in body["messages"] if m["role"] == "user")
    rows = [line.split()[1:] for line in text.splitlines() if re.match(r"^\s*BS\d+(\s+[-+.\deE]+)+\s*$", line)]
    return [[float(v) for v in r] for r in rows]


def answer(body: dict[str, Any], how: str) -> str:
    import numpy as np

    from isac.solvers.li_association import associate

    S = np.array(sinr_from_prompt(body))
    a = S.argmax(axis=0) if how == "greedy" else associate(S, "exact").association
    return "Step by step ... done.\n" + json.dumps({"association": [int(x) + 1 for x in a]})


def completion(text: str, model: str = "m") -> dict[str, Any]:
    return {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}


class _Handler(BaseHTTPRequestHandler):
    server: "_Http"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self._send(200, json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode())

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        owner = self.server.owner
        with owner.lock:
            owner.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            script = owner.scripts.get(body.get("model"), [("status", 404)])
            n = owner.counts.get(body.get("model"), 0)
            owner.counts[body.get("model")] = n + 1
            beh = script[min(n, len(script) - 1)]
        kind = beh[0]
        if kind == "reply":
            self._send(200, json.dumps(completion(beh[1], body.get("model", "m"))).encode())
        elif kind == "status":
            err = {"error": {"message": f"scripted error {beh[1]}", "type": "server_error", "code": beh[1]}}
            self._send(beh[1], json.dumps(err).encode())
        elif kind == "hang":
            deadline = time.monotonic() + beh[1]
            while time.monotonic() < deadline and not owner.stopping.is_set():
                time.sleep(0.05)
            self.close_connection = True
        elif kind == "drop":
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.close_connection = True
        elif kind == "garbage":
            self._send(200, b"<html>this is not json</html>", "text/html")
        elif kind == "no-choices":
            self._send(200, json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode())
        elif kind == "picky" and (body.get("response_format") or {}).get("type") == "json_schema":
            self._send(500, json.dumps({"error": {"message": "Input should be 'text' or 'json_object'"}}).encode())
        elif kind in ("solve", "greedy", "picky"):
            self._send(200, json.dumps(completion(answer(body, kind), body.get("model", "m"))).encode())
        elif kind == "echo-key":
            auth = self.headers.get("Authorization", "")
            text = f'I saw your header {auth}. {{"association": [1, 2, 3]}}'
            self._send(200, json.dumps(completion(text)).encode())
        else:  # pragma: no cover - test bug
            self._send(500, b"{}")


class _Http(ThreadingHTTPServer):
    daemon_threads = True
    owner: "ScriptedServer"


class ScriptedServer:
    """Context manager: ``with ScriptedServer({"model": [behaviour, ...]}) as s: s.base_url``."""

    def __init__(self, scripts: dict[str, list[tuple]] | None = None) -> None:
        self.scripts = dict(scripts or {})
        self.requests: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._http = _Http(("127.0.0.1", 0), _Handler)
        self._http.owner = self
        self.port = self._http.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        self._http.shutdown()
        self._http.server_close()

    def calls(self, model: str) -> int:
        return self.counts.get(model, 0)
