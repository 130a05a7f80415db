"""A TCP proxy on 127.0.0.1 that can drop every open connection on demand: a real network fault.

It also reads the Kafka protocol's request framing (a 4-byte size, then the API key) from clients, so that it can
refuse one kind of request: with ``refuse_produce`` set, a connection that sends a Produce request is cut before
the request reaches the broker — a broker that will not take writes while reads and commits still work."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

PRODUCE = 0  # the Kafka protocol's API key of a Produce request


def _shut(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class TcpProxy:
    def __init__(self, target_port: int, listen_port: int = 0) -> None:
        self._target = ("127.0.0.1", target_port)
        self._server = socket.create_server(("127.0.0.1", listen_port))
        self.port = int(self._server.getsockname()[1])
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.drops = 0
        self.refuse_produce = False
        self.refused = 0
        self.response_delay_s = 0.0  # broker → client: every chunk waits this long (a slow broker)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client), daemon=True).start()

    def _responses(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.response_delay_s:
                    time.sleep(self.response_delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut(src, dst)

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client → broker, whole requests at a time: a Produce request (API key 0) is refused when asked."""
        pending = b""
        try:
            while data := client.recv(65536):
                pending += data
                while len(pending) >= 6 and len(pending) >= 4 + (size := int.from_bytes(pending[:4], "big")):
                    request, pending = pending[: 4 + size], pending[4 + size :]
                    if self.refuse_produce and int.from_bytes(request[4:6], "big", signed=True) == PRODUCE:
                        self.refused += 1
                        return
                    upstream.sendall(request)
        except OSError:
            pass
        finally:
            _shut(client, upstream)

    def drop_all(self) -> int:
        """Cut every connection now (both directions, RST-like); clients must reconnect."""
        with self._lock:
            victims, self._open = self._open, []
        for sock in victims:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.drops += 1
        return len(victims)

    def close(self) -> None:
        self._closed = True
        self._server.close()
        self.drop_all()
