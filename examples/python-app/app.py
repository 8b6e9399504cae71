"""The seed's Python app: a small HTTP service on port 8000.

It uses only the standard library to serve, and reports whether the packages
of requirements.txt (installed by the builder with `pip install --user` into
/root/.local) can be imported. As the tutorial's Dockerfile runs the app as
`appuser` while the packages live under root's home (mode 700), they cannot
be imported at runtime: the app says so instead of failing (see README.md).
"""

import http.server
import importlib.util
import os
import sys

PORT = 8000


def requirement_names():
    names = []
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "requirements.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                names.append(line.split("==")[0].split(">=")[0].strip())
    return names


def importable(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = ", ".join(
            f"{name}: {'importable' if importable(name) else 'not importable'}"
            for name in requirement_names()
        )
        body = (
            f"Hello from the multi-stage Python app (Python {sys.version.split()[0]}, "
            f"uid {os.getuid()}; requirements: {status})\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    print(f"Serving on port {PORT}", flush=True)
    http.server.ThreadingHTTPServer(("", PORT), Handler).serve_forever()
