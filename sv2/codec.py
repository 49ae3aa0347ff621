"""SV2 binary primitives: one descriptor object per wire type, plus a bounded reader.

This module owns the byte layout of every SV2 data type (protocol reference
section 1): BOOL, U8, U16, U24, U32, U64, U256, F32, STR0_255, B0_32, B0_255,
B0_64K, B0_16M, BYTES, PUBKEY, SIGNATURE, SEQ0_255[T], SEQ0_64K[T] and
OPTION[T]. Each type is a ``Codec`` instance with

* ``encode(value, out, field)``: append the wire form of ``value`` to ``out``.
  A value that does not fit (wrong Python type, negative, too big, wrong
  length, too many elements) raises ``EncodeError(field, reason)``; nothing is
  appended in that case except for partially written sequences, which the
  caller discards with the whole message.
* ``decode(reader)``: read one value. Truncated or invalid input raises
  ``ProtocolError`` and never ``IndexError``, ``struct.error`` or
  ``UnicodeError``.

Integers are little-endian. Byte strings decode to ``bytes``, sequences to
``tuple``, OPTION to ``value | None``.

STR0_255 decision: SRI does not validate UTF-8, so a peer may legally send any
bytes. We decode with ``errors="surrogateescape"`` instead of rejecting the
message: every byte string maps to a ``str`` that encodes back to the very same
bytes, so nothing is lost and a malformed vendor string or error code never
costs a connection. Strings with escaped bytes contain lone surrogates
(U+DC80..U+DCFF); log them with ``%r`` or through a stream that uses
``errors="backslashreplace"`` (the default for ``sys.stderr``).
"""

from __future__ import annotations

import struct
from typing import Any, Generic, TypeVar, cast

from sv2.errors import EncodeError, ProtocolError

T = TypeVar("T")

U24_MAX = (1 << 24) - 1

_BYTES_TYPES = (bytes, bytearray)


def _type_name(value: object) -> str:
    return type(value).__name__


class Reader:
    """Cursor over an immutable byte buffer; every read is bounds-checked.

    The buffer is copied to ``bytes`` once so slices are cheap and a caller
    mutating its ``bytearray`` afterwards cannot change what we decode.
    """

    __slots__ = ("_data", "_end", "pos")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = data if type(data) is bytes else bytes(data)
        self._end = len(self._data)
        self.pos = 0

    @property
    def remaining(self) -> int:
        return self._end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self._end

    def read(self, n: int) -> bytes:
        """Return the next ``n`` bytes or raise ProtocolError if fewer are left."""
        pos = self.pos
        end = pos + n
        if end > self._end:
            raise ProtocolError(
                f"truncated: need {n} bytes at offset {pos}, have {self._end - pos}"
            )
        self.pos = end
        return self._data[pos:end]

    def rest(self) -> bytes:
        """Return (and consume) everything that is left."""
        pos = self.pos
        self.pos = self._end
        return self._data[pos:]

    def unpack(self, s: struct.Struct) -> tuple[Any, ...]:
        """Unpack one precompiled struct at the cursor."""
        pos = self.pos
        end = pos + s.size
        if end > self._end:
            raise ProtocolError(
                f"truncated: need {s.size} bytes at offset {pos}, have {self._end - pos}"
            )
        self.pos = end
        return s.unpack_from(self._data, pos)

    def expect_end(self, what: str = "message") -> None:
        if self.pos != self._end:
            raise ProtocolError(f"{what}: {self._end - self.pos} trailing bytes")


