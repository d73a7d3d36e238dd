"""Stream the top-level keys of a large JSON object, decoding big arrays in batches."""

# COCO Camera Traps metadata can be over a gigabyte of JSON, and json.load needs several times that
# in memory. Here at most a few batches of text are held, and each batch of array elements is
# decoded in one C call; exact element-by-element decoding covers cuts that are not boundaries.

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Collection, Iterator
from typing import Any, BinaryIO, Literal, NoReturn

import orjson

from stages.core.errors import CorruptMetadata, MetadataError
from stages.formats.archives import ZIP_READ_ERRORS

__all__ = ["iter_document"]

DEFAULT_BATCH_CHARS = 2_000_000
DEFAULT_BLOCK_BYTES = 2 << 20

Kind = Literal["value", "batch"]

_WS = re.compile(r"[ \t\n\r]*")
# A cut after an object element: the object closes, a comma, and the next object opens.
_OBJECT_SPLIT = re.compile(r"\}[ \t\n\r]*,[ \t\n\r]*\{")
_SPLIT_TRIES = 3
_DECODER = json.JSONDecoder()
# Partial tokens json reports an error at when the input stops inside them: a number ("1.",
# "1e+", "-") or the hex digits of a "\\uXXXX" escape. Partial literals are checked separately.
_PARTIAL_NUMBER_OR_ESCAPE = re.compile(r"[-+.eE0-9]*|u[0-9a-fA-F]{0,3}")
_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")
# Decode errors this close to the end of the buffer may only mean the value continues in the
# next block; 16 covers the longest partial token ("-Infinity", "\uXXXX", "1e+").
_NEAR_END = 16
# orjson turns integers outside the 64-bit range into floats, unlike json, so text with such an
# integer goes to json instead. Mapping digits to "0", the characters that may precede a number to
# "S" and all else to "x" makes any integer of 19 or more digits show up as one substring.
_NUMBER_SHAPES = bytes(
    ord("0") if byte in b"0123456789" else ord("S") if byte in b":,[ \t\n\r-" else ord("x")
    for byte in range(256)
)
_LONG_INTEGER = b"S" + b"0" * 19


def iter_document(
    fp: BinaryIO,
    stream_keys: Collection[str],
    *,
    max_bytes: int | None = None,
    max_value_bytes: int | None = None,
    batch_chars: int = DEFAULT_BATCH_CHARS,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    exact_integers: bool = True,
) -> Iterator[tuple[str, Kind, Any]]:
    """Yield (key, kind, payload) for each top-level key of a JSON object read from binary `fp`.

    kind == "value": payload is the fully decoded value of a key not in `stream_keys`.
    kind == "batch": payload is a non-empty list of decoded elements of the array under a key in
    `stream_keys`; a streamed array yields zero or more batches, in order.

    `fp` only needs ``read(n)``; it is read `block_bytes` at a time and `batch_chars` bounds the
    text decoded per batch; `max_value_bytes` bounds one value outside the streamed arrays (or
    one array element too large for a batch), which would otherwise be buffered whole. With
    `exact_integers` false, integers beyond 64 bits may decode as floats (orjson's behaviour);
    skipping the check that routes them to json is ~2x faster for callers that validate their
    integer fields anyway. Input problems raise MetadataError as they are reached, so the
    document is only fully validated (including trailing data) once the iterator is exhausted.
    """
    if isinstance(stream_keys, str):
        raise TypeError("stream_keys must be a collection of keys, not a single string")
    if batch_chars < 1 or block_bytes < 1:
        raise ValueError("batch_chars and block_bytes must be positive")
    if max_bytes is not None and max_bytes < 0:
        raise ValueError("max_bytes must not be negative")
    keys = frozenset(stream_keys)
    reader = _Reader(
        fp, max_bytes=max_bytes, block_bytes=block_bytes, max_value_bytes=max_value_bytes
    )

    c = reader.peek()
    if c != "{":
        if not c:
            raise CorruptMetadata("metadata JSON is empty")
        raise CorruptMetadata(
            f"metadata JSON must be an object at the top level, found {c!r} "
            f"at character {reader.offset}"
        )
    reader.pos += 1
    c = reader.peek()
    if c == "}":
        reader.pos += 1
    else:
        while True:
            if c != '"':
                reader.fail("expecting a key in double quotes")
            key = reader.decode_value()
            if reader.peek() != ":":
                reader.fail("expecting ':' after a key")
            reader.pos += 1
            if key in keys:
                c = reader.peek()
                if c != "[":
                    if not c:
                        reader.fail("expecting a value")
                    raise MetadataError(
                        f"metadata key {key!r} must hold an array, found {c!r} "
                        f"at character {reader.offset}"
                    )
                reader.pos += 1
                for batch in _iter_array(reader, batch_chars, exact_integers):
                    yield key, "batch", batch
            else:
                reader.peek()
                yield key, "value", reader.decode_value()
            c = reader.peek()
            if c == "}":
                reader.pos += 1
                break
            if c != ",":
                reader.fail("expecting ',' or '}' after a value")
            reader.pos += 1
            c = reader.peek()
    if reader.peek():
        raise MetadataError(
            f"unexpected data after the top-level JSON object at character {reader.offset}"
        )


