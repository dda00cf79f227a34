"""The HTTP transport: every answer is ours (CONTRACT §7.12). `TallyRunner` serves the app through `_Server`, whose
connections are `_Connection`s (aiohttp's RequestHandler, three hooks changed):

    request the parser refuses (line or header too long,  handle_error: §3.14 envelope, 400
      bad framing, Content-Length: abc, unknown           invalid_request (413 / 500 as aiohttp
      Content-Encoding such as br)                         chose), fresh X-Request-Id, one log line
    parser error after the handler began reading          data_received: fails that body, so the
      (bad chunk mid-body)                                 handler answers 400 instead of waiting
    SIGTERM with a body still arriving                    pre_shutdown/shutdown: keep reading it
                                                           (<= BODY_WAIT_S), then aiohttp's drain;
                                                           a stalled client is cut
    a client's error that aiohttp logs itself             log_exception: one line, no traceback

Two more for the hot path (issue 14): `start` is aiohttp's request loop without a Task per
request (the handler runs in the connection's own task), and `resume_reading` does nothing when
nothing is paused (aiohttp calls it at every body's end to parse b"" and resume a transport that
was never paused).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.helpers import ceil_timeout
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import _PAYLOAD_ACCESS_ERROR, ERROR, RequestPayloadError, _ErrInfo

from net.dispatch import Dispatch
from net.errors import new_request_id, refusal_response, unreadable_message
from net.observe import Observer

log = logging.getLogger("tally.server")

# CONTRACT §7.12: on SIGTERM a request whose headers arrived may send the rest of its body for
# this long; a client still mid-body then is cut. Polled: shutdown only, BODY_WAIT_S / POLL checks.
BODY_WAIT_S: Final = 2.0
SHUTDOWN_TIMEOUT_S: Final = 10.0  # aiohttp's drain of answers still being written, at shutdown
LISTEN_BACKLOG: Final = 2048
BODY_POLL_S: Final = 0.02

# Client mistakes aiohttp may log through log_exception: one line each, never a traceback.
_CLIENT_FAULTS: Final = (HttpProcessingError, RequestPayloadError, ConnectionError)

RequestHandlerFn = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class _Connection(web.RequestHandler):
    """One client connection: aiohttp's protocol with our refusals, logs and shutdown drain."""

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse (status 400, `exc` the parser's error)
        or whose handler raised past net.errors.exception_response (500: a bug). Ours: the §3.14 envelope."""
        if request.writer.output_size > 0:  # as aiohttp: a started answer cannot be replaced
            raise ConnectionError("response already started; cannot send the error envelope")
        request_id = new_request_id()
        if status >= 500:
            log.error("unhandled error, request_id=%s", request_id, exc_info=exc)
        else:
            log.info("refused unreadable request, request_id=%s status=%d: %s", request_id, status, unreadable_message(exc))
        return refusal_response(status, exc, request_id)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp logs here with a traceback; a client's fault (e.g. a body error met again while
        aiohttp discards the unread rest) gets one line instead."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, _CLIENT_FAULTS):
            log.info("connection closed after a client error: %s", unreadable_message(exc))
            return
        super().log_exception(*args, **kwargs)

    def data_received(self, data: bytes) -> None:
        """aiohttp's parser step. When the parser fails mid-body it queues an error for the NEXT
        request and the current body never ends; fail that body so its handler answers 400."""
        super().data_received(data)
        messages = self._messages
        request = self._current_request
        if messages and request is not None:
            exc = getattr(messages[-1][0], "exc", None)  # only aiohttp's error entry has one
            content = request.content
            if isinstance(exc, HttpProcessingError) and not content.is_eof():
                content.set_exception(exc)

    def resume_reading(self, resume_parser: bool = True) -> None:
        """aiohttp's, only when something is paused. Each body's end (StreamReader.feed_eof)
        calls it: with neither reading (flow control, which also pauses the parser) nor the
        message queue paused, there is no parsed-ahead data to resume and no transport pause to
        lift, so aiohttp's parse of b"" and transport.resume_reading() would do nothing (issue 14)."""
        if self._reading_paused or self._buffer_paused:
            super().resume_reading(resume_parser)

    def body_pending(self) -> bool:
        """True while this connection holds a request whose headers arrived but not all of its
        body, or one parsed and not yet handed to its handler (shutdown keeps reading for it)."""
        task = self._task_handler
        if self.transport is None or task is None or task.done():
            return False
        request = self._current_request
        if request is not None:
            content = request.content
            return not content.is_eof() and content.exception() is None
        return not self._idle()

    def _idle(self) -> bool:
        """Between requests: waiting for the next one, none parsed and queued."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    async def finish_body(self, wait_s: float) -> None:
        """Shutdown, before aiohttp's drain: let a body still arriving finish (<= wait_s), then
        stop the connection after its answer; a client stalled mid-body is cut (CONTRACT §7.12)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while self.body_pending() and loop.time() < deadline:
            await asyncio.sleep(BODY_POLL_S)
        if self.body_pending():
            log.info("shutdown: cut a client stalled mid-body")
            self.force_close()
        else:
            self.stop_after_answer()

    def stop_after_answer(self) -> None:
        """Read no further request: close now if idle, else once the running handler answered
        (it may be waiting for its fsync: never cut, CONTRACT §4)."""
        if self._idle():
            self.force_close()
        else:
            self.close()

    # -- the request loop: aiohttp 3.14's RequestHandler.start without a Task per request ---------
    #
    # aiohttp runs each request's handler in a Task of its own (`loop.create_task(
    # self._handle_request(...))`, then `await task`), to give it a copy of the context variables
    # (#3406). Tally sets none, so `_serve` awaits `_handle_request` in this connection's own task:
    # no Task built, registered in asyncio's task WeakSet and unregistered, and two event-loop
    # turns less per request (the handler starts now instead of on the next turn, and this loop
    # resumes when it returns instead of one turn after). Cancellation is unchanged: cancelling
    # this connection's task (aiohttp's shutdown, after its timeout) cancelled the awaited Task
    # before and cancels the awaited handler now. Everything else is aiohttp's code as it is:
    # tests/net/test_transport_loop.py fails if aiohttp's start() changes, so a new aiohttp's
    # start() is read again before this copy is trusted with it.

    async def start(self) -> None:
        """aiohttp's request loop (RequestHandler.start) minus the Task per request (see above)."""
        loop = self._loop
        manager = self._manager
        assert manager is not None
        assert self._request_factory is not None
        assert self._request_handler is not None
        while not self._force_close:
            if not self._messages:
                try:
                    self._waiter = loop.create_future()  # wait for the next request
                    await self._waiter
                finally:
                    self._waiter = None
            message, payload = self._messages.popleft()
            # Free a parser slot; resume reading once drained to low water (pipelining).
            if self._parser is not None:
                self._parser.message_consumed()
            if self._buffer_paused and len(self._messages) <= self._msg_queue_resume_size:
                self._resume_reading_if_drained()
            manager.requests_count += 1
            if not await self._serve(message, payload):
                break
            if self._keepalive and not self._close and not self._force_close:
                close_time = loop.time() + self._keepalive_timeout  # start the keep-alive timer
                self._next_keepalive_close_time = close_time
                if self._keepalive_handle is None:
                    self._keepalive_handle = loop.call_at(close_time, self._process_keepalive)
            else:
                break
        if not self._force_close:  # remove the handler, close the transport if no handlers left
            self._task_handler = None
            if self.transport is not None:
                self.transport.close()

    async def _serve(self, message: Any, payload: StreamReader) -> bool:
        """One request, answered (aiohttp's loop body); False: the connection ends here."""
        loop = self._loop
        start = loop.time() if self._logging_enabled else None
        writer = StreamWriter(self, loop)
        request_handler: RequestHandlerFn | None
        if isinstance(message, _ErrInfo):
            request_handler = self._make_error_handler(message)
            message = ERROR  # make request_factory work
        else:
            request_handler = self._request_handler
        assert self._request_factory is not None and request_handler is not None
        # Don't hold a reference to the current task: on a traceback it would keep it alive.
        request = self._request_factory(message, payload, self, writer, self._task_handler or asyncio.current_task(loop))  # type: ignore[arg-type]
        resp = None
        try:
            try:
                resp, reset = await self._handle_request(request, start, request_handler)
            except ConnectionError:
                self.log_debug("Ignored premature client disconnection")
                return False
            if reset:
                self.log_debug("Ignored premature client disconnection 2")
                return False
            self._keepalive = bool(resp.keep_alive)  # notify the server about keep-alive
            if not payload.is_eof():
                await self._linger(payload)
            payload.set_exception(_PAYLOAD_ACCESS_ERROR)
        except asyncio.CancelledError:
            self.log_debug("Ignored premature client disconnection")
            self.force_close()
            raise
        except Exception as exc:
            self.log_exception("Unhandled exception", exc_info=exc)
            self.force_close()
        except BaseException:
            self.force_close()
            raise
        finally:
            request._task = None  # type: ignore[assignment]  # break the reference cycle on an exception
            if self.transport is None and resp is not None:
                self.log_debug("Ignored premature client disconnection.")
        return True

    async def _linger(self, payload: StreamReader) -> None:
        """The handler left part of the body unread: read and drop it for at most
        lingering_time, then close the connection if it is still not all in (aiohttp's)."""
        loop = self._loop
        lingering_time = self._lingering_time
        if not self._force_close and lingering_time:
            self.log_debug("Start lingering close timer for %s sec.", lingering_time)
            now = loop.time()
            end_t = now + lingering_time
            try:
                while not payload.is_eof() and now < end_t:
                    async with ceil_timeout(end_t - now):
                        await payload.readany()  # read and ignore
                    now = loop.time()
            except (asyncio.CancelledError, asyncio.TimeoutError):
                if (task := asyncio.current_task()) and task.cancelling():
                    raise
        if not payload.is_eof() and not self._force_close:  # the payload is still incomplete
            self.log_debug("Uncompleted request.")
            self.close()


class _Server(web.Server):
    """web.Server whose connections are `_Connection`s and whose shutdown reads bodies first."""

    def __call__(self) -> web.RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)

    def pre_shutdown(self) -> None:
        """aiohttp closes every connection here, which drops the bytes of a body still arriving;
        close only the others and leave those to `shutdown`."""
        for connection in list(self._connections):
            if not isinstance(connection, _Connection):
                connection.close()
            elif not connection.body_pending():
                connection.stop_after_answer()

    async def shutdown(self, timeout: float | None = None) -> None:
        connections = [c for c in self._connections if isinstance(c, _Connection)]
        await asyncio.gather(*(c.finish_body(BODY_WAIT_S) for c in connections))
        await super().shutdown(timeout)


