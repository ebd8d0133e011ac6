"""A TCP proxy that can cut a link or slow it down: a real network fault between some
stores and their broker, not a stopped process.

    proxy = FaultProxy(listen_port, broker_port).start()
    proxy.delay(0.3)   # every byte, both ways, arrives 300 ms late (order kept)
    proxy.cut()        # open connections are reset; new ones are accepted and reset
    proxy.heal()       # connections go through again, without delay
    proxy.stop()

It runs its own asyncio loop on a daemon thread; the methods may be called from any
thread. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time


class FaultProxy:
    def __init__(self, listen_port: int, target_port: int, *, host: str = "127.0.0.1"
                 ) -> None:
        if not host.startswith("127."):
            raise ValueError(f"host: loopback only, got {host!r}")
        self.host, self.listen_port, self.target_port = host, listen_port, target_port
        self.state = "ok"
        """``ok``, ``cut``."""
        self.latency_s = 0.0
        self.accepted = 0
        self.reset = 0
        """Connections reset by a cut (open ones, and new ones during it)."""
        self.bytes = 0
        self._conns: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fault-proxy")
        self._server: asyncio.base_events.Server | None = None

    # --- control (any thread) ------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"proxy on {self.host}:{self.listen_port} did not start")
        return self

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._cut)

    def heal(self) -> None:
        self._loop.call_soon_threadsafe(self._set, "ok", 0.0)

    def delay(self, seconds: float) -> None:
        self._loop.call_soon_threadsafe(self._set, self.state, seconds)

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # --- the loop ------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, self.host, self.listen_port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for w in list(self._conns):
                w.transport.abort()

    def _set(self, state: str, latency: float) -> None:
        self.state, self.latency_s = state, latency

    def _cut(self) -> None:
        self.state = "cut"
        for w in list(self._conns):
            w.transport.abort()
            self.reset += 1
        self._conns.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        if self.state == "cut":
            self.reset += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:  # the broker is down: the client sees its connection close
            writer.transport.abort()
            return
        self.accepted += 1
        self._conns.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._conns.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction, each chunk held back by the latency in force when it was
        read; a closed or reset side ends both."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                at, data = await queue.get()
                if not data:
                    return
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while not sender.done():
                data = await reader.read(65536)
                self.bytes += len(data)
                await queue.put((time.monotonic() + self.latency_s, data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            writer.transport.abort()
