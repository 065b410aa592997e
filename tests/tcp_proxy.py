"""A threaded TCP proxy for tests that cut a real network path (e.g. between the service and PostgreSQL).

``TcpProxy(port)`` listens on 127.0.0.1 at a free port and forwards each connection to 127.0.0.1:``port``.
:meth:`TcpProxy.cut` closes every open connection on both sides and, until :meth:`TcpProxy.restore`, accepts
new connections only to close them at once (the client sees the server hang up, as across a partition whose
far end resets). Use it as a context manager to stop it at the end.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

__all__ = ["TcpProxy"]

_CHUNK = 65536


def _close(sock: socket.socket) -> None:
    """Shut ``sock`` down both ways (waking a thread blocked in ``recv``) and close it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:``self.port`` to ``target_host``:``target_port``, one thread per direction.

    Attributes
    ----------
    port: the port the proxy listens on (chosen by the system).
    accepted: connections forwarded so far (refused ones while cut are not counted).
    refused: connections accepted and closed at once while cut.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._stopped = False
        self.accepted = 0
        self.refused = 0
        self._thread = threading.Thread(target=self._accept, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def is_cut(self) -> bool:
        """True between :meth:`cut` and :meth:`restore`."""
        with self._lock:
            return self._cut

    @property
    def open_connections(self) -> int:
        """Sockets (client and server sides) currently forwarded."""
        with self._lock:
            return len(self._open)

    def cut(self) -> None:
        """Close every forwarded connection both ways and refuse new ones until :meth:`restore`."""
        with self._lock:
            self._cut = True
            sockets = list(self._open)
            self._open.clear()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        """Forward new connections again (the ones cut stay closed)."""
        with self._lock:
            self._cut = False

    def stop(self) -> None:
        """Stop listening and close every connection."""
        with self._lock:
            self._stopped = True
        self.cut()
        _close(self._listener)
        self._thread.join(5.0)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed by stop()
            with self._lock:
                refuse = self._cut or self._stopped
                if refuse:
                    self.refused += 1
            if refuse:
                _close(client)
                continue
            try:
                server = socket.create_connection(self._target, timeout=5.0)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                if self._cut or self._stopped:  # cut while connecting
                    self.refused += 1
                    refuse = True
                else:
                    self.accepted += 1
                    self._open.update((client, server))
            if refuse:
                _close(client)
                _close(server)
                continue
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy bytes from ``source`` to ``sink`` until either side closes; then close both."""
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _close(source)
            _close(sink)
