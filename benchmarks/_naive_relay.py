"""A naive relay for the same protocol: the baseline the benchmarks compare with.

It is what one writes first with websockets and pydantic: websockets' default
settings (per-connection keepalive, 16-frame queues, 1 MiB frames), every frame
fully decoded into pydantic models (outer Message, then the Request payload)
and every forward re-encoded from the models. Registry rules are minimal (no
409, no 403 checks). Not for production: it exists to be measured.

Run: ``python benchmarks/_naive_relay.py --port 0`` (prints ``listening on ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import signal

from pydantic import Base64Bytes, BaseModel
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class Message(BaseModel):
    command: int
    payload: Base64Bytes


class Request(BaseModel):
    source: str = ""
    target: str = ""
    body: Base64Bytes | None = None


class Response(BaseModel):
    code: int = 0
    msg: str = ""


def encode(command: int, payload: BaseModel) -> bytes:
    inner = payload.model_dump_json().encode()
    return f'{{"command":{command},"payload":"{base64.b64encode(inner).decode()}"}}'.encode()


answers: dict[str, ServerConnection] = {}
offers: dict[str, ServerConnection] = {}


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request else "/offer"
    my_id: str | None = None
    try:
        async for frame in ws:
            text = isinstance(frame, str)
            try:
                message = Message.model_validate_json(frame)
                if message.command > 100:
                    Response.model_validate_json(message.payload)
                    continue
                request = Request.model_validate_json(message.payload)
            except ValueError as exc:
                reply = encode(100, Response(code=400, msg=str(exc)[:200]))
                await ws.send(reply.decode() if text else reply)
                continue
            code, msg = 0, "ok"
            if message.command == 1 and path == "/register":
                my_id = request.source
                answers[my_id] = ws
            else:
                registry = answers if path == "/offer" else offers
                target = registry.get(request.target)
                if target is None:
                    code, msg = 404, "not found"
                else:
                    if path == "/offer" and my_id is None:
                        my_id = request.source
                        offers[my_id] = ws
                    forward = encode(message.command, request)
                    try:
                        await target.send(forward.decode() if text else forward)
                    except ConnectionClosed:
                        code, msg = 404, "gone"
            reply = encode(message.command + 100, Response(code=code, msg=msg))
            await ws.send(reply.decode() if text else reply)
    except ConnectionClosed:
        pass
    finally:
        if my_id is not None:
            registry = answers if path == "/register" else offers
            if registry.get(my_id) is ws:
                del registry[my_id]


async def main(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serve(handler, host, port) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on ws://{host}:{bound}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
