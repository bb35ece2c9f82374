"""message_agent against the real message-broker on loopback."""

import asyncio
import json
import os
import subprocess
import ssl
import sys

import pytest

from conftest import BROKER, Broker, free_port
from message_agent import BrokerError, Client, ConnectionLost, discover


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_send_receive_acknowledge_and_the_receipt(broker):
    async def main():
        async with Client("127.0.0.1", broker.port, "bob") as bob, Client("127.0.0.1", broker.port, "alice") as alice:
            r = await alice.send("bob", text="hi", payload={"n": [1, 2]})
            assert r.status == "relayed" and not r.duplicate
            m = await bob.receive(timeout=10)
            assert (m.sender, m.text, m.payload, m.channel, m.redelivery, m.attempt) == \
                ("alice", "hi", {"n": [1, 2]}, "direct", False, 1)
            await bob.ack(m)
            d = await alice.delivered(r.message_uuid, timeout=10)
            assert d.delivered and d.receiver == "bob" and d.delivered_at
            assert sorted(await alice.users()) == ["alice", "bob"]
            # The same uuid again is a duplicate, not a second delivery.
            again = await alice.send("bob", text="hi", message_uuid=r.message_uuid)
            assert again.duplicate
            assert await bob.receive(timeout=0.5) is None
    run(main())


def test_an_offline_recipient_gets_it_redelivered_at_login(broker):
    async def main():
        async with Client("127.0.0.1", broker.port, "alice") as alice:
            r = await alice.send("carol", text="for later", ttl_ms=600_000)
            assert r.status == "dead_lettered"
            async with Client("127.0.0.1", broker.port, "carol") as carol:
                assert carol.login["pending_dead_letters"] == 1
                m = await carol.receive(timeout=10)
                assert m.text == "for later" and m.redelivery and m.dead_letter_reason == "recipient_offline"
                await carol.ack(m)
            d = await alice.delivered(r.message_uuid, timeout=10)
            assert d is not None and d.delivered
    run(main())


def test_groups_multicast_broadcast_and_presence(broker):
    async def main():
        async with Client("127.0.0.1", broker.port, "ann") as ann, Client("127.0.0.1", broker.port, "ben") as ben:
            assert sorted(await ann.create_group("ops", ["ben"])) == ["ann", "ben"]
            assert await ann.groups() == [("ops", ["ann", "ben"])] or sorted((await ann.groups())[0][1]) == ["ann", "ben"]
            r = await ann.group_send("ops", text="to the group")
            assert r.recipients == [("ben", "relayed")]
            m = await ben.receive(timeout=10)
            assert (m.channel, m.group_name, m.text) == ("group", "ops", "to the group")
            await ben.ack(m)
            await ann.multicast(["ben", "nobody"], text="several")
            m = await ben.receive(timeout=10)
            assert m.channel == "multicast"
            await ben.ack(m)
            await ben.broadcast(text="all")
            m = await ann.receive(timeout=10)
            assert (m.channel, m.sender) == ("broadcast", "ben")
            await ann.ack(m)
            assert sorted(await ben.leave_group("ops")) == ["ann"]
            async with Client("127.0.0.1", broker.port, "cal"):
                p = await ann.next_presence(timeout=10)
                while p is not None and "cal" not in p.joined:
                    p = await ann.next_presence(timeout=10)
                assert p is not None and "cal" in p.user_list
            with pytest.raises(BrokerError) as e:
                await ben.group_send("ops", text="not a member")
            assert e.value.error_code == "not_group_member"
    run(main())


def test_the_messages_loop_acknowledges_each_after_its_body(broker):
    async def main():
        async with Client("127.0.0.1", broker.port, "dee") as dee, Client("127.0.0.1", broker.port, "eve") as eve:
            sent = [await eve.send("dee", text=f"m{i}") for i in range(3)]
            seen = []
            async for m in dee.messages():
                seen.append(m.text)
                if len(seen) == 3:
                    break
            assert seen == ["m0", "m1", "m2"]
            for r in sent[:2]:  # the third's body ended the loop: not acknowledged
                assert (await eve.delivered(r.message_uuid, timeout=10)).delivered
            assert await eve.delivered(sent[2].message_uuid, timeout=0.5) is None
    run(main())


def test_a_broker_killed_mid_stream_loses_nothing_and_hands_out_nothing_twice(tmp_path):
    b = Broker(tmp_path)
    count = 400

    async def main():
        got = []
        rx = Client("127.0.0.1", b.port, "rx", backoff_max=0.5)
        tx = Client("127.0.0.1", b.port, "tx", backoff_max=0.5)
        await rx.connect()
        await tx.connect()

        async def receive_all():
            while len(set(got)) < count:
                m = await rx.receive(timeout=60)
                assert m is not None, f"{len(set(got))} of {count} arrived"
                got.append(m.text)
                await rx.ack(m)

        async def send_all():
            for i in range(count):
                await tx.send("rx", text=f"n{i}")
                if i == count // 2:
                    b.kill9()
                    b.start()

        await asyncio.gather(receive_all(), send_all())
        assert tx.reconnects >= 1 and rx.reconnects >= 1
        await rx.close()
        await tx.close()
        return got

    try:
        got = run(main())
    finally:
        b.stop()
    assert sorted(set(got)) == sorted(f"n{i}" for i in range(count))
    assert len(got) == count, "a message was handed out twice"


