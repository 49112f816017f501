"""The worker's replies to the judge: one JSON object a line on a pipe of their own, checked
field by field, never unpickled.

The submission runs in the worker's process and can write to any descriptor the worker holds,
so the judge treats this pipe as hostile ground: a reply must be one line of at most
``MAX_REPLY_BYTES``, valid JSON, with a known ``tag``, exactly that tag's fields of the right
types, and the ``seq`` of the request it answers. Anything else (garbage, a forged or extra
reply, one out of order) raises ``CorruptReply``; no reply before the deadline raises
``ReplyTimeout``; the worker's end closing raises ``WorkerGone``. Requests (judge to worker) go
the other way on a ``multiprocessing`` pipe, since they carry tensors shared through CUDA IPC.
"""

import json
import math
import os
import select
import time
from typing import Dict, Tuple

MAX_REPLY_BYTES = 1 << 20  # an error's text is cut to fit well inside this

# tag -> {field: allowed types}; "seq" (int) is in every reply
REPLY_FIELDS: Dict[str, Dict[str, tuple]] = {
    "ready": {"sandbox": (str,)},
    "done": {},
    "timed": {"gpu_ms": (float, type(None)), "event_ms": (float,), "tail_ms": (float,)},
    "sync_tail": {"ms": (float,)},
    "error": {"kind": (str,), "text": (str,)},
    "tampered": {"what": (str,)},
}


class CorruptReply(Exception):
    """A reply that is not what the worker's own code sends (the message says how)."""


class ReplyTimeout(Exception):
    """No complete reply before the deadline."""


class WorkerGone(Exception):
    """The worker's end of the pipe closed: it exited or died."""


def encode_reply(seq: int, tag: str, **fields) -> bytes:
    """One reply line (worker side); an error's text is cut to fit.

    Raises:
        ValueError: a float field is NaN or infinite (JSON has no spelling for it).
    """
    if tag == "error":
        fields["text"] = fields["text"][: MAX_REPLY_BYTES // 8]
    for value in fields.values():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"a reply field is not finite: {value!r}")
    return (json.dumps({"seq": seq, "tag": tag, **fields}) + "\n").encode()


def write_reply(fd: int, seq: int, tag: str, **fields):
    """Write one reply line to ``fd`` in full (worker side)."""
    data = memoryview(encode_reply(seq, tag, **fields))
    while data:
        data = data[os.write(fd, data) :]


def _check(reply: object, seq: int) -> Tuple[str, dict]:
    if not isinstance(reply, dict):
        raise CorruptReply(f"a reply is not an object: {reply!r:.120}")
    tag = reply.get("tag")
    if tag not in REPLY_FIELDS:
        raise CorruptReply(f"unknown reply tag {tag!r:.60}")
    expected = REPLY_FIELDS[tag]
    if set(reply) != {"seq", "tag", *expected}:
        raise CorruptReply(f"a {tag!r} reply has the fields {sorted(reply)!r:.200}")
    if type(reply["seq"]) is not int or reply["seq"] != seq:
        raise CorruptReply(f"a reply answers request {reply['seq']!r:.40}, not {seq}")
    for name, types in expected.items():
        value = reply[name]
        if type(value) is int and float in types:  # json writes 2.0 as 2.0, but be lenient
            value = reply[name] = float(value)
        if type(value) not in types:
            raise CorruptReply(f"a {tag!r} reply's {name} is {type(value).__name__}")
    return tag, {k: reply[k] for k in expected}


class ReplyReader:
    """The judge's end of the reply pipe: reads whole lines with a deadline, never blocking
    past it, and checks each as ``REPLY_FIELDS`` says."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = bytearray()
        os.set_blocking(fd, False)

    def _fill(self, deadline: float):
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReplyTimeout()
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                raise WorkerGone()
            self.buffer += chunk
            if len(self.buffer) > MAX_REPLY_BYTES and b"\n" not in self.buffer:
                raise CorruptReply(f"a reply longer than {MAX_REPLY_BYTES} bytes")

    def pending(self) -> bool:
        """Whether bytes wait that no request asked for (checked before each request)."""
        if self.buffer:
            return True
        ready, _, _ = select.select([self.fd], [], [], 0)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return False
        self.buffer += chunk
        return bool(chunk)

    def read(self, seq: int, timeout_s: float) -> Tuple[str, dict]:
        """The next reply, which must answer request ``seq``: (tag, fields).

        Raises:
            ReplyTimeout: no complete line within ``timeout_s`` seconds.
            WorkerGone: the pipe closed first.
            CorruptReply: the line is not a well-formed reply to ``seq``.
        """
        self._fill(time.monotonic() + timeout_s)
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        if len(line) > MAX_REPLY_BYTES:
            raise CorruptReply(f"a reply longer than {MAX_REPLY_BYTES} bytes")
        try:
            reply = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CorruptReply(f"a reply is not JSON ({exc}): {line[:80]!r}") from None
        return _check(reply, seq)
