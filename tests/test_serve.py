"""The served model: pictures over HTTP, answers and mistakes as one line of JSON.

The fast tests run the server in a thread of this process on a free port; the slow one
starts `python -m mnist_tutorial serve` as a reader would and stops it with Ctrl+C.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import one_line_error

from mnist_tutorial import pretrained_card
from mnist_tutorial.cli import main
from mnist_tutorial.predict import Predictor
from mnist_tutorial.serve import PredictionServer, make_server

SAMPLES = Path(__file__).resolve().parent.parent / "book" / "samples"
SAMPLE = SAMPLES / "photo-002-digit-2.png"
LIMIT = 20_000  # bytes: the sample fits, the over-large upload does not


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


@pytest.fixture()
def server(predictor: Predictor) -> Iterator[PredictionServer]:
    served = make_server(
        predictor, port=0, model_name="cnn", max_upload_bytes=LIMIT, request_timeout=0.5
    )
    thread = threading.Thread(
        target=served.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield served
    served.shutdown()
    served.server_close()
    thread.join(timeout=5)


def post(url: str, body: bytes, content_type: str = "image/png") -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def form(field: str, filename: str | None, content: bytes) -> tuple[bytes, str]:
    """Return a multipart/form-data body with one field, and its content type."""
    boundary = "----mnist-tutorial-test"
    disposition = f'form-data; name="{field}"' + (
        f'; filename="{filename}"' if filename else ""
    )
    body = (
        (
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def expected_json(predictor: Predictor, name: str) -> list[dict[str, object]]:
    """Return what `predict --json` prints for the sample, under the upload's name."""
    (result,) = predictor.predict_files([SAMPLE])
    return [{**result.to_dict(), "path": name}]


def one_json_line(body: bytes) -> object:
    text = body.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    return json.loads(text)


def test_a_picture_in_the_body(server: PredictionServer, predictor: Predictor) -> None:
    status, body = post(server.url, SAMPLE.read_bytes())
    assert status == 200
    assert one_json_line(body) == expected_json(predictor, "upload")


def test_a_picture_as_a_form_file(
    server: PredictionServer, predictor: Predictor
) -> None:
    status, body = post(server.url, *form("file", "mine.png", SAMPLE.read_bytes()))
    assert status == 200
    assert one_json_line(body) == expected_json(predictor, "mine.png")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"not a picture", "image/png", 422, "is not an image Pillow can read"),
        (b"x" * (LIMIT + 1), "image/png", 413, "more than the limit of 20,000"),
        (*form("name", None, b"seven"), 400, "the form holds no file"),
    ],
    ids=["not-a-picture", "too-large", "form-without-file"],
)
def test_a_bad_upload_gets_its_status_and_error(
    server: PredictionServer,
    predictor: Predictor,
    body: bytes,
    content_type: str,
    status: int,
    error: str,
) -> None:
    answered, answer = post(server.url, body, content_type)
    assert answered == status
    message = one_json_line(answer)
    assert isinstance(message, dict) and list(message) == ["error"]
    assert error in message["error"]
    # Nothing was lost: the next picture is read as ever.
    assert post(server.url, SAMPLE.read_bytes())[0] == 200


def raw_request(server: PredictionServer, request: bytes) -> bytes:
    """Send bytes as they are and return all the server answers."""
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (b"GET /health HTTP/1.0\r\n\r\n", 200, None),
        (b"GET /nowhere HTTP/1.0\r\n\r\n", 404, "no page /nowhere; POST a picture"),
        (b"PUT /predict HTTP/1.0\r\n\r\n", 501, "Unsupported method ('PUT')"),
        (b"POST /other HTTP/1.0\r\n\r\n", 404, "no endpoint /other"),
        (b"POST /predict HTTP/1.0\r\n\r\n", 411, "the request has no Content-Length"),
        (
            b"POST /predict HTTP/1.0\r\nContent-Length: lots\r\n\r\n",
            400,
            "Content-Length 'lots' is not a size in bytes",
        ),
        # Ten bytes of a promised thousand, then silence: dropped after the timeout.
        (
            b"POST /predict HTTP/1.0\r\nContent-Length: 1000\r\n\r\n0123456789",
            408,
            "the upload stopped after 10 of its 1,000 bytes",
        ),
        (b"nonsense\r\n\r\n", 400, "Bad request syntax"),
    ],
    ids=[
        "health",
        "unknown-page",
        "unknown-method",
        "unknown-endpoint",
        "no-length",
        "bad-length",
        "stalled-upload",
        "not-http",
    ],
)
def test_requests_get_a_status_and_one_line_of_json(
    server: PredictionServer, request_bytes: bytes, status: int, error: str | None
) -> None:
    answer = raw_request(server, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split(b" ")[1] == str(status).encode()
    assert b"Content-Type: application/json" in head
    message = one_json_line(body)
    if error is None:
        assert message == {"status": "ok", "model": "cnn"}
    else:
        assert isinstance(message, dict) and error in message["error"]


def test_a_port_in_use_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)], prog="mnist-tutorial") == 2
    one_line_error(
        capsys,
        f"cannot listen on 127.0.0.1:{port} (address already in use); choose another "
        "--port (0 picks a free one)",
    )


@pytest.mark.slow
def test_serve_on_the_command_line(tmp_path: Path) -> None:
    served = subprocess.Popen(
        [sys.executable, "-m", "mnist_tutorial", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = served.stdout.readline()  # type: ignore[union-attr]
        architecture = pretrained_card()["architecture"]["name"]
        assert first.startswith(f"serving {architecture} at http://127.0.0.1:"), first
        url = re.search(r" at (http://\S+/predict): ", first)[1]  # type: ignore[index]
        status, body = post(url, *form("file", SAMPLE.name, SAMPLE.read_bytes()))
        assert status == 200
        printed = subprocess.run(
            [sys.executable, "-m", "mnist_tutorial", "predict", "--json", str(SAMPLE)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (expected,) = json.loads(printed)
        assert one_json_line(body) == [{**expected, "path": SAMPLE.name}]
    finally:
        served.send_signal(signal.SIGINT)
        # Stopping takes 2.4 s with two other jobs on the two cores (PyTorch's
        # teardown); the whole suite loads the machine more, so the wait is generous.
        out, err = served.communicate(timeout=90)
    assert served.returncode == 0, err
    assert out.splitlines()[-1] == "stopped"


@pytest.mark.parametrize("log_requests", [True, False])
def test_requests_are_logged_unless_the_server_is_quiet(
    predictor: Predictor, capfd: pytest.CaptureFixture[str], log_requests: bool
) -> None:
    served = make_server(predictor, port=0, log_requests=log_requests)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    try:
        status, _ = post(served.url, SAMPLE.read_bytes())
    finally:
        served.shutdown()
        served.server_close()
        thread.join(timeout=5)
    assert status == 200
    logged = capfd.readouterr().err
    assert ('"POST /predict HTTP/1.1" 200' in logged) == log_requests
