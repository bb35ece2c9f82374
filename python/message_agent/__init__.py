"""asyncio client of message-broker (docs/python.md).

    from message_agent import Client, discover

    async with Client("127.0.0.1", 10000, "alice") as c:
        r = await c.send("bob", text="hi")
        m = await c.receive(timeout=5)
"""

from .client import Client, Message, Receipt, SendResult, PresenceChange
from .discovery import discover
from .errors import BrokerError, ConnectionLost

__all__ = [
    "Client",
    "Message",
    "Receipt",
    "SendResult",
    "PresenceChange",
    "discover",
    "BrokerError",
    "ConnectionLost",
]
__version__ = "0.2.0"
