"""RFC 9112 (HTTP/1.1) checks: message framing and the Host rules, above all the shapes
request smuggling is built from (a length given two ways, obsolete line folding, bare
CR and LF, chunk sizes and extensions no parser should accept, unknown transfer
codings). Requests are raw bytes on a socket; answers are read with h11, so that a
second, smuggled answer would be seen.
"""

import socket
from dataclasses import dataclass

import h11

from harness import WAIT, Failed, check


@dataclass
class Answers:
    """What the gateway wrote back: the status of each whole response, in order, and
    whether it closed the connection after them."""

    statuses: list[int]
    closed: bool


def exchange(addr: tuple, raw: bytes, want: int = 1, await_close: bool = False) -> Answers:
    """Sends `raw`, then reads responses until `want` have come (and, with
    `await_close`, until the gateway closes the connection or `WAIT` passes)."""
    with socket.create_connection(addr, timeout=WAIT) as sock:
        sock.sendall(raw)
        return read_answers(sock, want, await_close)


def read_answers(sock: socket.socket, want: int, await_close: bool) -> Answers:
    parser = expecting_response()
    statuses: list[int] = []
    while True:
        if len(statuses) >= want and not await_close:
            return Answers(statuses, closed=False)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return Answers(statuses, closed=False)
        except ConnectionResetError:
            data = b""
        if not data:
            return Answers(statuses, closed=True)
        parser = feed(parser, data, statuses)


def expecting_response() -> h11.Connection:
    """An h11 client that has 'sent' a request, so that it parses the next response."""
    parser = h11.Connection(our_role=h11.CLIENT)
    parser.send(h11.Request(method="GET", target="/", headers=[("host", "weir.test")]))
    parser.send(h11.EndOfMessage())
    return parser


def feed(parser: h11.Connection, data: bytes, statuses: list[int]) -> h11.Connection:
    """Feeds `data` to `parser`, appending each complete response's status."""
    parser.receive_data(data)
    while True:
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError as error:
            raise Failed(f"unreadable answer after {statuses}: {error}") from error
        if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
            if event is h11.PAUSED and parser.their_state is h11.DONE:
                rest = parser.trailing_data[0]
                parser = expecting_response()
                parser.receive_data(rest)
                continue
            return parser
        if isinstance(event, h11.Response):
            statuses.append(event.status_code)


def request(head: str, body: bytes = b"") -> bytes:
    """A request from its head's lines joined with CRLF (the empty line is added)."""
    return head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body


def expect(answers: Answers, statuses: set[int], close: bool = False) -> None:
    if len(answers.statuses) != 1 or answers.statuses[0] not in statuses:
        raise Failed(f"expected one answer in {sorted(statuses)}, got {answers.statuses}")
    if close and not answers.closed:
        raise Failed(f"answered {answers.statuses[0]} but kept the connection open")


@check("RFC 9112 §3.2", "a request with one valid Host is served (200)")
def host_served(addr):
    expect(exchange(addr, request("GET /api/hello HTTP/1.1\nhost: weir.test")), {200})


@check("RFC 9112 §3.2", "an HTTP/1.1 request without Host gets 400")
def host_missing(addr):
    expect(exchange(addr, request("GET /api/hello HTTP/1.1")), {400})


@check("RFC 9112 §3.2", "two Host fields get 400")
def host_twice(addr):
    expect(exchange(addr, request("GET /api/hello HTTP/1.1\nhost: a.test\nhost: b.test")), {400})


@check("RFC 9112 §3.2", "an invalid Host value (user info) gets 400")
def host_invalid(addr):
    expect(exchange(addr, request("GET /api/hello HTTP/1.1\nhost: user@a.test")), {400})


@check("RFC 9112 §5.1", "whitespace between field name and colon gets 400")
def space_before_colon(addr):
    raw = request("GET /api/hello HTTP/1.1\nhost: weir.test\nx-probe : 1")
    expect(exchange(addr, raw, await_close=True), {400}, close=True)


