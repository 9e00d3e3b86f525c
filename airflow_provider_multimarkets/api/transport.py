"""The HTTP transport of the hook: one ``requests.Session`` whose every call is bounded in time and size.

``requests`` bounds each socket read (the read timeout), not a call: a server that sends a byte
every few seconds keeps a call alive forever. Here every exchange has a deadline (what is left of
the call's total deadline, see :meth:`..hooks.multimarkets.MultiMarketsHook.call`), enforced by one
watchdog thread per process that shuts the connection's socket down when it passes (the blocked
read then fails at once). Registering a deadline with it costs a lock and a heap push, not a thread
per call. Every answer has a size cap, counted after decompression. ``requests`` and ``urllib3``
are imported by the functions that need them, never at module import.
"""

from __future__ import annotations

import errno
import heapq
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_multimarkets.exceptions import MultiMarketsResponseError, MultiMarketsTransportError

if TYPE_CHECKING:
    import requests

#: Connections kept per host: one per thread that shares a hook, up to this many.
POOL_SIZE = 32
_CHUNK = 8192  # decompressed per read: a compressed bomb inflates in small steps, checked each time
_ACTIVE = threading.local()


class CallWatch:
    """Shuts down the socket of this thread's current request when the deadline passes (see :class:`Watchdog`)."""

    __slots__ = ("connection", "deadline", "done", "due", "expired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.due = 0.0
        self.expired = False
        self.done = False
        self.connection: Any = None

    def __enter__(self) -> CallWatch:
        _ACTIVE.watch = self
        self.due = time.monotonic() + self.deadline
        _watchdog().watch(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.watch = None
        _watchdog().forget(self)

    def expire(self) -> None:
        """Called by the watchdog thread once ``due`` has passed."""
        self.expired = True
        sock = getattr(self.connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Watchdog:
    """One daemon thread that expires every :class:`CallWatch` of the process at its ``due`` time.

    Watches sit in a heap by due time. A finished one is marked and popped from the top by
    :meth:`forget`, so the heap holds only calls in flight. The thread sleeps until the earliest
    due time, or :data:`IDLE_WAKE` seconds when there is none; a new watch wakes it only when it is
    due before that, so a sequence of calls costs no thread switch.
    """

    IDLE_WAKE = 1.0

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, CallWatch]] = []
        self._seq = 0
        self._wake_at = 0.0  # when the thread looks next (0: not started)
        self._thread: threading.Thread | None = None

    def watch(self, watch: CallWatch) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (watch.due, self._seq, watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="multimarkets-call-deadline", daemon=True)
                self._wake_at = watch.due
                self._thread.start()
            elif watch.due < self._wake_at:
                self._cond.notify()

    def forget(self, watch: CallWatch) -> None:
        with self._cond:
            watch.done = True
            heap = self._heap
            while heap and heap[0][2].done:
                heapq.heappop(heap)

    def _run(self) -> None:
        heap = self._heap
        with self._cond:
            while True:
                now = time.monotonic()
                while heap and (heap[0][2].done or heap[0][0] <= now):
                    _, _, watch = heapq.heappop(heap)
                    if not watch.done:
                        watch.expire()
                self._wake_at = heap[0][0] if heap else now + self.IDLE_WAKE
                self._cond.wait(max(0.0, self._wake_at - now))


_WATCHDOG: Watchdog | None = None
_WATCHDOG_LOCK = threading.Lock()


def _forget_watchdog_after_fork() -> None:
    """A forked child has none of its parent's threads (and maybe a lock held at the fork): it starts its own."""
    global _WATCHDOG, _WATCHDOG_LOCK
    _WATCHDOG, _WATCHDOG_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_watchdog_after_fork)


def _watchdog() -> Watchdog:
    global _WATCHDOG
    if _WATCHDOG is None:
        with _WATCHDOG_LOCK:
            if _WATCHDOG is None:
                _WATCHDOG = Watchdog()
    return _WATCHDOG