def test_malformed_input_from_the_broker_side_does_not_break_the_client():
    """A fake broker that answers log_in amid garbage, then sends more garbage and a line far
    too long (the client drops that connection and comes back)."""
    async def main():
        connections = []

        async def serve(reader, writer):
            connections.append(writer)
            line = json.loads(await reader.readline())
            rid = line["message_content"]["request_id"]
            writer.write(b"not json\n[1,2]\n{\"message_id\": 5}\n\n{\"message_id\":\"acknowledge_log_in\",\"message_content\":7}\n")
            writer.write(json.dumps({"message_id": "acknowledge_log_in", "message_content": {
                "request_id": rid, "heartbeat_interval_ms": 60000}}).encode() + b"\n")
            writer.write(b'{"message_id":"receive_message","message_content":{"attempt":"x"}}\n')
            writer.write(b'{"message_id":"error","message_content":{}}\n')
            writer.write(b'{"message_id":"update_user_set","message_content":{"joined":5,"user_list":{}}}\n')
            writer.write(b'{"message_id":"message_delivered","message_content":{"message_uuid":[1]}}\n')
            if len(connections) == 1:
                writer.write(b"x" * (17 * 1024 * 1024) + b"\n")
            try:
                async for raw in reader:
                    frame = json.loads(raw)
                    c = frame["message_content"]
                    if frame["message_id"] == "get_user_list":
                        writer.write(json.dumps({"message_id": "user_list", "message_content": {
                            "request_id": c["request_id"], "user_list": ["fake"]}}).encode() + b"\n")
            except ConnectionError:
                pass  # the client dropped this connection (the line too long)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c = Client("127.0.0.1", port, "fred", backoff_min=0.05, request_timeout=10)
        await c.connect()
        m = await c.receive(timeout=5)  # the odd receive_message is handed out with defaults
        assert m is not None and m.attempt == 1 and m.message_uuid == ""
        for _ in range(200):
            if c.reconnects >= 1:
                break
            await asyncio.sleep(0.05)
        assert c.reconnects >= 1
        assert await c.users() == ["fake"]
        c._shut(ConnectionLost("done"))
        server.close()
    run(main())


def test_no_request_waits_forever():
    async def main():
        async def serve(reader, writer):
            rid = json.loads(await reader.readline())["message_content"]["request_id"]
            writer.write(json.dumps({"message_id": "acknowledge_log_in", "message_content": {"request_id": rid}}).encode() + b"\n")
            await reader.read()  # answers nothing more

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        c = Client("127.0.0.1", server.sockets[0].getsockname()[1], "gus", request_timeout=0.5)
        await c.connect()
        with pytest.raises(asyncio.TimeoutError):
            await c.send("anyone", text="into the void")
        with pytest.raises(asyncio.TimeoutError):
            await c.users()
        await c.close()
        with pytest.raises(ConnectionLost):
            await c.receive(timeout=1)
        server.close()
        # Nobody listening at all: a clear error, at once.
        with pytest.raises(ConnectionLost):
            await Client("127.0.0.1", free_port(), "hal").connect()
    run(main())


def test_discover_finds_the_broker_over_multicast_on_loopback(tmp_path):
    port = free_port()
    b = Broker(tmp_path, ["--discovery", "on", "--discovery-port", str(port), "--discovery-interface", "127.0.0.1"])
    try:
        found = run(discover(timeout=1.0, port=port))
    finally:
        b.stop()
    assert ("py-test", f"127.0.0.1:{b.port}") in found


def test_a_password_and_tls(tmp_path):
    passwords = tmp_path / "passwords"
    subprocess.run([BROKER, "passwd", "--password-file", str(passwords), "ivy"], input=b"s3cret\n", check=True,
                   capture_output=True)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    tls_port = free_port()
    b = Broker(tmp_path, ["--password-file", str(passwords), "--tls-port", str(tls_port), "--tls-cert", str(cert),
                          "--tls-key", str(key)])

    async def main():
        context = ssl.create_default_context(cafile=str(cert))
        async with Client("127.0.0.1", tls_port, "ivy", password="s3cret", ssl=context) as ivy:
            assert await ivy.users() == ["ivy"]
        with pytest.raises(BrokerError) as e:
            await Client("127.0.0.1", tls_port, "ivy", password="wrong", ssl=context).connect()
        assert e.value.error_code == "auth_failed"
        with pytest.raises(ConnectionLost):  # a certificate the client does not trust
            await Client("127.0.0.1", tls_port, "ivy", password="s3cret", ssl=ssl.create_default_context()).connect()

    try:
        run(main())
    finally:
        b.stop()


def test_pip_installs_the_package_from_the_clone_without_an_index(tmp_path):
    import shutil
    from conftest import ROOT
    source = tmp_path / "python"
    shutil.copytree(ROOT / "python", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-build-isolation", "--no-index", str(source)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import message_agent; print(message_agent.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")})
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(venv)), where.stdout


def test_the_example_in_docs_python_md_runs(broker, tmp_path):
    from conftest import ROOT
    text = (ROOT / "docs" / "python.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "example.py"
    script.write_text(code)
    env = dict(os.environ, MESSAGE_AGENT_PORT=str(broker.port), PYTHONPATH=str(ROOT / "python"))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("accepted", "bob got hi {'n': 1} from alice", "delivered to bob", "refused: unknown_group",
                 "bob got group to the group", "brokers:"):
        assert line in done.stdout, done.stdout
