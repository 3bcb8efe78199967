"""A small stand-in for the Hugging Face Hub on 127.0.0.1, for tests.

It serves model repositories laid out in a temp folder, through the HTTP
endpoints that ``huggingface_hub`` itself calls, so that tests run the real
download and upload code paths with ``HF_ENDPOINT`` pointed here:

- ``HEAD``/``GET /{owner}/{repo}/resolve/{revision}/{path}``: the file, with
  ``X-Repo-Commit``, ``ETag`` (and for weights ``X-Linked-Etag``/``X-Linked-Size``,
  as the Hub does for LFS files); errors carry the Hub's ``X-Error-Code``
  (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``);
- ``GET /api/models/{owner}/{repo}[/revision/{revision}]``: repository info;
- ``POST /api/repos/create``, ``/api/validate-yaml``,
  ``/api/models/{owner}/{repo}/preupload/{revision}`` (every file "regular")
  and ``/api/models/{owner}/{repo}/commit/{revision}`` (NDJSON): what
  ``HfApi.create_repo`` and ``HfApi.upload_folder`` need.

On disk: ``ROOT/{owner}/{repo}/repo.json`` (visibility, refs) and
``ROOT/{owner}/{repo}/commits/{sha}/...`` (a full copy of the tree per commit).
Every request is logged in ``server.requests`` as ``(method, path)``. HTTP/1.0,
one request per connection: once ``stop()`` returns, nothing answers.

``FileServer`` is the same for plain files: a release host or a mirror
(``DGIQA_MIRROR``), with faults on demand (a server error, an error page, a
truncated transfer, a slow answer).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


class LocalServer:
    """An HTTP server on 127.0.0.1 in a thread, for a with-block; subclasses name their request handler."""

    name = "local-server"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        server = self

        class Handler(self.handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port or 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class HubServer(LocalServer):
    """``with HubServer(tmp_path / "hub", token="hf_write") as hub: ...`` (``hub.url`` is the endpoint)."""

    name = "hub-server"
    handler = property(lambda self: _Handler)

    def __init__(self, root: Path, token: str | None = None):
        super().__init__(root)
        self.token = token  # required for writes and for private repositories, when set

    def log(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def requests_for(self, method: str, fragment: str = "") -> list[str]:
        with self._lock:
            return [p for m, p in self.requests if m == method and fragment in p]

    # -- repositories ------------------------------------------------------------------------------

    def _repo_dir(self, repo: str) -> Path:
        owner, name = repo.split("/")
        return self.root / owner / name

    def exists(self, repo: str) -> bool:
        return (self._repo_dir(repo) / "repo.json").is_file()

    def meta(self, repo: str) -> dict:
        return json.loads((self._repo_dir(repo) / "repo.json").read_text())

    def _save_meta(self, repo: str, meta: dict) -> None:
        (self._repo_dir(repo) / "repo.json").write_text(json.dumps(meta, indent=2))

    def create_repo(self, repo: str, private: bool = False) -> None:
        folder = self._repo_dir(repo)
        (folder / "commits").mkdir(parents=True, exist_ok=True)
        self._save_meta(repo, {"private": private, "refs": {}, "log": []})

    def commit(self, repo: str, files: dict[str, bytes | Path], revision: str = "main", message: str = "upload") -> str:
        """Add or replace ``files`` on branch ``revision`` (created if needed); return the new commit sha."""
        with self._lock:
            if not self.exists(repo):
                self.create_repo(repo)
            meta = self.meta(repo)
            parent = meta["refs"].get(revision)
            contents = {
                path: data if isinstance(data, bytes) else Path(data).read_bytes() for path, data in files.items()
            }
            digest = hashlib.sha1(f"{parent}|{message}|{len(meta['log'])}".encode())
            for path in sorted(contents):
                digest.update(path.encode() + hashlib.sha256(contents[path]).digest())
            sha = digest.hexdigest()
            tree = self._repo_dir(repo) / "commits" / sha
            if parent:
                shutil.copytree(self._repo_dir(repo) / "commits" / parent, tree)
            else:
                tree.mkdir(parents=True)
            for path, data in contents.items():
                target = tree / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            meta["refs"][revision] = sha
            meta["log"].append({"sha": sha, "revision": revision, "message": message})
            self._save_meta(repo, meta)
            return sha

    def tag(self, repo: str, name: str, commit: str) -> None:
        meta = self.meta(repo)
        meta["refs"][name] = commit
        self._save_meta(repo, meta)

    def resolve_revision(self, repo: str, revision: str) -> str | None:
        meta = self.meta(repo)
        if revision in meta["refs"]:
            return meta["refs"][revision]
        if (self._repo_dir(repo) / "commits" / revision).is_dir():
            return revision
        return None

    def file(self, repo: str, path: str, revision: str = "main") -> Path:
        return self._repo_dir(repo) / "commits" / self.resolve_revision(repo, revision) / path

    def tamper(self, repo: str, path: str, data: bytes, revision: str = "main") -> None:
        """Change a file in place, without a new commit (a corrupted mirror, or a broken transfer)."""
        self.file(repo, path, revision).write_bytes(data)

    def tree(self, repo: str, revision: str = "main") -> list[str]:
        folder = self._repo_dir(repo) / "commits" / self.resolve_revision(repo, revision)
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


class _Handler(BaseHTTPRequestHandler):
    hub = property(lambda self: self.owner)  # the HubServer that started this handler
    protocol_version = "HTTP/1.0"

    def log_message(self, format, *args):  # quiet: the request log is hub.requests
        pass

    # -- helpers -----------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict | None = None, head: bool = False) -> None:
        body = json.dumps(payload).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})}, head)

    def _error(self, status: int, code: str | None, message: str, head: bool = False, extra=None) -> None:
        headers = {"X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers, head)

    def _authorized(self) -> bool:
        if self.hub.token is None:
            return True
        return self.headers.get("Authorization", "") == f"Bearer {self.hub.token}"

    def _readable(self, repo: str) -> bool:
        return self.hub.exists(repo) and (not self.hub.meta(repo)["private"] or self._authorized())

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- routes ------------------------------------------------------------------------------------

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        raw_path = urlsplit(self.path).path
        self.hub.log(method, raw_path)
        parts = raw_path.strip("/").split("/")
        try:
            if method in ("HEAD", "GET") and len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(parts, head=method == "HEAD")
            if method == "GET" and parts[:2] == ["api", "models"] and len(parts) >= 4:
                return self._model_info(parts)
            if method == "POST" and parts == ["api", "repos", "create"]:
                return self._create_repo()
            if method == "POST" and parts == ["api", "validate-yaml"]:
                self._body()
                return self._json(200, {"errors": [], "warnings": []})
            if method == "POST" and parts[:2] == ["api", "models"] and len(parts) == 6:
                if parts[4] == "preupload":
                    return self._preupload(parts)
                if parts[4] == "commit":
                    return self._commit(parts)
            self._error(404, None, f"no route for {method} {raw_path}")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _resolve(self, parts: list[str], head: bool) -> None:
        repo = f"{unquote(parts[0])}/{unquote(parts[1])}"
        revision = unquote(parts[3])
        path = "/".join(unquote(p) for p in parts[4:])
        if not self._readable(repo):
            # The Hub answers 401 for missing and private repositories alike.
            return self._error(401, "RepoNotFound", "Repository not found", head)
        commit = self.hub.resolve_revision(repo, revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id: " + revision, head)
        file = self.hub.file(repo, path, commit)
        if not file.is_file():
            return self._error(
                404, "EntryNotFound", f"{path} does not exist at {revision}", head, {"X-Repo-Commit": commit}
            )
        data = file.read_bytes()
        headers = {"X-Repo-Commit": commit, "Content-Type": "application/octet-stream"}
        if path.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = '"' + hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() + '"'
        self._send(200, data, headers, head)

    def _model_info(self, parts: list[str]) -> None:
        repo = f"{unquote(parts[2])}/{unquote(parts[3])}"
        revision = unquote(parts[5]) if len(parts) >= 6 and parts[4] == "revision" else "main"
        if not self._readable(repo):
            return self._error(401, "RepoNotFound", "Repository not found")
        commit = self.hub.resolve_revision(repo, revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
        siblings = [{"rfilename": path} for path in self.hub.tree(repo, commit)]
        self._json(200, {"id": repo, "sha": commit, "private": self.hub.meta(repo)["private"], "siblings": siblings})

    def _create_repo(self) -> None:
        payload = json.loads(self._body() or b"{}")
        if not self._authorized():
            return self._error(401, None, "Invalid username or password.")
        repo = f"{payload.get('organization')}/{payload['name']}"
        if self.hub.exists(repo):  # the Hub's 409 carries the url too (HfApi.create_repo(exist_ok=True) reads it)
            message = "You already created this model repo"
            return self._json(409, {"error": message, "url": f"{self.hub.url}/{repo}"}, {"X-Error-Message": message})
        self.hub.create_repo(repo, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        self._json(200, {"url": f"{self.hub.url}/{repo}", "name": repo})

    def _write_target(self, parts: list[str]) -> tuple[str, str] | None:
        repo = f"{unquote(parts[2])}/{unquote(parts[3])}"
        if not self._authorized():
            self._error(401, None, "Invalid username or password.")
            return None
        if not self.hub.exists(repo):
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        return repo, unquote(parts[5])

    def _preupload(self, parts: list[str]) -> None:
        payload = json.loads(self._body() or b"{}")
        target = self._write_target(parts)
        if target is None:
            return
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
            for f in payload.get("files", [])
        ]
        self._json(200, {"files": files})

    def _commit(self, parts: list[str]) -> None:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        target = self._write_target(parts)
        if target is None:
            return
        repo, revision = target
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        files = {}
        for item in lines:
            if item["key"] == "file":
                value = item["value"]
                content = value["content"]
                files[value["path"]] = (
                    base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                )
            elif item["key"] != "header":
                return self._error(400, None, f"unsupported commit operation {item['key']!r}")
        sha = self.hub.commit(repo, files, revision, header.get("summary", ""))
        self._json(200, {"commitUrl": f"{self.hub.url}/{repo}/commit/{sha}", "commitOid": sha, "success": True})


class FileServer(LocalServer):
    """Plain files over HTTP on 127.0.0.1, as a release host or a mirror serves them (``DGIQA_MIRROR``).

    ``GET /{path}`` answers with ``ROOT/{path}``; ``fault(path, kind)`` breaks one path the ways
    downloads break: ``"500"`` (a server error), ``"garbage"`` (200 with an HTML error page),
    ``"truncated"`` (``Content-Length`` of the whole file, half the body, then the connection
    closes), ``"slow"`` (the file, after a second), ``"stall"`` (the file, after five seconds).
    Every request is logged in ``requests`` as ``(method, path)``.
    """

    name = "file-server"
    handler = property(lambda self: _FileHandler)

    def __init__(self, root: Path):
        super().__init__(root)
        self.faults: dict[str, str] = {}

    def fault(self, path: str, kind: str | None) -> None:
        if kind is None:
            self.faults.pop(path.strip("/"), None)
        else:
            self.faults[path.strip("/")] = kind

    def gets(self, fragment: str = "") -> list[str]:
        with self._lock:
            return [p for m, p in self.requests if m == "GET" and fragment in p]


class _FileHandler(BaseHTTPRequestHandler):
    files = property(lambda self: self.owner)  # the FileServer that started this handler
    protocol_version = "HTTP/1.0"

    def log_message(self, format, *args):
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path).strip("/")
        with self.files._lock:
            self.files.requests.append(("HEAD" if head else "GET", "/" + path))
        fault = self.files.faults.get(path)
        target = self.files.root / path
        try:
            if fault == "500":
                return self._reply(500, b"internal error", head)
            if fault == "slow":  # a big file on a slow line: the answer starts after a second
                time.sleep(1.0)
            if fault == "stall":  # connected, then nothing for a long while
                time.sleep(5.0)
            if fault == "garbage":
                return self._reply(200, b"<!DOCTYPE html><html><body>Too many requests</body></html>", head)
            if not path or ".." in path.split("/") or not target.is_file():
                return self._reply(404, b"not found", head)
            data = target.read_bytes()
            if fault == "truncated":
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                self.close_connection = True
                return None
            return self._reply(200, data, head)
        except (BrokenPipeError, ConnectionResetError):
            return None

    def _reply(self, status: int, body: bytes, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream" if status == 200 else "text/plain")
        self.end_headers()
        if not head:
            self.wfile.write(body)
