"""One agent (one username) on one connection to message-broker, over asyncio.

The client answers the broker's protocol for its caller: it logs in, sends heartbeats at the
interval the broker granted, reconnects with backoff when the connection drops, logs in again
and resends every send the broker had not accepted yet with the same message_uuid (the broker's
dedupe makes that safe), and does not hand out again a message it already handed out (a
redelivery after a drop, or a resend after a broker crash): such a copy is acknowledged and
dropped. Every request has a deadline (request_timeout). Use it from one event loop.
"""

import asyncio
import collections
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import BrokerError, ConnectionLost

log = logging.getLogger("message_agent")

_MAX_LINE = 16 * 1024 * 1024  # longer than any frame the broker sends (max_frame_bytes is 1 MiB)
_REMEMBERED = 100_000  # messages handed out, and receipts nobody waited for yet
_PRESENCE_KEPT = 10_000


@dataclass
class SendResult:
    """message_accepted: status is relayed or dead_lettered (for one recipient); recipients
    pairs (receiver, status) for all."""
    message_uuid: str
    status: Optional[str]
    recipients: list
    duplicate: bool


@dataclass
class Message:
    message_uuid: str
    sender: str
    receiver: str
    text: Optional[str]
    payload: Any
    channel: str
    group_name: Optional[str]
    sent_at: str
    redelivery: bool
    attempt: int
    dead_letter_reason: Optional[str]
    has_payload: bool = False
    content: dict = field(default_factory=dict, repr=False)  # receive_message's content as sent


@dataclass
class Receipt:
    """The first outcome of a message this client sent, for one recipient."""
    receiver: str
    delivered_at: Optional[str] = None
    dead_letter_reason: Optional[str] = None

    @property
    def delivered(self) -> bool:
        return self.dead_letter_reason is None


@dataclass
class PresenceChange:
    joined: list
    left: list
    user_list: list


