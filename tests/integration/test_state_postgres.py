"""The state store on a real PostgreSQL server (gateway/state/postgres.py).

`TestPostgres` runs the whole contract of tests/unit/test_state_contract.py on a database of its own. The tests
after it are what only a shared database can show: two stores on one database (two replicas), each from its own
thread, for the lease, the inbox row with its dedupe mark, idempotency keys and JWT ids; replicas that start
together; and a database that is lost (cut off, or silent) while the store is in use.
"""

from __future__ import annotations

import asyncio
import copy
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import psycopg
import pytest
import yaml

from gateway.config import parse_config
from gateway.dev.exchange import Exchange, edit_config, init_exchange
from gateway.dev.pki import PkiLayout
from gateway.schemas.registry import SchemaRegistry
from gateway.state import (
    Decision,
    IdempotentRequest,
    StateStore,
    StateUnavailable,
    schema,
)
from tests._util import GatewayProcess, PlatformClient, pull_until, yrdx
from tests.conftest import Broker
from tests.unit.test_state_contract import Database, StateContract, inbox, key_claim, reply, request_row

T = TypeVar("T")
MSG_TYPE = "license.verify.request"  # JS may send it to SH, which takes it by pull inbox
PAYLOAD = SchemaRegistry.load().examples(MSG_TYPE)[0]


