"""Run inside a private network namespace (unshare --net): a 'public' server and a toolhost fetching from it.

Prints one JSON object of results.  Used by test_http_in_a_private_network_namespace.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading

from machina.root import init_root
from machina.testing.toolhost import running_toolhost

PUBLIC_IP = "93.184.215.14"  # not private, not reserved: the SSRF check lets it through


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1/")
            self.end_headers()
            return
        body = b"x" * 1000
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main(root: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{PUBLIC_IP}/32", "dev", "lo"], check=True)
    server = http.server.ThreadingHTTPServer((PUBLIC_IP, 8080), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    init_root(root)
    env = {"MACHINA_PERMISSION_MODE": "open", "MACHINA_SECCOMP_ENABLE": "1", "MACHINA_HTTP_STDOUT_MAX": "100"}
    results = {}
    with running_toolhost(root, env=env) as host:
        url = f"http://{PUBLIC_IP}:8080/"
        results["plain"] = host.client.call("AID.NET.HTTP_GET.v1", {"url": url}).to_wire()
        results["lowered"] = host.client.call("AID.NET.HTTP_GET.v1", {"url": url, "max_bytes": 10}).to_wire()
        results["redirect"] = host.client.call("AID.NET.HTTP_GET.v1", {"url": url + "redirect"}).to_wire()
    with running_toolhost(root, env={**env, "MACHINA_HTTP_ALLOWED_HOSTS": "only.example.org"}) as host:
        results["not_allowed"] = host.client.call("AID.NET.HTTP_GET.v1", {"url": url}).to_wire()
    server.shutdown()
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
