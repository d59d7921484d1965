"""A response's head goes to the socket with its body, in one send, and never waits for it."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import uvicorn

from wikipulse.httpserver import HeadWithBody, guarded_protocol


class _Recorder:
    """A transport that records each call that reaches the socket."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []
        self.closed = False
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sends.append(bytes(data))

    def writelines(self, list_of_data: list[bytes]) -> None:
        self.sends.append(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_a_head_and_its_body_written_in_one_step_are_one_send() -> None:
    async def main() -> _Recorder:
        sent = _Recorder()
        transport = HeadWithBody(sent, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HEAD\r\n\r\n")
        assert sent.sends == []  # held for the body
        transport.write(b"body")
        transport.write(b"more")  # after the first pair, straight through
        await asyncio.sleep(0)
        return sent

    assert asyncio.run(main()).sends == [b"HEAD\r\n\r\nbody", b"more"]


def test_a_head_without_a_body_is_sent_at_the_next_turn_of_the_loop() -> None:
    async def main() -> tuple[list[bytes], list[bytes]]:
        sent = _Recorder()
        transport = HeadWithBody(sent, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HEAD\r\n\r\n")
        before = list(sent.sends)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        transport.write(b"chunk")  # a streaming body, later
        return before, sent.sends

    before, after = asyncio.run(main())
    assert before == []
    assert after == [b"HEAD\r\n\r\n", b"chunk"]


def test_close_sends_a_held_head_first_and_the_rest_is_the_transports_own() -> None:
    async def main() -> _Recorder:
        sent = _Recorder()
        transport = HeadWithBody(sent, asyncio.get_running_loop())  # type: ignore[arg-type]
        assert transport.get_extra_info("peername") == "info:peername"
        transport.write(b"HEAD\r\n\r\n")
        transport.close()
        assert sent.sends == [b"HEAD\r\n\r\n"]
        assert sent.closed
        await asyncio.sleep(0)  # the scheduled flush finds nothing left to send
        return sent

    assert asyncio.run(main()).sends == [b"HEAD\r\n\r\n"]


def test_a_head_held_while_the_connection_closes_is_dropped_not_written() -> None:
    async def main() -> _Recorder:
        sent = _Recorder()
        transport = HeadWithBody(sent, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HEAD\r\n\r\n")
        sent.closing = True  # the peer went away before the loop turned
        await asyncio.sleep(0)
        return sent

    assert asyncio.run(main()).sends == []


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b'{"total": 1}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.timeout(30)
def test_the_guarded_server_answers_keep_alive_requests_whole_and_in_order() -> None:
    """Through uvicorn with the guarded protocol: two requests on one connection, two answers."""

    async def main() -> bytes:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = uvicorn.Config(
            _app,
            host="127.0.0.1",
            port=port,
            http=guarded_protocol(5.0, 10),
            log_config=None,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        for _ in range(1000):  # at most 10 s
            if server.started:
                break
            await asyncio.sleep(0.01)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            request = b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"
            writer.write(request + request)  # pipelined
            await writer.drain()
            received = b""
            while received.count(b'{"total": 1}') < 2:
                chunk = await asyncio.wait_for(reader.read(65536), 5)
                assert chunk, "the server closed the connection"
                received += chunk
            writer.close()
            return received
        finally:
            server.should_exit = True
            await task

    received = asyncio.run(main())
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"200 OK")
        assert b"content-length: 12" in head.lower()
        assert body == b'{"total": 1}'