@check("RFC 9112 §5.2", "obs-fold in a request gets 400")
def obs_fold(addr):
    raw = request("GET /api/hello HTTP/1.1\nhost: weir.test\nx-folded: a\n b")
    expect(exchange(addr, raw, await_close=True), {400}, close=True)


@check("RFC 9112 §2.2", "a bare CR in the head gets 400")
def bare_cr(addr):
    raw = b"GET /api/hello HTTP/1.1\r\nhost: weir.test\r\nx-probe: a\rb\r\n\r\n"
    expect(exchange(addr, raw, await_close=True), {400}, close=True)


@check("RFC 9112 §2.2", "bare LF line ends are all taken as line ends, or the request refused")
def bare_lf(addr):
    # A recipient MAY take a lone LF as a line end; what it must not do is take some and
    # not others. Here the Content-Length line ends with a lone LF: taken, the body is
    # read and one answer comes; not taken, the field is garbage and 400 comes.
    raw = b"POST /api/echo HTTP/1.1\r\nhost: weir.test\ncontent-length: 5\r\n\r\nhello"
    expect(exchange(addr, raw), {200, 400})


@check("RFC 9112 §6.3", "Content-Length and Transfer-Encoding together: one answer, then close")
def cl_and_te(addr):
    # Read by Content-Length the body would be "0\r\n\r\nG", leaving a smuggled "ET ...".
    smuggled = b"GET /api/hello HTTP/1.1\r\nhost: weir.test\r\n\r\n"
    raw = request("POST /api/echo HTTP/1.1\nhost: weir.test\ncontent-length: 6\ntransfer-encoding: chunked",
                  b"0\r\n\r\n" + smuggled)
    answers = exchange(addr, raw, want=2, await_close=True)
    expect(answers, {400} | set(range(200, 300)), close=True)


@check("RFC 9112 §6.3", "two differing Content-Length fields get 400, then close")
def content_length_twice(addr):
    raw = request("POST /api/echo HTTP/1.1\nhost: weir.test\ncontent-length: 5\ncontent-length: 6", b"hello!")
    expect(exchange(addr, raw, want=2, await_close=True), {400}, close=True)


@check("RFC 9112 §6.3", "Transfer-Encoding without chunked last gets 400, then close")
def te_not_chunked_last(addr):
    raw = request("POST /api/echo HTTP/1.1\nhost: weir.test\ntransfer-encoding: gzip", b"hello")
    expect(exchange(addr, raw, want=2, await_close=True), {400}, close=True)


@check("RFC 9112 §6.1", "an unknown transfer coding before chunked gets 501")
def te_unknown_coding(addr):
    raw = request("POST /api/echo HTTP/1.1\nhost: weir.test\ntransfer-encoding: gzip, chunked", b"0\r\n\r\n")
    expect(exchange(addr, raw), {501})


@check("RFC 9112 §7.1", "a chunk size that overflows 64 bits is refused, then close")
def chunk_size_overflow(addr):
    raw = request("POST /api/echo HTTP/1.1\nhost: weir.test\ntransfer-encoding: chunked",
                  b"10000000000000005\r\nhello\r\n0\r\n\r\n")
    answers = exchange(addr, raw, want=2, await_close=True)
    if any(200 <= s < 300 for s in answers.statuses) or not answers.closed:
        raise Failed(f"answers {answers.statuses}, closed: {answers.closed}")


@check("RFC 9112 §7.1.1", "a chunk extension with a bare LF is refused, then close")
def chunk_extension_lf(addr):
    raw = request("POST /api/echo HTTP/1.1\nhost: weir.test\ntransfer-encoding: chunked",
                  b"5;ext=a\nb\r\nhello\r\n0\r\n\r\n")
    answers = exchange(addr, raw, want=2, await_close=True)
    if any(200 <= s < 300 for s in answers.statuses) or not answers.closed:
        raise Failed(f"answers {answers.statuses}, closed: {answers.closed}")
