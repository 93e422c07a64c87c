"""Embedded MQTT brokers (amqtt) for the simulated cloud and for each printer's LAN side.

All brokers of one simulator share one asyncio loop in one background thread
(:class:`BrokerRuntime`). Each :class:`EmbeddedBroker` has two listeners, both
bound to ``127.0.0.1`` only:

* ``default``: plain TCP on a free port, for the simulator's printer host
  (:mod:`bambulab.sim.mqtt_host`) and nobody else: only its internal
  credential is accepted there. amqtt requires a listener called ``default``
  and copies its fields into every other listener, so the plain one goes
  there and TLS goes into the second;
* ``tls``: the port clients use, TLS with a certificate from the simulator
  CA (:mod:`bambulab.sim.certs`).

Who may connect and what they may do is decided by a policy object
(:class:`CloudPolicy`, :class:`LanPolicy`) that amqtt reaches through two
plugins (:class:`SimAuthPlugin`, :class:`SimTopicPlugin`).

amqtt 0.12.1 needs a few corrections, measured in this project (DESIGN.md,
"Known pitfalls"); :class:`SimBroker` carries them:

* the stock ``_topic_filtering`` schedules a task per plugin per check and
  awaits them all; under load routing falls behind and messages are lost
  when a publisher disconnects. The override awaits the plugins directly;
* a refused CONNECT is processed as a session first: a refused client that
  reuses a live client id wipes (or takes over) that client's session, and
  refused sessions are never removed. The override authenticates before the
  broker's session table is touched and answers "not authorized" at once;
* the stock TLS context loads the system CA store to verify optional client
  certificates (tens of milliseconds per broker and nothing we use): the
  override makes a plain server context;
* the port actually bound for ``:0`` is only reachable through the private
  ``_servers`` table.

One correction is about time, not amqtt: a simulated printer on loopback
answers a request in about a millisecond, a real one behind the cloud in
tens or hundreds. A cloud client that sends its first request before its
subscription (``pushall`` queued before the CONNACK, or a PUBLISH whose
SUBSCRIBE the client's Nagle algorithm holds back for the broker's delayed
ACK, 40 ms on Linux) gets the real printer's answer, but the simulated answer
arrived before the subscription and went nowhere: a third-party client waited
forever for its first report. So the cloud broker holds the requests of a
freshly connected client that has not subscribed yet until it does, for at
most :data:`FIRST_REQUEST_GRACE` seconds (:meth:`SimBroker._broadcast_message`).
The LAN brokers do the same: a printer's own firmware takes tens of
milliseconds too, and a LAN library that sends ``get_version`` from another
thread as its ``on_connect`` subscribes lost the reply one run in five.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.utils import gen_client_id

from ..protocol.mqtt import report_topic, request_topic, serial_of
from ..safetext import visible
from .certs import CertFiles
from .tokens import TokenError

if TYPE_CHECKING:
    from .world import World

log = logging.getLogger("bambulab.sim.mqtt")

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
LAN_USER = "bblp"
# How long a broker holds the requests of a new client that has not subscribed
# yet (see the module docstring): a second, because on a loaded machine a
# library's SUBSCRIBE from its network thread was seen to come after 0.25 s.
FIRST_REQUEST_GRACE = 1.0
_CLOUD_USER = re.compile(r"u_(\d{1,19})")


@dataclass(frozen=True, slots=True)
class Credential:
    """A username and password; the password never appears in ``repr``."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credential(username={self.username!r}, password=***)"

    def matches(self, username: str | None, password: str | None) -> bool:
        """Constant-time comparison of both parts."""
        return (
            username is not None
            and password is not None
            and hmac.compare_digest(username.encode(), self.username.encode())
            and hmac.compare_digest(password.encode(), self.password.encode())
        )


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest)."""
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter == topic
    parts = topic.split("/")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if level == "#":
            return index == len(levels) - 1
        if index >= len(parts) or level not in ("+", parts[index]):
            return False
    return len(levels) == len(parts)


class Policy(Protocol):
    """Who may connect to a broker and what they may do there."""

    def authenticate(self, username: str | None, password: str | None, tls: bool) -> bool:
        """True to accept the CONNECT; ``tls`` says which listener it came in on."""
        ...

    def allowed(self, username: str | None, topic: str, action: str) -> bool:
        """``action`` is ``subscribe`` (topic is a filter), ``publish`` or ``receive``."""
        ...


class CloudPolicy:
    """The cloud broker's rules (PROTOCOL.md §2.1).

    ``u_<uid>`` with a valid token of that uid, as the real broker wants: a
    printer's access code opens only its LAN broker, so code written against
    the simulator works against the cloud. ``lenient`` also takes the LAN
    access code of any printer the uid owns (the seed's documented form,
    ``BambuMQTT(user_id, serial, access_code)``), for whoever wants that. A user may
    subscribe to, and receive, ``device/<serial>/report`` and publish to
    ``device/<serial>/request`` of the printers it owns right now (binding
    changes apply at once); wildcards are refused. The printer host's
    internal credential is accepted, on the plain listener only, and may do
    anything.
    """

    def __init__(self, world: World, internal: Credential, *, lenient: bool = False) -> None:
        self._world = world
        self._internal = internal
        self.lenient = lenient

    def _uid(self, username: str | None) -> int | None:
        match = _CLOUD_USER.fullmatch(username or "")
        if match is None:
            return None
        uid = int(match.group(1))
        return uid if uid in self._world.accounts else None

    def _owned(self, uid: int) -> list[str]:
        # The HTTP side may bind or unbind on its own thread meanwhile; a
        # snapshot of the values is enough for a yes/no answer.
        devices = list(self._world.devices.values())
        return [device.dev_id for device in devices if device.owner == uid]

    def authenticate(self, username: str | None, password: str | None, tls: bool) -> bool:
        if not tls:
            return self._internal.matches(username, password)
        uid = self._uid(username)
        if uid is None or not password:
            return False
        try:
            if self._world.tokens.verify(password).uid == uid:
                return True
        except TokenError:
            pass
        if not self.lenient:
            return False
        for serial in self._owned(uid):
            code = self._world.devices[serial].access_code
            if hmac.compare_digest(password.encode(), code.encode()):
                return True
        return False

    def allowed(self, username: str | None, topic: str, action: str) -> bool:
        if username == self._internal.username:
            return True
        uid = self._uid(username)
        if uid is None or "+" in topic or "#" in topic:
            return False
        serial = serial_of(topic)
        if serial is None:
            return False
        wanted = request_topic(serial) if action == "publish" else report_topic(serial)
        if topic != wanted:
            return False
        device = self._world.devices.get(serial)
        return device is not None and device.owner == uid


class LanPolicy:
    """A printer's own broker: ``bblp`` + its access code, over TLS; its two topics only."""

    def __init__(self, serial: str, access_code: Callable[[], str], internal: Credential) -> None:
        self._serial = serial
        self._access_code = access_code
        self._internal = internal
        self._report = report_topic(serial)
        self._request = request_topic(serial)

    def authenticate(self, username: str | None, password: str | None, tls: bool) -> bool:
        if not tls:
            return self._internal.matches(username, password)
        return Credential(LAN_USER, self._access_code()).matches(username, password)

    def allowed(self, username: str | None, topic: str, action: str) -> bool:
        if username == self._internal.username:
            return True
        if action == "publish":
            return topic == self._request
        if action == "subscribe":
            # Any filter that covers the report topic (``device/+/report``
            # works on a real printer too); the request topic is not echoed.
            return topic_matches(topic, self._report)
        return topic == self._report