class Codec(Generic[T]):
    """Base class of the wire type descriptors.

    ``min_size`` is the smallest wire size of a value; sequences use it to
    reject an impossible element count before looping over it.
    ``struct_code`` is set by fixed-size types whose decoding is exactly one
    ``struct`` item, so message decoders can merge runs of them into a single
    precompiled ``struct.Struct`` (the hot share and job messages).
    """

    __slots__ = ("min_size", "name")
    struct_code: str | None = None

    def __init__(self, name: str, min_size: int) -> None:
        self.name = name
        self.min_size = min_size

    def __repr__(self) -> str:
        return self.name

    def encode(self, value: T, out: bytearray, field: str) -> None:
        raise NotImplementedError

    def decode(self, r: Reader) -> T:
        raise NotImplementedError

    # Convenience wrappers for tests and one-off use.
    def to_bytes(self, value: T, field: str | None = None) -> bytes:
        out = bytearray()
        self.encode(value, out, field or self.name)
        return bytes(out)

    def from_bytes(self, data: bytes | bytearray | memoryview) -> T:
        """Decode one value that must span ``data`` exactly."""
        r = Reader(data)
        value = self.decode(r)
        r.expect_end(self.name)
        return value


class Bool(Codec[bool]):
    """BOOL: one byte; we write 0/1, and like SRI only bit 0 counts on read."""

    __slots__ = ()
    _S = struct.Struct("<B")

    def __init__(self) -> None:
        super().__init__("BOOL", 1)

    def encode(self, value: bool, out: bytearray, field: str) -> None:
        if value is True:
            out.append(1)
        elif value is False:
            out.append(0)
        else:
            raise EncodeError(field, f"BOOL needs a bool, got {_type_name(value)}")

    def decode(self, r: Reader) -> bool:
        return bool(r.unpack(self._S)[0] & 1)


class UInt(Codec[int]):
    """Unsigned little-endian integer of 1, 2, 4 or 8 bytes."""

    __slots__ = ("_s", "max", "size", "struct_code")

    def __init__(self, name: str, code: str) -> None:
        self._s = struct.Struct("<" + code)
        self.size = self._s.size
        self.max = (1 << (8 * self.size)) - 1
        self.struct_code = code
        super().__init__(name, self.size)

    def _check(self, value: object, field: str) -> int:
        # bool is an int subclass; a flag passed where a number belongs is a bug.
        if not isinstance(value, int) or isinstance(value, bool):
            raise EncodeError(field, f"{self.name} needs an int, got {_type_name(value)}")
        if not 0 <= value <= self.max:
            raise EncodeError(field, f"{value} is outside {self.name} range 0..{self.max}")
        return value

    def encode(self, value: int, out: bytearray, field: str) -> None:
        out += self._s.pack(self._check(value, field))

    def decode(self, r: Reader) -> int:
        return int(r.unpack(self._s)[0])


class _U24(UInt):
    """U24 has no struct code, so it goes through int.to_bytes/from_bytes."""

    __slots__ = ()

    def __init__(self) -> None:
        Codec.__init__(self, "U24", 3)
        self._s = struct.Struct("<3s")
        self.size = 3
        self.max = U24_MAX
        self.struct_code = None

    def encode(self, value: int, out: bytearray, field: str) -> None:
        out += self._check(value, field).to_bytes(3, "little")

    def decode(self, r: Reader) -> int:
        return int.from_bytes(r.read(3), "little")


class Float32(Codec[float]):
    """F32: IEEE-754 binary32, little-endian. Encoding rounds to the nearest float32."""

    __slots__ = ()
    struct_code = "f"
    _S = struct.Struct("<f")

    def __init__(self) -> None:
        super().__init__("F32", 4)

    def encode(self, value: float, out: bytearray, field: str) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise EncodeError(field, f"F32 needs a float, got {_type_name(value)}")
        try:
            out += self._S.pack(value)
        except (OverflowError, struct.error) as e:
            raise EncodeError(field, f"{value!r} does not fit in binary32 ({e})") from None

    def decode(self, r: Reader) -> float:
        return float(r.unpack(self._S)[0])


class FixedBytes(Codec[bytes]):
    """Exactly ``size`` raw bytes with no prefix (U256, PUBKEY, SIGNATURE)."""

    __slots__ = ("size", "struct_code")

    def __init__(self, name: str, size: int) -> None:
        super().__init__(name, size)
        self.size = size
        self.struct_code = f"{size}s"

    def encode(self, value: bytes, out: bytearray, field: str) -> None:
        if not isinstance(value, _BYTES_TYPES):
            raise EncodeError(field, f"{self.name} needs bytes, got {_type_name(value)}")
        if len(value) != self.size:
            raise EncodeError(
                field, f"{self.name} needs exactly {self.size} bytes, got {len(value)}"
            )
        out += value

    def decode(self, r: Reader) -> bytes:
        return r.read(self.size)