def build_session(user_agent: str, verify: bool | str, base_url: str) -> requests.Session:
    """A session whose connections report themselves to the call's watchdog."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class _Watched:
        def getresponse(self, *args: Any, **kwargs: Any) -> Any:
            watch = getattr(_ACTIVE, "watch", None)
            if watch is not None:
                watch.connection = self
                if watch.expired:
                    raise TimeoutError("call deadline passed")
            return super().getresponse(*args, **kwargs)  # type: ignore[misc]

    class _HTTPConnection(_Watched, HTTPConnection):
        pass

    class _HTTPSConnection(_Watched, HTTPSConnection):
        pass

    class _HTTPPool(HTTPConnectionPool):
        ConnectionCls = _HTTPConnection

    class _HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = _HTTPSConnection

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
            self._pool_keys: dict[tuple[Any, ...], Any] = {}

        def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
            # requests parses the URL and, when ``verify`` is a CA bundle path, stats it on every request;
            # the answer depends only on the URL and the TLS settings, which do not change per call
            key = (request.url, verify, cert)
            found = self._pool_keys.get(key)
            if found is None:
                found = super().build_connection_pool_key_attributes(request, verify, cert)
                if len(self._pool_keys) >= 256:
                    self._pool_keys.clear()
                self._pool_keys[key] = found
            return found

    session = requests.Session()
    adapter = _Adapter(pool_connections=1, pool_maxsize=POOL_SIZE, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    # The environment (HTTPS_PROXY/NO_PROXY) is read once here instead of on every request (requests'
    # trust_env re-scans os.environ and stats netrc per call); netrc is never consulted, and the session
    # has no auth, so no Authorization header is ever sent.
    session.trust_env = False
    session.auth = None
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    session.verify = verify
    session.headers.update({"User-Agent": user_agent, "Content-Type": "application/json", "Accept": "application/json"})
    return session


def post(
    session: requests.Session,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: tuple[float, float],
    deadline: float,
    max_bytes: int,
    where: str,
    total_deadline: float | None = None,
) -> tuple[int, bytes, str | None]:
    """POST and read the whole answer within ``deadline`` seconds and ``max_bytes``: status, body, Retry-After.

    :param total_deadline: the call's whole deadline, for the message (``deadline`` is what is left of it).
    """
    import requests

    with CallWatch(deadline) as watch:
        try:
            response = session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
            )
            try:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_content(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise MultiMarketsResponseError(
                            f"The answer from {url} is larger than {max_bytes} bytes (after decompression), far "
                            "beyond any documented answer; it was not read further. Check the connection host, or "
                            "raise the extra 'max_response_bytes'.",
                            http_status=response.status_code,
                        )
                    chunks.append(chunk)
                return response.status_code, b"".join(chunks), response.headers.get("Retry-After")
            finally:
                response.close()
        except MultiMarketsResponseError:
            raise
        except (requests.RequestException, OSError, ValueError) as exc:
            if watch.expired:
                raise MultiMarketsTransportError(
                    f"No complete answer from {url} within the call deadline of {total_deadline or deadline:g} s "
                    "(extra 'call_deadline', retries included; the gateway itself gives up after 15 s). The request "
                    "may have been processed; it is not retried.",
                    maybe_sent=True,
                    url=url,
                    deadline_hit=True,
                ) from None
            raise transport_error(exc, url, timeout, where=where) from None


def _errno_in_chain(exc: BaseException | None, wanted: int) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno == wanted:
            return True
        reason = getattr(exc, "reason", None)
        exc = reason if isinstance(reason, BaseException) else (exc.__cause__ or exc.__context__)
        seen += 1
    return False


def transport_error(
    exc: BaseException, url: str, timeout: tuple[float, float], *, where: str = "this worker"
) -> MultiMarketsTransportError:
    """Translate a ``requests`` exception, telling whether the request may have been sent."""
    import requests
    from urllib3.exceptions import NewConnectionError

    from airflow_provider_multimarkets.api.settings import PRE_BASE_URL

    name = type(exc).__name__
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    text = str(exc)
    if _errno_in_chain(exc, errno.EMFILE) or _errno_in_chain(exc, errno.ENFILE) or "Too many open files" in text:
        return MultiMarketsTransportError(
            f"{where[0].upper() + where[1:]} ran out of file descriptors (Too many open files) before connecting to "
            f"{url}; the request was not sent. Close leaked files or sockets in the task, or raise the process "
            "limit (ulimit -n).",
            maybe_sent=False,
            url=url,
        )
    if isinstance(exc, requests.exceptions.SSLError):
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text or "record layer failure" in text:
            return MultiMarketsTransportError(
                f"The server at {url} does not speak TLS (it answered a TLS handshake in plain HTTP); the request "
                "was not sent. Use http:// in the connection host for a plain-HTTP server such as a local "
                "sandbox, or fix the port.",
                maybe_sent=False,
                url=url,
                permanent=True,
            )
        return MultiMarketsTransportError(
            f"TLS verification failed for {url}. Fix the server certificate chain, or set the connection "
            "extra 'verify' to a CA bundle path (set it to false only for a local sandbox).",
            maybe_sent=False,
            url=url,
            permanent=True,
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return MultiMarketsTransportError(
            f"Connecting to {url} timed out after {timeout[0]:g} s (the request was not sent). Check the "
            f"connection host and that {where} can reach it.",
            maybe_sent=False,
            url=url,
        )
    if isinstance(exc, requests.exceptions.ConnectionError) and isinstance(reason, NewConnectionError):
        return MultiMarketsTransportError(
            f"Could not connect to {url} (refused or DNS failure; the request was not sent). Check the "
            f"connection host and port, and that {where} can reach it.",
            maybe_sent=False,
            url=url,
        )
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return MultiMarketsTransportError(
            f"No answer from {url} within {timeout[1]:g} s (read timeout; the request may have been "
            "processed). Raise the connection extra 'timeout' if the platform is slow.",
            maybe_sent=True,
            url=url,
        )
    if isinstance(
        exc,
        (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidHeader,
        ),
    ) or (isinstance(exc, ValueError) and not isinstance(exc, requests.RequestException)):
        return MultiMarketsTransportError(
            f"The request to {url} could not be built ({name}); it was not sent. Fix the connection host "
            f"(e.g. {PRE_BASE_URL}) and header values.",
            maybe_sent=False,
            url=url,
            permanent=True,
        )
    return MultiMarketsTransportError(
        f"The connection to {url} failed while the request was in flight ({name}; it may have been processed).",
        maybe_sent=True,
        url=url,
    )