class PostgresDatabase(Database):
    backend = "postgresql"

    def __init__(self, dsn: str, timeout_s: float = 2.0) -> None:
        super().__init__()
        self.dsn = dsn
        self.timeout_s = timeout_s

    def _open(self) -> StateStore:
        return StateStore(dsn=self.dsn, timeout_s=self.timeout_s)

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as db:
            cur = db.execute(statement.replace("?", "%s"), params)
            return list(cur.fetchall()) if cur.description else []

    def fail_inserts(self, table: str, row_id: str) -> None:
        self.sql(f"CREATE FUNCTION fail_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                 f"IF NEW.id = '{row_id}' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$")
        self.sql(f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION fail_{table}()")


@pytest.fixture
def db(postgres_db: str) -> Iterator[PostgresDatabase]:
    d = PostgresDatabase(postgres_db)
    yield d
    d.close()


class TestPostgres(StateContract):
    """The contract, on PostgreSQL (the `db` fixture above)."""


# --- two replicas on one database -----------------------------------------------------------------------------


def in_threads(*calls: Callable[[], T]) -> list[T]:
    """Run the calls at once, one thread each (they start together at a barrier); their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, call: Callable[[], T]) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def test_a_lease_being_taken_by_one_replica_is_skipped_by_the_other_without_waiting(db: PostgresDatabase) -> None:
    a = db.open()
    a.deliver_to_inbox([inbox(f"m{i}") for i in range(4)])
    with psycopg.connect(db.dsn) as other:  # a lease of m0 and m1 in flight in another replica
        other.execute("SELECT seq FROM inbox WHERE id IN ('m0', 'm1') FOR UPDATE")
        started = time.monotonic()
        assert [i.id for i in a.lease_inbox("p1", 10)] == ["m2", "m3"]
        assert time.monotonic() - started < 0.5  # SKIP LOCKED: not a lock wait
        other.rollback()
    assert [i.id for i in a.lease_inbox("p1", 10)] == ["m0", "m1"]


def test_two_replicas_leasing_at_once_hand_out_each_message_once(db: PostgresDatabase) -> None:
    a, b = db.open(), db.open()
    a.deliver_to_inbox([inbox(f"m{i:03}") for i in range(400)])

    def drain(store: StateStore) -> list[str]:
        got: list[str] = []
        while batch := store.lease_inbox("p1", 7):
            got.extend(i.id for i in batch)
        return got

    got_a, got_b = in_threads(lambda: drain(a), lambda: drain(b))
    assert not set(got_a) & set(got_b)
    assert sorted(got_a + got_b) == [f"m{i:03}" for i in range(400)]
    assert got_a and got_b  # both took part


def test_an_inbox_delivery_in_flight_is_invisible_to_the_other_replica(db: PostgresDatabase) -> None:
    a, b = db.open(), db.open()
    with psycopg.connect(db.dsn) as locker:
        locker.execute("LOCK TABLE seen IN EXCLUSIVE MODE")  # reads go on; a's mark waits after its inbox row
        delivering = threading.Thread(target=a.deliver_to_inbox, args=([inbox("m1")],))
        delivering.start()
        deadline = time.monotonic() + 5
        while not db.sql("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"):
            assert time.monotonic() < deadline, "the delivery never reached the lock"
            time.sleep(0.02)
        assert b.lease_inbox("p1", 10) == [] and b.inbox_depth() == 0
        assert b.seen(["m1"]) == {}
        locker.commit()
    delivering.join(10)
    assert b.seen(["m1"]) == {"m1": Decision("m1", "delivered", "yrdx.sh.inbox:0:m1")}
    assert [i.id for i in b.lease_inbox("p1", 10)] == ["m1"]


def test_a_delivery_that_times_out_leaves_nothing_and_the_store_goes_on(postgres_db: str) -> None:
    db = PostgresDatabase(postgres_db, timeout_s=0.5)
    try:
        a = db.open()
        with psycopg.connect(db.dsn) as locker:
            locker.execute("LOCK TABLE seen IN EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(StateUnavailable, match="did not answer"):
                a.deliver_to_inbox([inbox("m1")])
            elapsed = time.monotonic() - started
            locker.commit()
        assert 0.4 < elapsed < 1.4  # the server's lock_timeout (0.5 s), before the client's own deadline
        assert a.available  # a timeout the server reported leaves the session usable
        assert a.seen(["m1"]) == {} and a.inbox_depth() == 0
        a.deliver_to_inbox([inbox("m1")])
        assert a.inbox_depth() == 1
    finally:
        db.close()


def test_two_replicas_delivering_the_same_records_queue_each_once(db: PostgresDatabase) -> None:
    """A partition moving between replicas mid-batch: both may decide the same records. Rows are written in id
    order, so the two transactions wait for each other instead of deadlocking."""
    a, b = db.open(), db.open()
    for round_ in range(5):
        items = [inbox(f"r{round_}-{i:03}") for i in range(200)]
        shuffled = random.sample(items, len(items))
        in_threads(lambda items=items: a.deliver_to_inbox(items), lambda s=shuffled: b.deliver_to_inbox(s))
    assert db.sql("SELECT count(*), count(DISTINCT id) FROM inbox") == [(1000, 1000)]
    assert db.sql("SELECT count(*) FROM seen WHERE outcome = 'delivered'") == [(1000,)]


def test_concurrent_retries_on_two_replicas_get_one_message(db: PostgresDatabase) -> None:
    """Two replicas each build a message for the same Idempotency-Key at the same moment: both are told the same
    one, the first remembered, so only that one is published."""
    a, b = db.open(), db.open()
    for k in range(60):
        mine = IdempotentRequest("h", f"a-{k}", b"envelope a", "sig a")
        theirs = IdempotentRequest("h", f"b-{k}", b"envelope b", "sig b")
        got_a, got_b = in_threads(lambda k=k, r=mine: a.remember_idempotent("p1", f"key-{k}", r),
                                  lambda k=k, r=theirs: b.remember_idempotent("p1", f"key-{k}", r))
        assert got_a == got_b and got_a in (mine, theirs)
        assert a.idempotent("p1", f"key-{k}") == got_a


def test_two_replicas_claiming_one_request_with_one_key_publish_one_message(db: PostgresDatabase) -> None:
    """A retry on replica b while replica a claims the same request: each claim takes the key and the correlation
    id in one transaction, so exactly one of the two claims both; the other claimed nothing and sees the winner."""
    a, b = db.open(), db.open()
    for k in range(60):
        c, key = f"c-{k}", f"key-{k}"
        claims = [(store, request_row(c, key=key, message_id=f"{side}-{k}"), key_claim(f"{side}-{k}"))
                  for store, side in ((a, "a"), (b, "b"))]
        got = in_threads(*[lambda s=s, r=r, kc=kc: s.open_request(r, kc) for s, r, kc in claims])
        won = [o for o in got if o.ours]
        assert len(won) == 1 and won[0].request is not None
        winner = won[0].request.message_id
        (lost,) = [o for o in got if not o.ours]
        seen = lost.request.message_id if lost.request is not None else lost.key_holder and lost.key_holder.message_id
        assert seen == winner
        assert a.idempotent("sh-platform", key) == key_claim(winner or "") and a.request_by_id(winner or "") is not None


def test_a_jti_is_used_once_across_replicas(db: PostgresDatabase) -> None:
    a, b = db.open(), db.open()
    exp = time.time() + 300
    jtis = [f"p1:{i}" for i in range(300)]
    used_a, used_b = in_threads(lambda: [a.use_jti(j, exp) for j in jtis], lambda: [b.use_jti(j, exp) for j in jtis])
    assert all(x != y for x, y in zip(used_a, used_b, strict=True))  # exactly one of the two, each time


def test_jti_groups_are_used_once_across_replicas(db: PostgresDatabase) -> None:
    a, b = db.open(), db.open()
    exp = time.time() + 300
    jtis = [f"p1:g{i}" for i in range(300)]

    def in_groups(store: StateStore) -> list[bool]:
        return [used for i in range(0, 300, 30) for used in store.use_jtis([(j, exp) for j in jtis[i:i + 30]])]

    used_a, used_b = in_threads(lambda: in_groups(a), lambda: in_groups(b))
    assert all(x != y for x, y in zip(used_a, used_b, strict=True))


def test_a_reply_and_the_deadline_racing_on_two_replicas_decide_each_request_once(db: PostgresDatabase) -> None:
    """Replica a consumes the replies, replica b's waiting calls time the same requests out, all at once: each
    request ends replied or timed_out, and exactly one of the two calls won it."""
    a, b = db.open(), db.open()
    ids = [f"c{i:03}" for i in range(200)]
    for c in ids:
        a.open_request(request_row(c))

    def decide(store: StateStore, replying: bool) -> list[str]:
        return [c for c in ids if store.settle_request(c, reply(f"r-{c}") if replying else None, time.time())]

    replied, timed_out = in_threads(lambda: decide(a, True), lambda: decide(b, False))
    assert not set(replied) & set(timed_out) and sorted(replied + timed_out) == ids
    rows = b.requests(ids)
    assert {c for c in ids if rows[c].status == "replied"} == set(replied)
    assert all(rows[c].reply is None for c in timed_out)


def test_replicas_starting_together_migrate_once(postgres_db: str) -> None:
    stores = in_threads(*[lambda: StateStore(dsn=postgres_db) for _ in range(4)])
    try:
        assert [s.schema_version for s in stores] == [schema.LATEST] * 4
        with psycopg.connect(postgres_db) as db:
            versions = db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [v for (v,) in versions] == list(range(1, schema.LATEST + 1))
    finally:
        for s in stores:
            s.close()


# --- a lost database ----------------------------------------------------------------------------------------------


class Proxy:
    """A TCP relay in front of the server that can cut every connection (and refuse new ones) or freeze them
    (connections stay open, nothing is passed on either way), as a failed or a hung database server looks."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.mode = "open"  # open | cut | frozen
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def dsn(self, dbname: str) -> str:
        return f"postgresql://postgres:not-the-password@127.0.0.1:{self.port}/{dbname}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            if self.mode == "cut":
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self.mode == "frozen" and not self.stopped.is_set():
                    time.sleep(0.01)
                dst.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        self.mode = "cut"
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.sockets = []

    def stop(self) -> None:
        self.stopped.set()
        self.accepting.join(5)
        self.cut()
        self.listener.close()


@pytest.fixture
def proxy(postgres_db: str) -> Iterator[tuple[Proxy, str]]:
    port = int(postgres_db.rsplit(":", 1)[1].split("/", 1)[0])
    p = Proxy(port)
    yield p, postgres_db.rsplit("/", 1)[1]
    p.stop()


def timed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        call()
    except BaseException as e:
        return time.monotonic() - started, e
    return time.monotonic() - started, None


def wait_available(store: StateStore, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not store.available:
        assert time.monotonic() < deadline, "the store did not reconnect"
        time.sleep(0.05)


def test_a_database_cut_off_fails_calls_at_once_and_the_store_comes_back(proxy: tuple[Proxy, str]) -> None:
    relay, dbname = proxy
    store = StateStore(dsn=relay.dsn(dbname), timeout_s=1.0)
    try:
        store.put("k", b"v")
        relay.cut()
        elapsed, error = timed(lambda: store.get("k"))
        assert isinstance(error, StateUnavailable) and elapsed < 1.0
        assert not store.available
        for _ in range(20):  # while it reconnects, no call waits for the network
            elapsed, error = timed(lambda: store.use_jti("j", time.time() + 60))
            assert isinstance(error, StateUnavailable) and "reconnecting" in str(error) and elapsed < 0.05
        assert store.purge_jti() is False  # upkeep says so instead of raising
        relay.mode = "open"
        wait_available(store, 5.0)
        assert store.get("k") == b"v"
    finally:
        store.close()


def test_a_database_that_stops_answering_holds_no_call_past_its_deadline(proxy: tuple[Proxy, str]) -> None:
    """A hung server or a black-holed network: the server's timeouts cannot fire, the client's deadline does."""
    relay, dbname = proxy
    store = StateStore(dsn=relay.dsn(dbname), timeout_s=1.0)
    try:
        store.deliver_to_inbox([inbox("m1")])
        relay.mode = "frozen"
        elapsed, error = timed(lambda: store.lease_inbox("p1", 10))
        assert isinstance(error, StateUnavailable) and 1.5 < elapsed < 3.0  # timeout_s + the client's margin
        elapsed, error = timed(lambda: store.seen(["m1"]))
        assert isinstance(error, StateUnavailable) and elapsed < 0.05
        relay.mode = "open"
        wait_available(store, 8.0)  # the background attempt under way may have to time out first
        # The lost call's answer was lost, not necessarily its effect (the relay passed the query on when it woke):
        # m1 may be leased by it, and then comes back when that lease lapses. It is not lost either way.
        assert store.inbox_depth() == 1
        assert [i.id for i in store.lease_inbox("p1", 10, lease_s=0.0)] in ([], ["m1"])
    finally:
        store.close()


def test_an_unreachable_database_at_start_is_one_error_without_the_password() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed again below: nothing listens there
    started = time.monotonic()
    with pytest.raises(StateUnavailable) as e:
        StateStore(dsn=f"postgresql://yrdx:s3cret-pw@127.0.0.1:{port}/yrdx", timeout_s=1.0)
    assert time.monotonic() - started < 3.0
    assert f"postgresql://yrdx@127.0.0.1:{port}/yrdx" in str(e.value) and "s3cret" not in str(e.value)


def test_the_configuration_opens_its_postgresql_store(postgres_db: str, tmp_path: Path) -> None:
    ex = init_exchange(tmp_path / "ex", base_port=0)
    path = ex.config_path("SH")
    doc = yaml.safe_load(path.read_text())
    secret = tmp_path / "state.dsn"
    secret.write_text(postgres_db + "\n")
    cfg = parse_config({**doc, "state": {"dsn_file": str(secret), "timeout_s": 3}}, path.parent)
    store = StateStore.from_config(cfg)
    try:
        assert store.backend == "postgresql" and store.where == postgres_db  # (it has no password to hide)
        store.put("k", b"v")
        assert not cfg.state_path.exists()  # the SQLite default is not touched
    finally:
        store.close()


# --- a gateway process on PostgreSQL state ------------------------------------------------------------------------


async def raw_get(session: aiohttp.ClientSession, client: PlatformClient, path: str,
                  auth: bool = True) -> tuple[int, bytes]:
    headers = client.minter.header() if auth else {}
    async with session.get(client.gateway.url + path, headers=headers) as r:
        return r.status, await r.read()


async def test_a_gateway_on_postgresql_state_relays_and_rides_out_a_lost_database(
    kafka: Broker, proxy: tuple[Proxy, str], tmp_path: Path
) -> None:
    """`yrdx serve` with `state: {dsn: ...}` for SH (through the relay) and SQLite for JS, in an exchange of their
    own: a message is delivered into SH's pull inbox with its receipt back at JS. Then SH's database is cut off:
    SH's platform gets a 5xx (not a hang), SH's egress stops deciding records and /readyz says so, /healthz still
    answers; a message JS accepts meanwhile waits on Kafka and is queued once when the database is back."""
    relay, dbname = proxy
    root = tmp_path / "ex"
    done = await asyncio.to_thread(yrdx, "init", "--dir", str(root), "--base-port", "0", "--bootstrap-servers",
                                   kafka.bootstrap_servers, "--namespace", f"pg-{uuid.uuid4().hex[:8]}")
    assert done.returncode == 0, done.stderr
    ex = Exchange(root.resolve(), PkiLayout(root.resolve() / "certs"))
    edit_config(ex.config_path("SH"), state={"dsn": relay.dsn(dbname), "timeout_s": 1})
    gateways = {r: GatewayProcess(ex.config_path(r), tmp_path) for r in ("JS", "SH")}
    try:
        for g in gateways.values():
            await asyncio.to_thread(g.start)
        async with aiohttp.ClientSession() as session:
            js, sh = (PlatformClient(session, gateways[r], ex, r) for r in ("JS", "SH"))
            status, doc = await js.send(MSG_TYPE, "SH", copy.deepcopy(PAYLOAD))
            assert status == 202, doc
            first = doc["id"]
            assert [m["id"] for m in await pull_until(sh, first)] == [first]
            assert (await js.wait_status(first, "delivered"))["status"] == "delivered"

            relay.cut()
            cut = time.monotonic()
            status, body = await raw_get(session, sh, "/v1/inbox?max=10")
            assert status == 503 and orjson.loads(body)["code"] == "state_unavailable", body
            assert time.monotonic() - cut < 3.0
            status, doc = await js.send(MSG_TYPE, "SH", copy.deepcopy(PAYLOAD))  # JS's own state is fine
            assert status == 202, doc
            second = doc["id"]
            deadline = time.monotonic() + 45
            while True:  # egress restarts from its last commit, again and again: /readyz turns red
                status, body = await raw_get(session, sh, "/readyz", auth=False)
                if status == 503 and {"egress_progress", "state"} <= set(orjson.loads(body)["failing"]):
                    red = time.monotonic()
                    break
                assert time.monotonic() < deadline, body
                await asyncio.sleep(0.5)
            assert (await raw_get(session, sh, "/healthz", auth=False))[0] == 200

            relay.mode = "open"
            opened = time.monotonic()
            deadline = opened + 10
            while (await raw_get(session, sh, "/v1/messages/none"))[0] != 404:  # reconnected (its jti, a lookup)
                assert time.monotonic() < deadline, "SH did not reconnect to its database"
                await asyncio.sleep(0.2)
            reconnected = time.monotonic()
            pulled = await pull_until(sh, second, timeout=60)
            pulled_after = time.monotonic() - reconnected
            print(f"\nlost database: /readyz red {red - cut:.1f} s after the cut; back: requests served again "
                  f"{reconnected - opened:.1f} s after, the waiting message pulled {pulled_after:.1f} s later")
            assert [m["id"] for m in pulled] == [second]  # queued once; the first is not offered again
            assert (await js.wait_status(second, "delivered"))["status"] == "delivered"
            assert await sh.pull(wait=0.5) == []
        log = gateways["SH"].log_path.read_text()
        assert "state database lost" in log and "not-the-password" not in log
        await asyncio.sleep(1.0)  # SH's periodic audit flush
        verify = await asyncio.to_thread(yrdx, "audit", "verify", "--config", str(ex.config_path("SH")))
        assert verify.returncode == 0, verify.stdout  # a flush whose head save failed kept its records
    finally:
        for g in gateways.values():
            await asyncio.to_thread(g.stop)
