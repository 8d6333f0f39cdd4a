"""Read a CTranslate2 ``model.bin`` (binary version 6) that ships split across several files.

Layout (little endian)::

    uint32 binary_version                      # 6
    str    spec_name                           # uint16 length (incl. NUL) + bytes, e.g. "WhisperSpec"
    uint32 spec_revision
    uint32 n_variables
    n_variables x { str name; uint8 rank; uint32 dims[rank]; uint8 dtype; uint32 n_bytes; bytes }
    uint32 n_aliases
    n_aliases x { str alias; str target }

dtype codes follow CTranslate2's ``DataType`` enum: 0 float32, 1 int8, 2 int16, 3 int32,
4 float16, 5 bfloat16. The parts are streamed once: every byte goes through sha256, only the
variables that ``keep`` selects are held in memory (the Whisper decoder is skipped).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import numpy as np

from sere_core.errors import WeightsIntegrityError

_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16 bit patterns; widened by bf16_to_float32
}
_CHUNK = 4 << 20
_MAX_NAME = 4096
_MAX_RANK = 8
_MAX_VARIABLES = 1_000_000


class Readable(Protocol):
    """A file-like resource: a ``Path`` or an ``importlib.resources`` Traversable."""

    def open(self, mode: str = "rb") -> IO[bytes]: ...


@dataclass
class CT2Model:
    """The parsed header and the variables that were kept (numpy arrays in their stored dtype)."""

    binary_version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    scalars: dict[str, int | float] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    sha256: str = ""
    n_bytes: int = 0


class _Truncated(Exception):
    pass


class _HashingStream:
    """Reads the concatenation of ``parts`` in order, hashing every byte."""

    def __init__(self, parts: Sequence[Readable]) -> None:
        self._parts = list(parts)
        self._index = -1
        self._handle: IO[bytes] | None = None
        self.sha256 = hashlib.sha256()
        self.position = 0

    def __enter__(self) -> _HashingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _read_some(self, n: int) -> bytes:
        while True:
            if self._handle is None:
                self._index += 1
                if self._index >= len(self._parts):
                    return b""
                self._handle = self._parts[self._index].open("rb")
            data = self._handle.read(n)
            if data:
                self.sha256.update(data)
                self.position += len(data)
                return data
            self._handle.close()
            self._handle = None

    def read(self, n: int) -> bytes:
        chunks = []
        left = n
        while left > 0:
            data = self._read_some(min(left, _CHUNK))
            if not data:
                raise _Truncated(f"needed {n} bytes at offset {self.position}, the file ended")
            chunks.append(data)
            left -= len(data)
        return b"".join(chunks)

    def skip(self, n: int) -> None:
        left = n
        while left > 0:
            data = self._read_some(min(left, _CHUNK))
            if not data:
                raise _Truncated(f"needed {n} bytes at offset {self.position}, the file ended")
            left -= len(data)

    def drain(self) -> int:
        extra = 0
        while data := self._read_some(_CHUNK):
            extra += len(data)
        return extra

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (length,) = self.unpack("H")
        if length == 0 or length > _MAX_NAME:
            raise ValueError(f"implausible string length {length} at offset {self.position}")
        raw = self.read(length)
        if raw[-1:] != b"\0":
            raise ValueError(f"string at offset {self.position} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_ct2(
    parts: Sequence[Readable],
    keep: Callable[[str], bool],
    expected_sha256: str | None = None,
    label: str = "model.bin",
) -> CT2Model:
    """Stream ``parts`` (the pieces of one ``model.bin``, in order) and keep the selected variables.

    Scalars (rank 0) are always kept, in ``CT2Model.scalars``. Raises WeightsIntegrityError when
    the bytes do not hash to ``expected_sha256`` or the file is malformed; the message names
    ``label`` (say, which packages to reinstall).
    """
    variables: dict[str, np.ndarray] = {}
    scalars: dict[str, int | float] = {}
    aliases: dict[str, str] = {}
    with _HashingStream(parts) as stream:
        try:
            (binary_version,) = stream.unpack("I")
            if binary_version != 6:
                raise ValueError(f"binary version {binary_version}, this reader knows version 6")
            spec = stream.string()
            (revision,) = stream.unpack("I")
            (n_variables,) = stream.unpack("I")
            if n_variables > _MAX_VARIABLES:
                raise ValueError(f"implausible variable count {n_variables}")
            for _ in range(n_variables):
                name = stream.string()
                (rank,) = stream.unpack("B")
                if rank > _MAX_RANK:
                    raise ValueError(f"{name}: implausible rank {rank}")
                dims = stream.unpack(f"{rank}I") if rank else ()
                dtype_code, n_bytes = stream.unpack("BI")
                dtype = _DTYPES.get(dtype_code)
                if dtype is None:
                    raise ValueError(f"{name}: unknown dtype code {dtype_code}")
                expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
                if n_bytes != expected:
                    raise ValueError(f"{name}: {n_bytes} bytes for shape {list(dims)} of {dtype}")
                if rank == 0:
                    value = np.frombuffer(stream.read(n_bytes), dtype=dtype)[0]
                    scalars[name] = value.item()
                elif keep(name):
                    array = np.frombuffer(stream.read(n_bytes), dtype=dtype).reshape(dims)
                    variables[name] = bf16_to_float32(array) if dtype_code == 5 else array
                else:
                    stream.skip(n_bytes)
            (n_aliases,) = stream.unpack("I")
            if n_aliases > _MAX_VARIABLES:
                raise ValueError(f"implausible alias count {n_aliases}")
            for _ in range(n_aliases):
                alias = stream.string()
                aliases[alias] = stream.string()
            extra = stream.drain()
            if extra:
                raise ValueError(f"{extra} unexpected bytes after the last alias")
        except (_Truncated, ValueError, UnicodeDecodeError, struct.error) as exc:
            raise WeightsIntegrityError(f"{label} is damaged or not a CTranslate2 model: {exc}.") from None
        except OSError as exc:
            raise WeightsIntegrityError(f"{label} could not be read: {exc}.") from None
        digest = stream.sha256.hexdigest()
        size = stream.position
    if expected_sha256 is not None and digest != expected_sha256:
        raise WeightsIntegrityError(
            f"{label} does not match its published sha256 (expected {expected_sha256}, got {digest}); "
            "the installed files are damaged or were changed."
        )
    return CT2Model(binary_version, spec, revision, variables, scalars, aliases, digest, size)


def sha256_of(parts: Sequence[Readable | Path]) -> str:
    """sha256 of the concatenation of ``parts`` (streamed)."""
    with _HashingStream(parts) as stream:  # type: ignore[arg-type]
        stream.drain()
        return stream.sha256.hexdigest()