# --- amqtt plugins ---------------------------------------------------------------------------


class SimAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Hands CONNECT credentials to the broker's :class:`Policy`."""

    @dataclass
    class Config:
        """amqtt fills this from the plugin's config mapping (strict snake_case keys)."""

        policy: Any = None

    async def authenticate(self, *, session: Any) -> bool | None:
        policy: Policy | None = self.config.policy
        if policy is None:
            return False
        tls = getattr(session, "ssl_object", None) is not None
        return policy.authenticate(session.username, session.password, tls)


class SimTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """Hands topic checks to the broker's :class:`Policy`."""

    @dataclass
    class Config:
        """See :class:`SimAuthPlugin.Config`."""

        policy: Any = None

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Any = None
    ) -> bool | None:
        policy: Policy | None = self.config.policy
        if policy is None or session is None or topic is None:
            return False
        return policy.allowed(session.username, topic, str(action))


class SimBroker(Broker):  # type: ignore[misc]
    """amqtt's broker with the corrections listed in the module docstring.

    The overridden methods are private amqtt API, pinned by ``amqtt==0.12.1``
    in the ``sim`` extra; the tests exercise every one of them.

    ``request_grace`` (seconds, 0 = off; every simulated broker sets it): how
    long the requests of a new TLS client that has not subscribed yet are held back.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request_grace = 0.0
        # client id -> (connected at, subscribed, its requests held, in order); loop-owned.
        self._held_requests: dict[str, tuple[float, asyncio.Event, list[tuple[Any, ...]]]] = {}
        self._releases: set[asyncio.Future[None]] = set()

    def _held(self) -> dict[str, tuple[float, asyncio.Event, list[tuple[Any, ...]]]]:
        return self._held_requests

    async def add_subscription(self, subscription: tuple[str, int], session: Any) -> int:
        code = int(await super().add_subscription(subscription, session))
        held = self._held()
        entry = held.get(session.client_id)
        if entry is not None:
            entry[1].set()
            if not entry[2]:
                del held[session.client_id]
        return code

    def _hold_new_client(self, session: Any) -> None:
        held = self._held()
        now = asyncio.get_running_loop().time()
        for client_id in [
            k for k, v in held.items() if not v[2] and v[0] + self.request_grace < now
        ]:
            del held[client_id]  # clients that neither subscribed nor published in time
        held[session.client_id or ""] = (now, asyncio.Event(), [])

    async def _broadcast_message(
        self, session: Any, topic: Any, data: Any, force_qos: int | None = None
    ) -> None:
        held = self._held()
        entry = held.get(session.client_id) if session is not None else None
        if entry is None:
            await super()._broadcast_message(session, topic, data, force_qos)
            return
        connected_at, subscribed, queue = entry
        late = asyncio.get_running_loop().time() >= connected_at + self.request_grace
        if not queue and (subscribed.is_set() or late):
            del held[session.client_id]
            await super()._broadcast_message(session, topic, data, force_qos)
            return
        # Never wait here: this runs in the client's own message loop, which must go
        # on to read the SUBSCRIBE we are waiting for. Keep the order of the requests.
        queue.append((session, topic, data, force_qos))
        if len(queue) == 1:
            remaining = max(
                0.0, connected_at + self.request_grace - asyncio.get_running_loop().time()
            )
            task = asyncio.ensure_future(self._release(session.client_id, remaining))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def _release(self, client_id: str, remaining: float) -> None:
        entry = self._held().get(client_id)
        if entry is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(entry[1].wait(), remaining)
        if not entry[1].is_set():
            log.info(
                "client %s did not subscribe within %.2f s: its %d held request(s) go now",
                visible(client_id),
                self.request_grace,
                len(entry[2]),
            )
        self._held().pop(client_id, None)
        for session, topic, data, force_qos in entry[2]:
            await super()._broadcast_message(session, topic, data, force_qos)

    async def _topic_filtering(self, session: Any, topic: str, action: Action) -> bool:
        # Direct awaits: no task per check, so routing keeps up with publishers.
        for plugin in self.plugins_manager._topic_plugins:
            if (
                await plugin.topic_filtering(session=session, topic=topic, action=action)
                is not True
            ):
                return False
        return True

    @staticmethod
    def _create_ssl_context(listener: Any) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(listener["certfile"]), str(listener["keyfile"]))
        return context

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Any]:
        # Same as amqtt 0.12.1, except that credentials are checked before the
        # session table is touched (see the module docstring).
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except AMQTTError as exc:
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            await writer.close()
            raise MQTTError(exc) from exc
        except NoDataError as exc:
            raise AMQTTError(exc) from exc

        if not await self._authenticate(session, None):
            # The client may hang up as soon as it reads the refusal.
            with contextlib.suppress(OSError):
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
                await writer.close()
            raise MQTTError("connection refused: not authorized")

        if self.request_grace and getattr(session, "ssl_object", None) is not None:
            self._hold_new_client(session)
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            existing.will_flag = session.will_flag
            existing.will_message = session.will_message
            existing.will_topic = session.will_topic
            existing.will_qos = session.will_qos
            existing.keep_alive = session.keep_alive
            existing.username = session.username
            existing.password = session.password
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        return handler, session

    def listener_port(self, name: str) -> int:
        """The port a listener actually bound (the config may say ``:0``)."""
        server = self._servers[name]
        sockets = server.instance.sockets
        return int(sockets[0].getsockname()[1])

    def abort_connections(self) -> int:
        """Cut every client's TCP connection without a goodbye; returns how many."""
        count = 0
        for _session, handler in list(self._sessions.values()):
            writer = getattr(handler, "writer", None)
            stream = getattr(writer, "_writer", None)
            transport = getattr(stream, "transport", None)
            if transport is not None and not transport.is_closing():
                transport.abort()
                count += 1
        return count


