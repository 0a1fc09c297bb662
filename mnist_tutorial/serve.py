"""A served model: one picture in over HTTP, the JSON of ``predict --json`` out.

The command line's ``serve`` runs it on this machine (127.0.0.1). It is Python's own
``http.server``: no dependency, a few requests a second, enough to call the model from
another program or a phone on the same network. A public service would put a framework
and a production server in front (FastAPI on uvicorn, say) for concurrency, TLS and
authentication; the contract shown here (what goes in, what comes out, which status
for which mistake, a size limit, a timeout) stays the same.
"""

from __future__ import annotations

import json
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError
from .predict import FileResult, Prediction, Predictor

#: The largest upload accepted: a phone's photo fits, a mistake (a video) does not.
MAX_UPLOAD_BYTES = 10_000_000
#: A client silent for this long is dropped, so no request holds a thread for ever.
REQUEST_TIMEOUT_S = 10.0
#: An over-large upload is read and dropped up to this size before the connection
#: closes, so that the client, still sending, receives the answer instead of a reset.
DRAIN_LIMIT_BYTES = 64_000_000
PREDICT_PATH = "/predict"
HEALTH_PATH = "/health"


class PredictionServer(ThreadingHTTPServer):
    """An HTTP server that reads uploaded pictures with one Predictor."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        predictor: Predictor,
        *,
        model_name: str = "model",
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        request_timeout: float = REQUEST_TIMEOUT_S,
        log_requests: bool = True,
    ) -> None:
        super().__init__(address, PredictionHandler)
        self.predictor = predictor
        self.log_requests = log_requests
        self.model_name = model_name
        self.max_upload_bytes = max_upload_bytes
        self.request_timeout = request_timeout
        # One picture at a time through the model: PyTorch already uses every core.
        self.model_lock = threading.Lock()

    @property
    def url(self) -> str:
        """Return the address to POST pictures to."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{PREDICT_PATH}"


class PredictionHandler(BaseHTTPRequestHandler):
    """Answers GET /health and POST /predict; every answer is one line of JSON."""

    server: PredictionServer
    error_message_format = ""  # send_error writes JSON instead (below)
    # Even a malformed request line gets a status line and headers, not HTTP/0.9.
    default_request_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        """Log the request to stderr as http.server does, unless told to be quiet."""
        if self.server.log_requests:
            super().log_message(format, *args)

    def setup(self) -> None:
        """Give the connection the server's timeout before it is read."""
        super().setup()
        self.connection.settimeout(self.server.request_timeout)

    def do_GET(self) -> None:
        """Say that the server is up and which model it serves."""
        if urlsplit(self.path).path != HEALTH_PATH:
            self.send_error(
                HTTPStatus.NOT_FOUND,
                f"no page {self.path}; POST a picture to {PREDICT_PATH}, or GET "
                f"{HEALTH_PATH}",
            )
            return
        self.send_json(HTTPStatus.OK, {"status": "ok", "model": self.server.model_name})

    def do_POST(self) -> None:
        """Read the uploaded picture and answer with its prediction."""
        if urlsplit(self.path).path != PREDICT_PATH:
            self.send_error(
                HTTPStatus.NOT_FOUND,
                f"no endpoint {self.path}; POST the picture to {PREDICT_PATH}",
            )
            return
        upload = self.read_upload()
        if upload is None:
            return
        name, picture = upload
        with self.server.model_lock:
            (outcome,) = self.server.predictor.outcomes([picture])
        if isinstance(outcome, Prediction):
            result = FileResult(Path(name), outcome)
            self.send_json(HTTPStatus.OK, [result.to_dict()])
        else:
            self.send_error(HTTPStatus.UNPROCESSABLE_ENTITY, str(outcome))

    def read_upload(self) -> tuple[str, bytes] | None:
        """Return the upload's name and bytes, or answer the mistake and return None."""
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self.send_error(
                HTTPStatus.LENGTH_REQUIRED,
                "the request has no Content-Length; send the picture as the body "
                "(curl --data-binary @digit.png) or as a form file (curl -F file=@...)",
            )
            return None
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self.send_error(
                HTTPStatus.BAD_REQUEST,
                f"Content-Length {length_header!r} is not a size in bytes",
            )
            return None
        limit = self.server.max_upload_bytes
        if length > limit:
            self.send_error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the upload is {length:,} bytes, more than the limit of {limit:,}; "
                "send a smaller picture (28x28 is all the model reads), or start serve "
                "with a larger --max-upload-mb",
            )
            self.drain(length)
            return None
        body = self.read_body(length)
        if len(body) < length:
            self.send_error(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the upload stopped after {len(body):,} of its {length:,} bytes; send "
                "it again",
            )
            return None
        content_type = self.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            return "upload", body
        return self.form_file(content_type, body)

    def read_body(self, length: int) -> bytes:
        """Return up to ``length`` bytes of the body: fewer if the client stops."""
        body = bytearray()
        try:
            while len(body) < length:
                chunk = self.rfile.read1(min(length - len(body), 1 << 16))
                if not chunk:
                    break
                body += chunk
        except (TimeoutError, ConnectionError):
            pass
        return bytes(body)

    def form_file(self, content_type: str, body: bytes) -> tuple[str, bytes] | None:
        """Return the name and bytes of the first file in a form, or answer None."""
        form = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body
        )
        for part in form.iter_parts() if form.is_multipart() else ():
            if part.get_filename() is not None:
                payload = part.get_payload(decode=True)
                return part.get_filename() or "upload", bytes(payload or b"")
        self.send_error(
            HTTPStatus.BAD_REQUEST,
            "the form holds no file; send the picture as a file field "
            "(curl -F file=@digit.png ...)",
        )
        return None

    def drain(self, length: int) -> None:
        """Read and drop an upload that was refused, up to DRAIN_LIMIT_BYTES."""
        left = min(length, DRAIN_LIMIT_BYTES)
        while left > 0 and (chunk := self.read_body(min(left, 1 << 16))):
            left -= len(chunk)

    def send_error(
        self, code: int, message: str | None = None, explain: str | None = None
    ) -> None:
        """Answer an error as one line of JSON: {"error": message}."""
        status = HTTPStatus(code)
        self.send_json(status, {"error": message or status.phrase})

    def send_json(self, status: HTTPStatus, payload: object) -> None:
        """Send ``payload`` as one line of JSON with ``status``, then close."""
        body = (json.dumps(payload, allow_nan=False) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def make_server(
    predictor: Predictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    model_name: str = "model",
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    request_timeout: float = REQUEST_TIMEOUT_S,
    log_requests: bool = True,
) -> PredictionServer:
    """Return a server on ``host:port`` (port 0: any free one), not serving yet.

    It logs each request to stderr unless ``log_requests`` is False (chapter 8)."""
    if max_upload_bytes < 1:
        raise ConfigError(
            f"max_upload_bytes must be at least 1, got {max_upload_bytes}"
        )
    return PredictionServer(
        (host, port),
        predictor,
        model_name=model_name,
        max_upload_bytes=max_upload_bytes,
        request_timeout=request_timeout,
        log_requests=log_requests,
    )
