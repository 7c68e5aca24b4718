"""Figure: bytes on the wire and time of an artifact download, gzip vs the file as it is.

A real Jupyter server with the extension (a subprocess on a free port) serves two safetensors
files of the same random-init weights (``nn.Linear`` layers, ``JMS_BENCH_MB`` MB in fp32, 64 by
default): one in float32, one in bfloat16. Each is downloaded through ``/modelsave/download/``
by a client that accepts gzip (as browsers do) and by one that does not, reading the raw bytes
on the wire (no decompression in the client). Printed: file size, bytes on the wire, their
ratio, the server's time to send (loopback, so the network costs nothing here) and the time the
same bytes would take on a 100 Mbit/s link. Last line: bytes on the wire / file size for bf16.
"""

from __future__ import annotations

import gzip
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

MB = int(os.environ.get("JMS_BENCH_MB", "64"))
LINK = 100e6 / 8  # bytes per second of a 100 Mbit/s link


def weights(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    layers = max(1, MB * 10**6 // (1024 * 1024 * 4))
    return {f"layer{i}.weight": torch.nn.Linear(1024, 1024).weight.detach().to(dtype)
            for i in range(layers)}  # fmt: skip


def start_server(root: Path) -> tuple[subprocess.Popen, int, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = os.urandom(16).hex()
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "server", f"--port={port}", "--no-browser",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--ServerApp.allow_root=True", "--ServerApp.port_retries=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert server.stderr is not None
    for line in server.stderr:
        if re.search(r"is running at", line):
            break
    for _ in range(60):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server, port, token
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the server did not start")


def download(port: int, token: str, name: str, gzip_ok: bool) -> tuple[bytes, float, str]:
    """(raw body, seconds, Content-Encoding) of one download."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = {"Authorization": f"token {token}"}
    if gzip_ok:
        headers["Accept-Encoding"] = "gzip, deflate, br, zstd"
    start = time.perf_counter()
    conn.request("GET", f"/modelsave/download/{name}", headers=headers)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - start
    assert response.status == 200, (response.status, body[:200])
    return body, elapsed, response.getheader("Content-Encoding") or "identity"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {}
        for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            files[label] = root / f"model_{label}.safetensors"
            save_file(weights(dtype), str(files[label]))
        server, port, token = start_server(root)
        ratios = {}
        try:
            for label, path in files.items():
                size = path.stat().st_size
                download(port, token, path.name, True)  # warm: the gzip decision is cached
                plain, t_plain, _ = download(port, token, path.name, False)
                packed, t_packed, encoding = download(port, token, path.name, True)
                data = gzip.decompress(packed) if encoding == "gzip" else packed
                assert plain == data == path.read_bytes()
                ratios[label] = len(packed) / size
                print(f"{label}: file {size / 1e6:.1f} MB; accepting gzip: {len(packed) / 1e6:.1f} MB "
                      f"on the wire ({encoding}, {ratios[label]:.3f} of the file) in {t_packed:.2f} s "
                      f"on loopback, {max(t_packed, len(packed) / LINK):.1f} s at 100 Mbit/s; "
                      f"without gzip {len(plain) / 1e6:.1f} MB in {t_plain:.2f} s, "
                      f"{len(plain) / LINK:.1f} s at 100 Mbit/s")  # fmt: skip
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    print(
        f"ratio {ratios['bf16']:.3f} (bf16 bytes on the wire / file size; fp32 {ratios['fp32']:.3f})"
    )


if __name__ == "__main__":
    main()
