"""Submission server: a streamed upload far over the limit is cut off at the limit, not read into memory.

Starts ``cvit-bench leaderboard serve`` on 127.0.0.1 with ``--max-upload-mb 64``, sends a chunked 1 GiB body
(no Content-Length, so the server cannot refuse it up front), and reports how many bytes the server accepted
before answering 413, how long it took, and the server's peak RSS (from /proc). Writes
``bench/results/server_upload.json``.
"""
from __future__ import annotations

import http.client
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_fixtures import add_token, run_server  # noqa: E402

CHUNK = 1 << 20
TOTAL_MIB = 1024
LIMIT_MIB = 64


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="cvit-bench-server-"))
    board, data = root / "board", root / "data"
    data.mkdir()
    token = add_token(board, "bench@example.org")
    with run_server(board, data, "--max-upload-mb", str(LIMIT_MIB), "--no-worker") as srv:
        rss_before = peak_rss_mib(srv.proc.pid)
        sent = 0
        head = b'--b\r\nContent-Disposition: form-data; name="bundle"; filename="x.tar.gz"\r\n\r\n'

        def body():
            nonlocal sent
            yield head
            zeros = bytes(CHUNK)
            for _ in range(TOTAL_MIB):
                sent += CHUNK
                yield zeros
            yield b"\r\n--b--\r\n"
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
        started = time.perf_counter()
        status = None
        try:
            conn.request("POST", "/api/submissions", body=body(), encode_chunked=True,
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=b"})
            status = conn.getresponse().status
        except (BrokenPipeError, ConnectionResetError):
            status = "connection closed by the server"
        elapsed = time.perf_counter() - started
        result = {"limit_mib": LIMIT_MIB, "body_mib": TOTAL_MIB, "client_sent_mib_before_cutoff": sent / CHUNK,
                  "answer": status, "seconds": round(elapsed, 2), "server_peak_rss_mib_before": round(rss_before, 1),
                  "server_peak_rss_mib_after": round(peak_rss_mib(srv.proc.pid), 1),
                  "left_on_disk": sorted(p.name for p in (board / "server" / "jobs").rglob("*") if p.is_file())}
    print(json.dumps(result, indent=1))
    out = Path(__file__).resolve().parent / "results" / "server_upload.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
