"""Finding brokers: a discover_broker query to the multicast group (or a unicast address),
and every broker_announce that comes back within the timeout."""

import asyncio
import json
import socket
import uuid


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, request_id):
        self.request_id = request_id
        self.found = []  # (name, address) in the order they answered

    def datagram_received(self, data, addr):
        try:
            frame = json.loads(data)
            content = frame.get("message_content") or {}
            if frame.get("message_id") != "broker_announce" or content.get("request_id") != self.request_id:
                return
            entry = (str(content["broker_name"]), str(content["broker_address"]))
        except (ValueError, KeyError, AttributeError, TypeError):
            return  # not an announce of ours: ignored
        if entry not in self.found:
            self.found.append(entry)


async def discover(timeout: float = 1.0, group: str = "239.255.77.77", port: int = 10001,
                   interface: str = "127.0.0.1"):
    """Every broker that answered within timeout seconds, as [(name, "host:port"), ...].

    The query leaves by `interface` with TTL 1; `group` may also be a broker's unicast address.
    """
    request_id = str(uuid.uuid4())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.bind((interface, 0))
    loop = asyncio.get_running_loop()
    transport, collector = await loop.create_datagram_endpoint(lambda: _Collector(request_id), sock=sock)
    try:
        query = {"message_id": "discover_broker", "message_content": {"request_id": request_id}}
        transport.sendto(json.dumps(query).encode(), (group, port))
        await asyncio.sleep(timeout)
    finally:
        transport.close()
    return list(collector.found)
