"""The market connection's socket, read in large pieces.

websocket-client reads a frame with a `recv` for exactly each of its parts (the header, the
length, the payload): three system calls for a trade of 200 bytes, and the listener's
`select` before each frame makes four. Under a market-wide burst the kernel already holds
hundreds of frames; this socket takes up to READ_SIZE bytes of them at once and hands out
the parts from memory, and `pending()` tells the listener a frame is there without asking
the kernel. The commonest frame, a whole trade, is even taken in one step (`text_frame`),
without websocket-client's parser (docs/performance.md, "Ticks sustained by one listener").
"""

import select

from websocket import ABNF, WebSocketTimeoutException

READ_SIZE = 65536
FIN_TEXT = 0x81  # a frame's first byte: final, no extension bits, text


class ReadAhead:
    """Wraps a socket (plain or TLS); everything but reading goes to the socket itself."""

    def __init__(self, sock):
        self._sock = sock
        self._data, self._at = b"", 0

    def recv(self, size):
        """Up to `size` bytes: from what was read ahead, else one read of the socket."""
        if self._at >= len(self._data):
            data = self._sock.recv(max(size, READ_SIZE))
            if len(data) <= size:  # all of it asked for (b"" at the end: the peer closed)
                return data
            self._data, self._at = data, 0
        start = self._at
        self._at = end = min(start + size, len(self._data))
        return self._data[start:end]

    def text_frame(self):
        """The payload of a whole text frame already read (final, unmasked, under 64 KiB: a
        trade), taken; else None, and the caller lets websocket-client read what comes
        next. Call only between messages, never amid one websocket-client began."""
        data, at = self._data, self._at
        if len(data) - at < 2 or data[at] != FIN_TEXT:
            return None
        size, start = data[at + 1], at + 2  # the mask bit set (a server must not) is > 126
        if size == 126:
            size, start = int.from_bytes(data[at + 2:at + 4], "big"), at + 4
        elif size > 126:
            return None
        end = start + size
        if end > len(data):
            return None
        self._at = end
        return data[start:end]

    def pending(self):
        """Bytes readable without waiting: read ahead here, or decrypted by TLS."""
        left = len(self._data) - self._at
        if left:
            return left
        inner = getattr(self._sock, "pending", None)
        return inner() if inner is not None else 0

    def gettimeout(self):  # websocket-client asks before every read
        return self._sock.gettimeout()

    def __getattr__(self, name):
        return getattr(self._sock, name)


class Frames:
    """The frames of one connection: whole trades taken from memory, the rest websocket-
    client's (pings answered, fragments joined, closes), in the order they came."""

    def __init__(self, ws):
        self.ws = ws
        ws.sock = self.sock = ReadAhead(ws.sock)
        # websocket-client has ended on a message's edge: a data frame returned, not a ping
        # amid fragments, nor a read that timed out within a frame
        self._on_edge = True

    def readable(self):
        """A frame, or part of one, is here to read without waiting."""
        return bool(self.sock.pending()) or bool(select.select([self.sock], [], [], 0)[0])

    def arriving(self):
        """Bytes have come from the network that no read has taken yet (a long pause in
        reading, not a silent peer). Bytes read already do not count: a peer that stalled
        amid a frame leaves some there for good."""
        return bool(select.select([self.sock], [], [], 0)[0])

    def next(self):
        """(opcode, payload) of the next frame, or None when the read timed out."""
        if self._on_edge:
            raw = self.sock.text_frame()
            if raw is not None:
                return ABNF.OPCODE_TEXT, raw
        self._on_edge = False
        try:
            opcode, frame = self.ws.recv_data_frame(True)
        except WebSocketTimeoutException:
            return None
        self._on_edge = opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY)
        return opcode, frame.data
