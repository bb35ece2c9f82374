"""What the client raises besides asyncio.TimeoutError."""


class BrokerError(Exception):
    """The broker answered a request with an error: its error_code and its sentence."""

    def __init__(self, error_code: str, text: str):
        super().__init__(f"{error_code}: {text}")
        self.error_code = error_code
        self.text = text


class ConnectionLost(ConnectionError):
    """No connection: it could not be made, it dropped during a request that is not a send,
    the client was closed, or the broker ended the session for good."""