class TallyRunner(web.AppRunner):
    """web.AppRunner serving through `_Server`, whose request handler is `observer`'s around the
    app's routes (net/observe.py: the gate, the error envelope, metrics and the request log, with
    no aiohttp middleware layer; net/dispatch.py: fixed routes without the router walk). aiohttp has no public hook for the protocol class, so this
    rebuilds the Server the app made with the same arguments; the asserts fail loudly if a
    future aiohttp makes that Server something else."""

    def __init__(self, app: web.Application, *, observer: Observer, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._observer = observer

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        assert type(server) is web.Server, type(server)
        # CONTRACT §7.12 + §4: a client that hangs up never cancels a write half-way.
        assert not server.handler_cancellation
        assert not self.app.middlewares, "the observer is the one layer around the app"
        assert not self.app.on_response_prepare, "net/answer.py JsonAnswer does not send it"
        return _Server(
            self._observer.request_handler(Dispatch(self.app).handler_of, self.app.router),
            request_factory=server.request_factory,
            handler_cancellation=False,
            loop=server._loop,
            **server._kwargs,
        )


async def listen(app: web.Application, observer: Observer, host: str, port: int, *, reuse_port: bool = False) -> TallyRunner:
    """Serve `app`, with `observer` around it, on host:port (SO_REUSEPORT for the fronts of
    `--workers N`); returns the runner, whose cleanup() stops it. Raises OSError (port in use)."""
    runner = TallyRunner(app, observer=observer, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG, reuse_port=reuse_port or None).start()
    return runner