class Client:
    """A session of one agent. `async with Client(...) as c:` connects and logs in, and logs out
    at the end.

    host, port: the broker's TCP (or TLS) listener. password: for a broker with a password file.
    ssl: an ssl.SSLContext for its TLS port (the certificate must name host). reconnect: after a
    drop (never after auth_failed or session_taken_over, which end the client). request_timeout:
    seconds any request waits for its answer. heartbeat_interval_ms: ask for a longer interval.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 10000, username: Optional[str] = None,
                 password: Optional[str] = None, ssl=None, *, reconnect: bool = True,
                 request_timeout: float = 30.0, backoff_min: float = 0.1, backoff_max: float = 5.0,
                 heartbeat_interval_ms: Optional[int] = None):
        if not username:
            raise ValueError("a username is needed")
        self.host, self.port, self.username, self.password, self.ssl = host, port, username, password, ssl
        self.reconnect, self.request_timeout = reconnect, request_timeout
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.login: dict = {}  # acknowledge_log_in's content
        self.reconnects = 0
        self._reader = self._writer = None
        self._connected = False
        self._closed = False
        self._ended: Optional[Exception] = None  # why the broker ended the session for good
        self._requests: dict = {}  # request_id -> future
        self._unaccepted: "collections.OrderedDict[str, bytes]" = collections.OrderedDict()
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._presence: collections.deque = collections.deque(maxlen=_PRESENCE_KEPT)
        self._presence_event = asyncio.Event()
        self._handed: set = set()
        self._handed_order: collections.deque = collections.deque()
        self._receipts: "collections.OrderedDict[str, Receipt]" = collections.OrderedDict()
        self._receipt_waiters: dict = {}
        self._supervisor: Optional[asyncio.Task] = None
        self._heartbeat: Optional[asyncio.Task] = None

    # --- connecting --------------------------------------------------------------------------

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def connect(self) -> dict:
        """Connects and logs in; acknowledge_log_in's content. Raises BrokerError (e.g.
        username_taken, auth_failed), ConnectionLost, or asyncio.TimeoutError."""
        await self._open_session()
        self._supervisor = asyncio.create_task(self._supervise())
        return self.login

    async def close(self) -> None:
        """log_out, then close. Every waiting call ends with ConnectionLost."""
        if self._closed:
            return
        if self._connected:
            try:
                await asyncio.wait_for(self._request("log_out", {}), min(self.request_timeout, 5.0))
            except (BrokerError, ConnectionError, asyncio.TimeoutError):
                pass  # closing anyway
        writer = self._writer
        self._shut(ConnectionLost("the client was closed"))
        if writer is not None:
            await _close(writer)

    async def _open_session(self) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.ssl, limit=_MAX_LINE,
                                        server_hostname=self.host if self.ssl else None),
                self.request_timeout)
        except OSError as e:  # ssl.SSLError is one
            raise ConnectionLost(f"cannot connect to the broker at {self.host}:{self.port} ({e}): is it running?") from e
        request_id = str(uuid.uuid4())
        content = {"sender_username": self.username, "request_id": request_id}
        if self.password is not None:
            content["password"] = self.password
        if self.heartbeat_interval_ms:
            content["heartbeat_interval_ms"] = self.heartbeat_interval_ms
        writer.write(_frame("log_in", content))
        try:
            answer = await asyncio.wait_for(self._read_until_answer(reader, request_id), self.request_timeout)
        except BaseException:
            await _close(writer)
            raise
        self._reader, self._writer, self._connected = reader, writer, True
        self.login = answer
        # What the broker had not accepted goes again, in order, with the same uuids.
        for frame in self._unaccepted.values():
            writer.write(frame)
        interval = answer.get("heartbeat_interval_ms") or 10_000
        self._heartbeat = asyncio.create_task(self._beat(writer, interval * 0.75 / 1000))

    async def _read_until_answer(self, reader, request_id):
        while True:
            frame = await self._next_frame(reader)
            kind, c = frame
            if c.get("request_id") == request_id:
                if kind == "acknowledge_log_in":
                    return c
                if kind == "error":
                    raise BrokerError(str(c.get("error_code")), str(c.get("error_text")))
            self._dispatch(kind, c)

    async def _next_frame(self, reader):
        """The next frame as (kind, content); lines that are not an envelope are skipped."""
        while True:
            try:
                line = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError) as e:
                raise ConnectionLost("the broker sent a line longer than 16 MiB") from e
            if not line:
                raise ConnectionLost("the broker closed the connection")
            if not line.strip():
                continue
            try:
                frame = json.loads(line)
            except ValueError:
                log.warning("the broker sent a line that is not JSON")
                continue
            if not isinstance(frame, dict) or not isinstance(frame.get("message_id"), str):
                log.warning("the broker sent a line that is not a frame")
                continue
            content = frame.get("message_content")
            return frame["message_id"], content if isinstance(content, dict) else {}

    async def _beat(self, writer, every: float):
        heartbeat = _frame("heartbeat", {})
        while True:
            await asyncio.sleep(every)
            writer.write(heartbeat)

    async def _supervise(self):
        backoff = self.backoff_min
        while not self._closed:
            try:
                while True:
                    kind, c = await self._next_frame(self._reader)
                    try:
                        self._dispatch(kind, c)
                    except (TypeError, ValueError, AttributeError):
                        log.warning("the broker sent a %s frame the client could not read", kind)
                    if self._ended:
                        break
            except (ConnectionError, OSError):
                pass
            self._drop()
            if self._closed:
                return
            if self._ended or not self.reconnect:
                self._shut(self._ended or ConnectionLost("the connection to the broker dropped"))
                return
            while not self._closed:
                log.info("connection lost; reconnecting to %s:%s in %.1f s", self.host, self.port, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                try:
                    await self._open_session()
                except BrokerError as e:
                    if e.error_code in ("auth_failed", "session_taken_over"):
                        self._shut(e)
                        return
                    continue  # username_taken: the broker may not have seen the old connection go
                except (ConnectionError, OSError, asyncio.TimeoutError):
                    continue
                self.reconnects += 1
                backoff = self.backoff_min
                break

    def _drop(self):
        """The connection is gone: requests other than sends can not be answered by a new one."""
        self._connected = False
        if self._heartbeat:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self._writer:
            self._writer.close()
        lost = ConnectionLost("the connection to the broker dropped")
        for rid, fut in list(self._requests.items()):
            if rid not in self._unaccepted and not fut.done():
                fut.set_exception(lost)
                del self._requests[rid]

    def _shut(self, why: Exception):
        self._closed = True
        self._drop()
        if self._supervisor and self._supervisor is not asyncio.current_task():
            self._supervisor.cancel()
        for fut in self._requests.values():
            if not fut.done():
                fut.set_exception(why)
        self._requests.clear()
        self._unaccepted.clear()
        for waiters in self._receipt_waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(why)
        self._receipt_waiters.clear()
        self._inbox.put_nowait(why)
        self._presence_event.set()

    # --- what the broker sends -----------------------------------------------------------------

    def _dispatch(self, kind: str, c: dict):
        if kind == "receive_message":
            return self._received(c)
        rid = c.get("request_id")
        if kind == "message_accepted":
            self._unaccepted.pop(rid, None)
        if kind in ("message_delivered", "message_dead_lettered"):
            return self._report(str(c.get("message_uuid")), Receipt(
                str(c.get("receiver_username")), c.get("delivered_at"),
                c.get("reason") if kind == "message_dead_lettered" else None))
        if kind == "update_user_set":
            self._presence.append(PresenceChange(list(c.get("joined") or []), list(c.get("left") or []),
                                                 list(c.get("user_list") or [])))
            self._presence_event.set()
            return
        if kind == "error":
            code, text = str(c.get("error_code")), str(c.get("error_text"))
            if code == "session_taken_over":
                self._ended = BrokerError(code, text)
                return
            fut = self._requests.pop(rid, None) if isinstance(rid, str) else None
            if fut is None:
                log.warning("the broker says %s: %s", code, text)
                return
            self._unaccepted.pop(rid, None)
            if not fut.done():
                fut.set_exception(BrokerError(code, text))
            return
        fut = self._requests.pop(rid, None) if isinstance(rid, str) else None
        if fut is not None and not fut.done():
            fut.set_result(c)

    def _received(self, c: dict):
        m = Message(
            message_uuid=str(c.get("message_uuid", "")), sender=str(c.get("sender_username", "")),
            receiver=str(c.get("receiver_username", "")), text=c.get("message_text"),
            payload=c.get("payload"), channel=str(c.get("channel", "direct")), group_name=c.get("group_name"),
            sent_at=str(c.get("sent_at", "")), redelivery=bool(c.get("redelivery", False)),
            attempt=int(c.get("attempt", 1)) if isinstance(c.get("attempt", 1), int) else 1,
            dead_letter_reason=c.get("dead_letter_reason"), has_payload="payload" in c, content=c)
        key = (m.sender, m.message_uuid)
        if key in self._handed:
            if self._connected:  # handled already: acknowledged, not handed out again
                self._writer.write(self._ack_frame(m))
            return
        self._handed.add(key)
        self._handed_order.append(key)
        if len(self._handed_order) > _REMEMBERED:
            self._handed.discard(self._handed_order.popleft())
        self._inbox.put_nowait(m)

    def _report(self, message_uuid: str, r: Receipt):
        waiters = self._receipt_waiters.pop(message_uuid, None)
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(r)
            return
        self._receipts.setdefault(message_uuid, r)
        while len(self._receipts) > _REMEMBERED:
            self._receipts.popitem(last=False)

    # --- requests --------------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        """Writes data if connected, waiting while the socket's buffer is full. A connection that
        drops meanwhile is the reading task's to notice (a send is resent after the reconnect)."""
        if not self._connected or self._writer is None:
            return
        writer = self._writer
        writer.write(data)
        try:
            await writer.drain()
        except (ConnectionError, OSError):
            pass

    async def _request(self, kind: str, content: dict, send: bool = False):
        if self._closed:
            raise self._ended or ConnectionLost("the client is closed")
        rid = str(uuid.uuid4())
        content["request_id"] = rid
        data = _frame(kind, content)
        fut = asyncio.get_running_loop().create_future()
        if send:
            self._unaccepted[rid] = data  # resent after a reconnect until accepted
        elif not self._connected:
            raise ConnectionLost("not connected to the broker (reconnecting)")
        self._requests[rid] = fut
        await self._write(data)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.request_timeout)
        except asyncio.TimeoutError:
            self._requests.pop(rid, None)
            self._unaccepted.pop(rid, None)  # a send that timed out is not resent
            raise

    async def _send(self, kind: str, content: dict, text, payload, ttl_ms, message_uuid) -> SendResult:
        if text is None and payload is None:
            raise ValueError("give text, or payload, or both")
        if text is not None:
            if not isinstance(text, str):
                raise TypeError("text must be a str")
            content["message_text"] = text
        if payload is not None:
            content["payload"] = payload
        if ttl_ms is not None:
            content["ttl_ms"] = int(ttl_ms)
        content["message_uuid"] = message_uuid or str(uuid.uuid4())
        c = await self._request(kind, content, send=True)
        recipients = [(str(r.get("receiver_username")), str(r.get("status"))) for r in c.get("recipients") or []]
        status = c.get("status")
        if status is None and len(recipients) == 1:
            status = recipients[0][1]
        if not recipients and "receiver_username" in content and status:
            recipients = [(content["receiver_username"], status)]
        return SendResult(str(c.get("message_uuid", content["message_uuid"])), status, recipients,
                          bool(c.get("duplicate", False)))

    async def send(self, to: str, text: Optional[str] = None, payload: Any = None,
                   ttl_ms: Optional[int] = None, message_uuid: Optional[str] = None) -> SendResult:
        """A direct message; completes with message_accepted (BrokerError on an error reply)."""
        return await self._send("send_message", {"receiver_username": to}, text, payload, ttl_ms, message_uuid)

    async def multicast(self, to: list, text: Optional[str] = None, payload: Any = None,
                        ttl_ms: Optional[int] = None, message_uuid: Optional[str] = None) -> SendResult:
        return await self._send("multicast_message", {"receiver_usernames": list(to)}, text, payload, ttl_ms,
                                message_uuid)

    async def broadcast(self, text: Optional[str] = None, payload: Any = None,
                        ttl_ms: Optional[int] = None, message_uuid: Optional[str] = None) -> SendResult:
        return await self._send("broadcast_message", {}, text, payload, ttl_ms, message_uuid)

    async def group_send(self, group: str, text: Optional[str] = None, payload: Any = None,
                         ttl_ms: Optional[int] = None, message_uuid: Optional[str] = None) -> SendResult:
        return await self._send("group_message", {"group_name": group}, text, payload, ttl_ms, message_uuid)

    async def receive(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message (acknowledge it with ack), or None after timeout seconds. Raises
        ConnectionLost once the client is closed."""
        try:
            item = await asyncio.wait_for(self._inbox.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if isinstance(item, Exception):
            self._inbox.put_nowait(item)  # for the next one waiting
            raise item
        return item

    async def ack(self, m: Message) -> None:
        """Acknowledges a received message: its sender is told it was delivered. (If the
        connection is down, the broker redelivers it after the reconnect, and the client
        acknowledges that copy itself.)"""
        await self._write(self._ack_frame(m))

    def _ack_frame(self, m: Message) -> bytes:
        return _frame("acknowledge_message", {"message_uuid": m.message_uuid, "sender_username": m.sender})

    async def messages(self):
        """Every message as it comes: `async for m in c.messages(): ...`. A message is
        acknowledged when the loop body has finished with it and asks for the next one; one
        whose body raised is not (the broker dead-letters it after its ack timeout and
        redelivers it at the next login)."""
        while True:
            m = await self.receive()
            yield m
            await self.ack(m)

    async def delivered(self, message_uuid: str, timeout: Optional[float] = None) -> Optional[Receipt]:
        """The first outcome of a message this client sent (its recipient's acknowledgement, or
        its move to the Dead Letter Channel after it was relayed), or None after timeout."""
        if message_uuid in self._receipts:
            return self._receipts.pop(message_uuid)
        if self._closed:
            raise self._ended or ConnectionLost("the client is closed")
        fut = asyncio.get_running_loop().create_future()
        self._receipt_waiters.setdefault(message_uuid, []).append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            waiters = self._receipt_waiters.get(message_uuid, [])
            if fut in waiters:
                waiters.remove(fut)
            return None

    async def next_presence(self, timeout: Optional[float] = None) -> Optional[PresenceChange]:
        """The next presence change (joined, left, user_list), or None after timeout."""
        try:
            while not self._presence:
                if self._closed:
                    raise self._ended or ConnectionLost("the client is closed")
                self._presence_event.clear()
                await asyncio.wait_for(self._presence_event.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        return self._presence.popleft()

    async def users(self) -> list:
        return list((await self._request("get_user_list", {})).get("user_list") or [])

    async def create_group(self, name: str, members: list = ()) -> list:
        """Creates the group (the creator is a member); its members."""
        c = await self._request("create_group", {"group_name": name, "group_members": list(members)})
        return list(c.get("group_members") or [])

    async def join_group(self, name: str) -> list:
        return list((await self._request("join_group", {"group_name": name})).get("group_members") or [])

    async def leave_group(self, name: str) -> list:
        return list((await self._request("leave_group", {"group_name": name})).get("group_members") or [])

    async def groups(self) -> list:
        """[(name, members), ...]"""
        c = await self._request("get_group_list", {})
        return [(str(g.get("group_name")), list(g.get("group_members") or [])) for g in c.get("groups") or []]


async def _close(writer) -> None:
    """Closes a connection and waits (a little) until it is closed, TLS included."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (ConnectionError, OSError, asyncio.TimeoutError):
        pass


def _frame(kind: str, content: dict) -> bytes:
    return (json.dumps({"message_id": kind, "message_content": content}, ensure_ascii=False,
                       separators=(",", ":")) + "\n").encode()
