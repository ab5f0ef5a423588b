"""DeferredScript: a Lua script sent now and its reply read later, on a connection of its own."""

from __future__ import annotations

import socket

import pytest
import redis

from core.redis import DeferredScript, key

INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture
def counter(redis_client):
    name = key("test", "deferred")
    redis_client.delete(name)
    yield name
    redis_client.delete(name)


def test_the_script_runs_while_the_caller_uses_the_client_and_its_reply_is_read_later(redis_client, counter):
    script = DeferredScript(redis_client, INCR_BY)
    try:
        script.send([counter], [5])
        assert script.in_flight
        assert redis_client.ping() is True, "the client's own connections are free meanwhile"
        assert script.result() == 5
        assert int(redis_client.get(counter)) == 5
        assert not script.in_flight
        script.send([counter], [b"2"])
        assert script.result() == 7
    finally:
        script.close()


def test_a_script_redis_does_not_know_is_loaded_and_run_once(redis_client, counter):
    script = DeferredScript(redis_client, INCR_BY)
    try:
        script.send([counter], [1])
        assert script.result() == 1
        redis_client.script_flush()  # as after a Redis restart
        script.send([counter], [1])
        assert script.result() == 2, "run exactly once more"
        assert int(redis_client.get(counter)) == 2
    finally:
        script.close()


def test_one_call_in_flight_and_a_result_only_for_a_call_sent(redis_client, counter):
    script = DeferredScript(redis_client, INCR_BY)
    try:
        with pytest.raises(RuntimeError, match="nothing was sent"):
            script.result()
        script.send([counter], [1])
        with pytest.raises(RuntimeError, match="not taken"):
            script.send([counter], [1])
        assert script.result() == 1
    finally:
        script.close()


def test_a_script_error_is_raised_and_the_connection_stays_usable(redis_client, counter):
    redis_client.set(counter, "not a number")
    script = DeferredScript(redis_client, INCR_BY)
    try:
        script.send([counter], [1])
        with pytest.raises(redis.ResponseError, match="not an integer"):
            script.result()
        redis_client.set(counter, 10)
        script.send([counter], [1])
        assert script.result() == 11
    finally:
        script.close()


def test_closing_with_a_call_in_flight_leaves_no_stale_reply_in_the_pool(redis_client, counter):
    script = DeferredScript(redis_client, INCR_BY)
    script.send([counter], [3])
    script.close()  # the unread reply must not reach the next user of that connection
    assert redis_client.ping() is True
    assert redis_client.incrby(counter, 1) == 4
    assert redis_client.get(counter) == b"4"


def test_commands_are_packed_byte_for_byte_as_redis_py_packs_them(redis_client):
    from core.redis import packed

    connection = redis_client.connection_pool.get_connection()
    try:
        command = ("EVALSHA", "abc", 2, "key:1", b"key:2", 1.5, 1e-7, 2**62, -3, "naïve", b"\x00\xff")
        assert packed(connection, command) == [b"".join(connection.pack_command(*command))]
        with pytest.raises(redis.DataError):  # what redis-py refuses is still refused, with its message
            packed(connection, ("SET", "key", None))
    finally:
        redis_client.connection_pool.release(connection)


@pytest.fixture(params=["unix", "tcp"])
def private_redis(request, tmp_path):
    from tests.support.redis_server import RedisServer

    port = 0
    if request.param == "tcp":  # over TCP the old socket's failure is a reset or EOF on the reply, not EPIPE
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    server = RedisServer(tmp_path / "redis", port=port).start()
    yield server
    server.stop()


def restart(server) -> None:
    """Stop Redis (it closes every connection) and start it again on the same socket, as a supervisor would."""
    redis.Redis(unix_socket_path=str(server.socket)).shutdown(nosave=True)
    server.process.wait(timeout=10)
    server.start()


def test_a_kept_connection_redis_closed_while_it_was_idle_is_replaced_before_the_next_call(private_redis):
    # The alerter's and the forwarder's kept connections sit idle between calls; a Redis restarted meanwhile
    # (by a supervisor, or an outage another thread has seen end) must not fail the next call with the old
    # socket's "Broken pipe": the pool checks the connections it hands out, and so does a kept one.
    from core.redis import DeferredCommand, RotatingConnectionPool

    client = redis.Redis.from_pool(RotatingConnectionPool.from_url(private_redis.url))
    reader, script = DeferredCommand(client), DeferredScript(client, INCR_BY)
    try:
        assert reader.run("SET", "k", "1") == b"OK"
        assert script.run(["n"], [1]) == 1
        restart(private_redis)
        assert reader.run("GET", "k") is None, "a new connection to the restarted (empty) Redis"
        assert script.run(["n"], [2]) == 2, "and the script loaded there"
    finally:
        reader.close()
        script.close()
        client.close()