# --- one broker ------------------------------------------------------------------------------


class EmbeddedBroker:
    """One amqtt broker: a TLS listener for clients, a plain one for the printer host.

    The ports are chosen on the first start and kept by every restart, so a
    client can reconnect to the address it already has. Methods are
    coroutines for the :class:`BrokerRuntime` loop.
    """

    def __init__(self, name: str, policy: Policy, cert: CertFiles, port: int = 0) -> None:
        self.name = name
        self.policy = policy
        self.cert = cert
        self.port = port
        self.internal_port = 0
        self._broker: SimBroker | None = None
        self._held: list[socket.socket] = []

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._broker is not None

    def _config(self) -> dict[str, Any]:
        policy = {"policy": self.policy}
        return {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{LOOPBACK}:{self.internal_port}"},
                "tls": {
                    "type": "tcp",
                    "bind": f"{LOOPBACK}:{self.port}",
                    "ssl": True,
                    "certfile": str(self.cert.cert_file),
                    "keyfile": str(self.cert.key_file),
                },
            },
            # Replaces amqtt's defaults (which would allow anonymous clients and
            # log every packet, passwords included, at debug level).
            "plugins": {
                f"{__name__}.SimAuthPlugin": dict(policy),
                f"{__name__}.SimTopicPlugin": dict(policy),
            },
        }

    async def start(self) -> None:
        """Listen (on the ports of the previous run, if any)."""
        if self._broker is not None:
            return
        broker = SimBroker(self._config(), loop=asyncio.get_running_loop())
        broker.request_grace = FIRST_REQUEST_GRACE
        await broker.start()
        self._broker = broker
        self.port = broker.listener_port("tls")
        self.internal_port = broker.listener_port("default")
        release_ports(self._held)

    async def stop(self, *, keep_ports: bool = False) -> None:
        """Close both listeners and every connection.

        ``keep_ports``: a broker that will start again holds its ports while it
        is down (:func:`hold_ports`), so no other program takes them meanwhile.
        """
        broker, self._broker = self._broker, None
        if broker is not None:
            broker.abort_connections()
            await broker.shutdown()
        if keep_ports:
            self._held += await hold_ports_soon(p for p in (self.port, self.internal_port) if p)
        else:
            release_ports(self._held)

    async def restart(self) -> None:
        """Stop, then listen again on the same ports (clients see a disconnect)."""
        await self.stop(keep_ports=True)
        await self.start()

    async def drop_connections(self) -> int:
        """Cut every connection; the broker keeps running."""
        if self._broker is None:
            return 0
        return self._broker.abort_connections()