def _iter_array(reader: _Reader, batch_chars: int, exact: bool) -> Iterator[list[Any]]:
    """Yield batches of the elements of the array whose '[' was just consumed."""
    c = reader.peek()
    if c == "]":
        reader.pos += 1
        return
    while True:
        # Invariant: reader.pos is at the first character of an element.
        reader.ensure(batch_chars)
        buf, start = reader.buf, reader.pos
        stop = min(len(buf), start + batch_chars)
        found = _decode_region(buf, start, stop, exact)
        if found is not None:
            batch, reader.pos, closed = found
            yield batch
            if closed:
                return
            reader.peek_element()
            continue

        # Slow but exact: one element at a time, up to the end of the region.
        limit = reader.base + stop
        batch = []
        while True:
            batch.append(reader.decode_value())
            c = reader.peek()
            if c == "]":
                reader.pos += 1
                yield batch
                return
            if c != ",":
                reader.fail("expecting ',' or ']' after an array element")
            reader.pos += 1
            reader.peek_element()
            if reader.offset >= limit:
                break
        yield batch


def _decode_region(
    buf: str, start: int, stop: int, exact: bool = True
) -> tuple[list[Any], int, bool] | None:
    """Decode whole elements from buf[start:stop] at a cheap cut: (elements, resume, closed)."""
    # Cuts are tried from the end of the region so that a batch is as large as allowed. A string
    # containing "}, {" can fake an object boundary, so a few earlier ones are tried too.
    end = stop
    for _ in range(_SPLIT_TRIES):
        split = _last_object_split(buf, start, end)
        if split is None:
            break
        batch = _decode_elements(buf, start, split.start() + 1, exact)
        if batch is not None:
            return batch, split.end() - 1, False
        end = split.start()
    if end == stop:
        # No objects: a cut before the last comma works for arrays of scalars whenever it lies
        # outside strings and nested arrays.
        comma = buf.rfind(",", start, stop)
        if comma > start:
            batch = _decode_elements(buf, start, comma, exact)
            if batch is not None:
                return batch, comma + 1, False
    # The array may end inside this region, with later keys making the cuts above invalid. json
    # stops after the first complete value, here the rest of the array.
    try:
        batch, end = _DECODER.raw_decode("[" + buf[start:stop])
    except (ValueError, RecursionError):
        return None
    return batch, start + end - 1, True


def _last_object_split(buf: str, start: int, stop: int) -> re.Match[str] | None:
    """Return the last object-to-object boundary whose '}' lies in buf[start:stop]."""
    end = stop
    while (brace := buf.rfind("}", start, end)) >= 0:
        match = _OBJECT_SPLIT.match(buf, brace)
        if match is not None:
            return match
        end = brace
    return None


def _decode_elements(buf: str, start: int, stop: int, exact: bool = True) -> list[Any] | None:
    """Decode buf[start:stop] as a sequence of array elements, or return None if it is not one."""
    # If the cut is not an element boundary of the enclosing array (inside a string or a nested
    # value), the bracketed text is never valid JSON, so a successful decode is always exact.
    text = "".join(("[", buf[start:stop], "]"))
    data = text.encode()
    if not exact or data.translate(_NUMBER_SHAPES).find(_LONG_INTEGER) < 0:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _is_cut_short(message: str, rest: str) -> bool:
    """Return whether a decode error at the end of the input means the input stopped early."""
    if message.startswith("Unterminated string"):
        return True
    if _PARTIAL_NUMBER_OR_ESCAPE.fullmatch(rest):
        return True
    return any(literal.startswith(rest) for literal in _LITERALS)