def _length_prefix(prefix_size: int) -> tuple[struct.Struct | None, int]:
    if prefix_size == 1:
        return struct.Struct("<B"), 255
    if prefix_size == 2:
        return struct.Struct("<H"), 0xFFFF
    if prefix_size == 3:
        return None, U24_MAX  # U24: handled by int.from_bytes
    raise ValueError(f"unsupported length prefix size {prefix_size}")


class VarBytes(Codec[bytes]):
    """B0_32 / B0_255 / B0_64K / B0_16M: length prefix then up to ``max_len`` bytes."""

    __slots__ = ("_prefix", "max_len", "prefix_size")

    def __init__(self, name: str, prefix_size: int, max_len: int) -> None:
        super().__init__(name, prefix_size)
        self.prefix_size = prefix_size
        self._prefix, limit = _length_prefix(prefix_size)
        if max_len > limit:
            raise ValueError(f"{name}: max_len {max_len} does not fit the prefix")
        self.max_len = max_len

    def _write_len(self, n: int, out: bytearray) -> None:
        if self._prefix is None:
            out += n.to_bytes(3, "little")
        else:
            out += self._prefix.pack(n)

    def _read_len(self, r: Reader) -> int:
        if self._prefix is None:
            return int.from_bytes(r.read(3), "little")
        return int(r.unpack(self._prefix)[0])

    def encode(self, value: bytes, out: bytearray, field: str) -> None:
        if not isinstance(value, _BYTES_TYPES):
            raise EncodeError(field, f"{self.name} needs bytes, got {_type_name(value)}")
        n = len(value)
        if n > self.max_len:
            raise EncodeError(field, f"{self.name} allows at most {self.max_len} bytes, got {n}")
        self._write_len(n, out)
        out += value

    def decode(self, r: Reader) -> bytes:
        n = self._read_len(r)
        if n > self.max_len:
            # B0_32 can declare up to 255 with its one-byte prefix; SRI rejects that.
            raise ProtocolError(f"{self.name} declares {n} bytes, limit {self.max_len}")
        return r.read(n)


class Str(Codec[str]):
    """STR0_255: u8 byte length then the UTF-8 bytes (surrogateescape, see module doc)."""

    __slots__ = ("max_len",)
    _S = struct.Struct("<B")

    def __init__(self) -> None:
        super().__init__("STR0_255", 1)
        self.max_len = 255

    def encode(self, value: str, out: bytearray, field: str) -> None:
        if not isinstance(value, str):
            raise EncodeError(field, f"STR0_255 needs a str, got {_type_name(value)}")
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as e:
            raise EncodeError(field, f"not encodable as UTF-8: {e.reason}") from None
        if len(raw) > 255:
            raise EncodeError(field, f"STR0_255 allows at most 255 bytes, got {len(raw)}")
        out.append(len(raw))
        out += raw

    def decode(self, r: Reader) -> str:
        n = r.unpack(self._S)[0]
        # surrogateescape never raises on decode: any byte string is accepted.
        return r.read(n).decode("utf-8", "surrogateescape")