def hold_ports(ports: Iterable[int]) -> tuple[list[socket.socket], list[int]]:
    """Bind loopback ``ports`` without listening: a server's ports while it is down.

    A client connecting meanwhile is refused, as by a stopped server, and no
    other program is given the port (a test process starting its own server
    on port 0 once took a restarting broker's port, and the client that came
    back met a stranger's certificate). ``SO_REUSEADDR`` on both sides lets
    the server bind again before the holder lets go, so there is no window.
    Returns the holders and the ports still taken (a listener not closed yet).
    """
    held, taken = [], []
    for port in ports:
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind((LOOPBACK, port))
        except OSError:
            holder.close()
            taken.append(port)
            continue
        held.append(holder)
    return held, taken


async def hold_ports_soon(ports: Iterable[int], within: float = 2.0) -> list[socket.socket]:
    """:func:`hold_ports`, waiting up to ``within`` seconds for listeners still closing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    held, taken = hold_ports(ports)
    while taken and loop.time() < deadline:
        await asyncio.sleep(0.01)
        more, taken = hold_ports(taken)
        held += more
    return held


def release_ports(held: list[socket.socket]) -> None:
    """Let go of ports kept by :func:`hold_ports` (emptying ``held``)."""
    while held:
        held.pop().close()


# --- the loop thread -------------------------------------------------------------------------


class BrokerRuntime:
    """An asyncio loop in a daemon thread that runs every embedded broker."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the loop thread."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                close_loop(loop)

        self._loop = loop
        self._thread = threading.Thread(target=run, name="bambu-sim-brokers", daemon=True)
        self._thread.start()
        ready.wait()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coroutine`` on the loop and wait for its result."""
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the broker runtime is not running")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout)

    def stop(self, brokers: list[EmbeddedBroker] | None = None) -> None:
        """Stop ``brokers``, then the loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if brokers:

            async def stop_all() -> None:
                await asyncio.gather(*(b.stop() for b in brokers), return_exceptions=True)

            try:
                self.run(stop_all(), timeout=10.0)
            except Exception as exc:  # stopping must go on; the loop goes away anyway
                log.warning("stopping the brokers failed: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        self._loop = None
        self._thread = None


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what amqtt left running, let it unwind (bounded), then close the loop.

    Closing with tasks still pending leaves them to the garbage collector,
    which reports "Task was destroyed but it is pending" whenever it runs:
    in a test suite, during some unrelated later test.
    """
    try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=2.0))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except Exception as exc:  # closing must happen whatever amqtt does
        log.debug("broker loop shutdown: %s", exc)
    finally:
        loop.close()