class _Reader:
    """Hold a window of decoded text over a binary stream, refilled on demand."""

    def __init__(
        self,
        fp: BinaryIO,
        *,
        max_bytes: int | None,
        block_bytes: int,
        max_value_bytes: int | None = None,
    ) -> None:
        self._fp = fp
        self._max_bytes = max_bytes
        self._max_value = max_value_bytes
        self._block_bytes = block_bytes
        # utf-8-sig drops a leading byte order mark, as json.load does for bytes.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self._bytes_read = 0
        self.eof = False
        self.buf = ""
        self.pos = 0
        self.base = 0  # characters discarded before buf[0]

    @property
    def offset(self) -> int:
        """Return the character offset of the current position in the whole document."""
        return self.base + self.pos

    def fail(self, message: str, pos: int | None = None) -> NoReturn:
        """Raise MetadataError for malformed or truncated JSON at `pos` (default: current)."""
        pos = self.pos if pos is None else pos
        if pos >= len(self.buf) and self.eof:
            raise CorruptMetadata(
                f"metadata JSON is truncated: input ends inside the document "
                f"at character {self.base + pos}"
            )
        raise CorruptMetadata(f"malformed metadata JSON at character {self.base + pos}: {message}")

    def fill(self, min_chars: int) -> bool:
        """Append at least `min_chars` characters unless the input ends; return whether any."""
        if self.eof:
            return False
        parts = [self.buf[self.pos :]]
        added = 0
        while added < min_chars and not self.eof:
            size = self._block_bytes
            if self._max_bytes is not None:
                # One byte past the limit is enough to tell that the input exceeds it.
                size = min(size, self._max_bytes - self._bytes_read + 1)
            try:
                data = self._fp.read(size)
            except ZIP_READ_ERRORS as exc:
                # A damaged archive member: bad CRC, bad deflate data, a cut stream.
                raise CorruptMetadata(f"metadata archive is corrupt: {exc}") from None
            try:
                if data:
                    self._bytes_read += len(data)
                    if self._max_bytes is not None and self._bytes_read > self._max_bytes:
                        raise MetadataError(
                            f"metadata JSON exceeds the configured limit of {self._max_bytes} bytes"
                        )
                    text = self._decoder.decode(data)
                else:
                    self.eof = True
                    text = self._decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                near = self._bytes_read - len(data) + max(exc.start, 0)
                raise CorruptMetadata(
                    f"metadata JSON is not valid UTF-8 near byte {near}: {exc.reason}"
                ) from None
            parts.append(text)
            added += len(text)
        self.base += self.pos
        self.buf = "".join(parts)
        self.pos = 0
        return added > 0

    def ensure(self, chars: int) -> None:
        """Buffer at least `chars` characters past the current position, or all that is left."""
        missing = chars - (len(self.buf) - self.pos)
        if missing > 0:
            self.fill(missing)

    def peek(self) -> str:
        """Skip whitespace and return the next character, or "" at the end of the input."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill(1):
                return ""

    def peek_element(self) -> None:
        """Skip whitespace after a comma in an array, failing if no element follows."""
        c = self.peek()
        if not c or c == "]":
            self.fail("expecting an array element after ','")

    def decode_value(self) -> Any:
        """Decode the JSON value at the current position exactly, reading more as needed."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self.eof:
                    rest = self.buf[exc.pos :].rstrip(" \t\n\r")
                    self.fail(exc.msg, len(self.buf) if _is_cut_short(exc.msg, rest) else exc.pos)
                if exc.pos < len(self.buf) - _NEAR_END and not exc.msg.startswith(
                    "Unterminated string"
                ):
                    self.fail(exc.msg, exc.pos)
                size = len(self.buf) - self.pos  # the value is at least this long
            except RecursionError:
                raise MetadataError(
                    f"metadata JSON is nested too deeply near character {self.offset}"
                ) from None
            else:
                size = end - self.pos
                self._check_value_size(size)
                # A number near the end of the buffer ("1" of "1.5", "1" of "1e5") may continue
                # in the next block.
                if end <= len(self.buf) - _NEAR_END or self.eof:
                    self.pos = end
                    return value
            self._check_value_size(size)
            # Grow geometrically so a large value is re-decoded only a few times.
            self.fill(max(self._block_bytes, len(self.buf) - self.pos))

    def _check_value_size(self, size: int) -> None:
        """Refuse one value larger than the configured limit instead of buffering it."""
        if self._max_value is not None and size > self._max_value:
            raise MetadataError(
                f"a single JSON value at character {self.offset} is longer than the "
                f"configured limit of {self._max_value} (counted in characters)"
            )