class RestBytes(Codec[bytes]):
    """BYTES: every remaining byte of the payload (only valid as a last field)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("BYTES", 0)

    def encode(self, value: bytes, out: bytearray, field: str) -> None:
        if not isinstance(value, _BYTES_TYPES):
            raise EncodeError(field, f"BYTES needs bytes, got {_type_name(value)}")
        out += value

    def decode(self, r: Reader) -> bytes:
        return r.rest()


class Seq(Codec[tuple[T, ...]]):
    """Element count (u8 or U16 LE, not a byte length), then the elements back to back."""

    __slots__ = ("_count", "inner", "max_count")

    def __init__(self, inner: Codec[T], *, count_size: int, max_count: int, name: str) -> None:
        super().__init__(f"{name}[{inner.name}]", count_size)
        self.inner = inner
        self.max_count = max_count
        self._count = struct.Struct("<B" if count_size == 1 else "<H")

    def encode(self, value: tuple[T, ...], out: bytearray, field: str) -> None:
        if not isinstance(value, (tuple, list)):
            raise EncodeError(field, f"{self.name} needs a tuple, got {_type_name(value)}")
        n = len(value)
        if n > self.max_count:
            raise EncodeError(
                field, f"{self.name} allows at most {self.max_count} elements, got {n}"
            )
        out += self._count.pack(n)
        enc = self.inner.encode
        for i, item in enumerate(value):
            enc(item, out, f"{field}[{i}]")

    def decode(self, r: Reader) -> tuple[T, ...]:
        n = r.unpack(self._count)[0]
        inner = self.inner
        if n * inner.min_size > r.remaining:
            raise ProtocolError(
                f"{self.name}: {n} elements need at least {n * inner.min_size} bytes, "
                f"have {r.remaining}"
            )
        if isinstance(inner, FixedBytes):
            # Hashes (merkle paths) are the common case: one bounds check, then slices.
            blob = r.read(n * inner.size)
            size = inner.size
            return cast(
                "tuple[T, ...]", tuple(blob[i : i + size] for i in range(0, len(blob), size))
            )
        dec = inner.decode
        return tuple(dec(r) for _ in range(n))


class Seq0_255(Seq[T]):
    """SEQ0_255[T]: u8 element count 0..255."""

    __slots__ = ()

    def __init__(self, inner: Codec[T]) -> None:
        super().__init__(inner, count_size=1, max_count=255, name="SEQ0_255")


class Seq0_64K(Seq[T]):
    """SEQ0_64K[T]: U16 LE element count 0..65535."""

    __slots__ = ()

    def __init__(self, inner: Codec[T]) -> None:
        super().__init__(inner, count_size=2, max_count=0xFFFF, name="SEQ0_64K")


class Option(Codec[T | None]):
    """OPTION[T]: ``00`` for None, ``01`` + T for a value; any other count is invalid."""

    __slots__ = ("inner",)
    _S = struct.Struct("<B")

    def __init__(self, inner: Codec[T]) -> None:
        super().__init__(f"OPTION[{inner.name}]", 1)
        self.inner = inner

    def encode(self, value: T | None, out: bytearray, field: str) -> None:
        if value is None:
            out.append(0)
            return
        out.append(1)
        self.inner.encode(value, out, field)

    def decode(self, r: Reader) -> T | None:
        tag = r.unpack(self._S)[0]
        if tag == 0:
            return None
        if tag == 1:
            return self.inner.decode(r)
        raise ProtocolError(f"{self.name}: element count {tag}, must be 0 or 1")


BOOL = Bool()
U8 = UInt("U8", "B")
U16 = UInt("U16", "H")
U24: UInt = _U24()
U32 = UInt("U32", "I")
U64 = UInt("U64", "Q")
F32 = Float32()
U256 = FixedBytes("U256", 32)
PUBKEY = FixedBytes("PUBKEY", 32)
SIGNATURE = FixedBytes("SIGNATURE", 64)
STR0_255 = Str()
B0_32 = VarBytes("B0_32", 1, 32)
B0_255 = VarBytes("B0_255", 1, 255)
B0_64K = VarBytes("B0_64K", 2, 0xFFFF)
B0_16M = VarBytes("B0_16M", 3, U24_MAX)
BYTES = RestBytes()

PRIMITIVES: dict[str, Codec[Any]] = {
    c.name: c
    for c in (
        BOOL, U8, U16, U24, U32, U64, F32, U256, PUBKEY, SIGNATURE,
        STR0_255, B0_32, B0_255, B0_64K, B0_16M, BYTES,
    )
}  # fmt: skip
