"""Read a (compressed) JSON Lines file as Arrow arrays of lines, in bounded memory.

The file is read in chunks of ``chunk_bytes``; each chunk is split on ``\\n`` with numpy and becomes a
zero-copy Arrow string array whose values keep their ``\n``, so no Python loop runs per line. Lines
that are not valid UTF-8 are found only when a chunk fails validation (rare) and are reported by
line number. Reading and splitting run one chunk ahead on a thread (gzip through ``isal`` when it is
installed, about 2.5x faster than ``gzip``), so they overlap with the normalisation of the last chunk.

>>> import tempfile, os
>>> p = os.path.join(tempfile.mkdtemp(), "t.jsonl")
>>> _ = open(p, "wb").write(b'{"a": 1}\\n\\n{"a": 2}\\n')
>>> [(b.first_line, b.lines.to_pylist()) for b in iter_line_chunks(p)]
[(1, ['{"a": 1}\\n', None, '{"a": 2}\\n'])]
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import pyarrow as pa

from distillguard.errors import InputError
from distillguard.prefetch import prefetched

DEFAULT_CHUNK_BYTES = 32 * 1024 * 1024


@dataclass
class LineChunk:
    """A run of consecutive lines: ``lines[i]`` is line ``first_line + i`` (1-based).

    Blank lines are null. ``bad_utf8`` lists (line number, raw bytes) of lines that were not UTF-8;
    they are null in ``lines`` too, as are lines too long to parse (``too_long``).
    """

    first_line: int
    lines: pa.Array
    bad_utf8: list[tuple[int, bytes]] = field(default_factory=list)
    nbytes: int = 0
    #: (line number, reason, its first bytes) of lines over :data:`MAX_LINE_BYTES`; null in ``lines``
    too_long: list[tuple[int, str, bytes]] = field(default_factory=list)
    #: the file ends inside the chunk's last line (no newline after it): a log cut short mid-write
    #: ends so, if that line is not a whole record
    open_end: bool = False


#: A line longer than this is rejected unparsed ("line is N MB ..."). Far above any API request
#: (a million-token prompt is a few MB); a 100 MB line scans in 0.8 GB, but one of 200 MB needs more
#: than DuckDB's 3 GB limit to parse and used to end the run.
MAX_LINE_BYTES = 64 << 20
#: How much of a line too long to parse the reject record keeps.
_HEAD_BYTES = 8192


def open_binary(path: str | Path) -> BinaryIO:
    """Open a plain, ``.gz`` or ``.zst`` file for streaming binary reads."""
    p = Path(path)
    try:
        raw = open(p, "rb")
    except OSError as e:
        raise InputError(f"cannot read {p}: {e.strerror or e}. Check the path and permissions.") from e
    magic = raw.peek(4)[:4] if hasattr(raw, "peek") else b""
    if magic[:2] == b"\x1f\x8b":
        try:
            from isal import igzip

            return _Decoded(igzip.IGzipFile(fileobj=raw, mode="rb"), salvage_gzip=p)  # type: ignore[return-value]
        except ImportError:  # pragma: no cover - isal is a dependency; plain gzip still works
            return _Decoded(gzip.GzipFile(fileobj=raw, mode="rb"), salvage_gzip=p)  # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        return _Decoded(_ZstdFrames(raw))  # type: ignore[return-value]
    return _Decoded(raw)  # type: ignore[return-value]


class _Decoded(io.RawIOBase):
    """A file's text bytes as every reader wants them: without a leading UTF-8 byte order mark, and,
    for gzip, with every byte that can still be decoded before damage delivered before the error is
    raised (the fast decoder gives nothing of the read that meets the damage: up to a read's worth).
    Damage raises ``OSError`` or ``EOFError`` where it is, as the decoders do."""

    def __init__(self, inner: BinaryIO, *, salvage_gzip: Path | None = None):
        self._inner, self._gzip_path = inner, salvage_gzip
        self._delivered = 0  # decoded bytes read from ``inner``
        self._tail: memoryview | None = None  # the salvaged bytes still to deliver, then ``_error``
        self._error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while True:
            if self._tail is not None:
                if not self._tail:
                    raise self._error  # type: ignore[misc]
                n = min(len(b), len(self._tail))
                b[:n] = self._tail[:n]
                self._tail = self._tail[n:]
                return n
            try:
                k = self._inner.readinto(b)
            except (OSError, EOFError) as e:
                if self._gzip_path is None:
                    raise
                tail = _gzip_tail(self._gzip_path, self._delivered)
                self._error, self._tail = e, memoryview(tail.removeprefix(_BOM) if self._delivered == 0 else tail)
                continue
            first = self._delivered == 0
            self._delivered += k or 0
            if first and k and k >= 3 and bytes(b[:3]) == _BOM:  # the file's first bytes
                if k == 3:
                    continue  # the BOM alone: read on
                b[: k - 3] = bytes(b[3:k])
                return k - 3
            return k or 0

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


#: Compressed bytes of a zstd file decoded at a time: small, so that their text (about 4x) is still in
#: the CPU cache when it is copied out (700 MB of text: 0.58 s at 64 KB, 1.0 s at 256 KB, 1.3 s at 4 MB).
_ZSTD_READ = 64 << 10


class _ZstdFrames(io.RawIOBase):
    """The frames of a zstd file, one after the other, as a binary stream that raises ``EOFError``
    where the file ends inside a frame (cut short) and ``OSError`` where a frame is corrupt.
    (``zstandard``'s own stream reader just stops at a cut, so a log cut short would go unreported.)
    """

    def __init__(self, raw: BinaryIO):
        import zstandard

        self._raw, self._error = raw, zstandard.ZstdError
        self._dctx = zstandard.ZstdDecompressor()
        self._d = self._dctx.decompressobj()
        self._in_frame = False  # bytes fed to the current frame, and its end not yet seen
        self._buf, self._pos = b"", 0
        self._view = memoryview(self._buf)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while self._pos == len(self._buf):
            block = self._raw.read(_ZSTD_READ)
            if not block:
                if self._in_frame:
                    raise EOFError("zstd stream ended inside a frame (the file is cut short)")
                return 0
            self._feed(block)
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def _feed(self, block: bytes) -> None:
        out = []
        try:
            while block:
                self._in_frame = True
                out.append(self._d.decompress(block))
                if not self._d.eof:
                    break
                self._in_frame = False
                block = self._d.unused_data  # the next frame
                self._d = self._dctx.decompressobj()
        except self._error as e:
            raise OSError(f"corrupt zstd data: {e}") from e
        self._buf = out[0] if len(out) == 1 else b"".join(out)
        self._view, self._pos = memoryview(self._buf), 0

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def _too_long(nbytes: int) -> str:
    """The reject reason of a line of ``nbytes`` bytes, over :data:`MAX_LINE_BYTES`."""
    return f"line is {nbytes / 2**20:,.1f} MB, over the {MAX_LINE_BYTES / 2**20:g} MB a request may be; not parsed"


def without_too_long(lines: pa.Array, first_line: int) -> tuple[pa.Array, list[tuple[int, str, bytes]]]:
    """``lines`` (a string array, line ``first_line`` first) with the lines over :data:`MAX_LINE_BYTES`
    made null, and those lines as :attr:`LineChunk.too_long` lists them. For the formats whose lines
    are made from records (Parquet, LiteLLM, OpenAI batch) rather than split from a file's bytes."""
    import pyarrow.compute as pc

    lengths = pc.binary_length(lines)
    over = pc.fill_null(pc.greater(lengths, MAX_LINE_BYTES), False)
    if not pc.any(over).as_py():
        return lines, []
    idx = pa.array(np.flatnonzero(over.to_numpy(zero_copy_only=False)))
    # the heads as bytes, cut in Arrow (as _split cuts them), not whole lines of 64 MB made Python strings
    heads = pc.binary_slice(lines.take(idx).cast(pa.large_binary()), 0, _HEAD_BYTES).to_pylist()
    too_long = [(first_line + i, _too_long(n), head)
                for i, n, head in zip(idx.to_pylist(), lengths.take(idx).to_pylist(), heads)]
    return pc.if_else(over, pa.scalar(None, lines.type), lines), too_long


def _split(buf: bytes | memoryview | np.ndarray, first_line: int, nl: np.ndarray | None = None) -> LineChunk:
    """Split ``buf`` into lines without copying it: each line keeps its ``\n`` (JSON allows trailing
    white space), so the Arrow offsets are just the newline positions and the values are ``buf``.
    ``nl``: the positions of the newlines in ``buf``, when the caller has them."""
    data = np.frombuffer(buf, dtype=np.uint8)
    if nl is None:
        nl = np.flatnonzero(data == 10)
    open_end = len(data) > 0 and data[-1] != 10
    offsets = np.empty(len(nl) + 1 + open_end, dtype=np.int64)
    offsets[0] = 0
    offsets[1 : len(nl) + 1] = nl + 1
    if open_end:
        offsets[-1] = len(data)  # a final line without a newline
    lengths = np.diff(offsets)
    # Empty lines ("\n" or "\r\n") are null; anything else (even white space alone) is a line to validate.
    blank = lengths == 1
    two = np.flatnonzero(lengths == 2)
    blank[two] = (data[offsets[two]] == 13) & (data[offsets[two] + 1] == 10)
    if open_end:
        blank[-1] = False
    validity = ~blank
    too_long = [(first_line + int(i), _too_long(int(lengths[i])), bytes(data[offsets[i] : offsets[i] + _HEAD_BYTES]))
                for i in np.flatnonzero(lengths > MAX_LINE_BYTES)]
    for line_no, _, _ in too_long:
        validity[line_no - first_line] = False  # never parsed: reported with its head
    n = len(lengths)
    arr = pa.Array.from_buffers(
        pa.large_binary(),
        n,
        [pa.py_buffer(np.packbits(validity, bitorder="little")), pa.py_buffer(offsets), pa.py_buffer(buf)],
    )
    bad: list[tuple[int, bytes]] = []
    try:
        lines = arr.cast(pa.large_string())
    except pa.ArrowInvalid:
        py = arr.to_pylist()
        out: list[str | None] = []
        for i, b in enumerate(py):
            if b is None:
                out.append(None)
                continue
            try:
                out.append(b.decode("utf-8"))
            except UnicodeDecodeError:
                bad.append((first_line + i, b.rstrip(b"\r\n")))
                out.append(None)
        lines = pa.array(out, type=pa.large_string())
    return LineChunk(first_line=first_line, lines=lines, bad_utf8=bad, nbytes=len(data), too_long=too_long,
                     open_end=bool(open_end))


def iter_line_chunks(path: str | Path, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, prefetch: bool = True,
                     first_chunk_bytes: int | None = None) -> Iterator[LineChunk]:
    """Yield :class:`LineChunk` s covering every line of ``path`` in order.

    A line longer than ``chunk_bytes`` is kept whole (the chunk grows to hold it). With ``prefetch``
    the next chunk is read and split on a thread while the caller works on the current one; an
    error on that thread (a truncated gzip) reaches the caller after every chunk before it.
    ``first_chunk_bytes``: start with chunks this small and double them up to ``chunk_bytes`` (a
    consumer that starts work on the first lines, like a streaming replay, waits less).
    """
    if not prefetch:
        yield from _line_chunks(path, chunk_bytes, first_chunk_bytes)
        return
    yield from prefetched(lambda: _line_chunks(path, chunk_bytes, first_chunk_bytes), name="distillguard-read")


#: Bytes asked of the decompressor at a time: small enough that its output is still in the CPU cache
#: when the newlines are found, and that it is written straight into the chunk's buffer.
_READ_BYTES = 4 << 20


class DamagedStream(InputError):
    """An input ends in damage: a compressed log cut short by a crash mid-write or corrupt, or a
    Parquet file that cannot be read past some row. Every line before the damage has been yielded
    (the last one, cut short, as it is: it is rejected as a line); the reader reports the file and
    goes on with the next one. ``line_no``: the first line not read."""

    def __init__(self, path: str | Path, line_no: int, cause: BaseException, message: str | None = None):
        self.path, self.line_no = str(path), line_no
        super().__init__(message or (
            f"{path}: compressed stream is corrupt or truncated after line {line_no - 1}: {cause}. "
            f"The {line_no - 1:,} lines before it were read; re-export or re-compress the file to read the rest."
        ))


#: A UTF-8 byte order mark, which some Windows tools write at the start of a text file; it is dropped
#: (left in, it would make the first record invalid JSON).
_BOM = b"\xef\xbb\xbf"

#: At most this much of a damaged gzip stream's tail is recovered (:func:`_gzip_tail`).
_SALVAGE_MAX = 64 << 20


def _gzip_tail(path: str | Path, skip: int) -> bytes:
    """What a damaged gzip file decompresses to after its first ``skip`` bytes, up to the damage.

    zlib, fed the compressed bytes a block at a time, gives everything up to the last byte it could
    decode. Only run on damage (:class:`_Decoded`): it decodes the file again from its start.
    """
    import zlib

    out: list[bytes] = []
    at = 0  # decompressed bytes seen so far; only those past ``skip`` are kept
    end = skip + _SALVAGE_MAX
    d = zlib.decompressobj(31)
    with open(path, "rb") as raw:
        while at < end:
            block = raw.read(1 << 20)
            if not block:
                break
            try:
                while block:
                    piece = d.decompress(block)
                    if at + len(piece) > skip:
                        out.append(piece[max(0, skip - at) : end - at])
                    at += len(piece)
                    if not d.eof:
                        break
                    block = d.unused_data  # the next member of a multi-member file
                    d = zlib.decompressobj(31)
            except zlib.error:
                break  # corrupt: keep what was decoded before it
    return b"".join(out)


def _line_chunks(path: str | Path, chunk_bytes: int, first_chunk_bytes: int | None = None) -> Iterator[LineChunk]:
    """Each chunk's bytes are read into a buffer of its own (the Arrow array of its lines keeps it),
    a few MB at a time, and its newlines found as they arrive; the partial line after the last
    newline starts the next buffer."""
    line_no = 1
    carry = b""
    size = min(first_chunk_bytes or chunk_bytes, chunk_bytes)
    damage: BaseException | None = None
    with open_binary(path) as f:
        eof = False
        while not eof:
            buf = np.empty(max(size, 2 * len(carry)), dtype=np.uint8)  # not zeroed: every byte used is read into
            buf[: len(carry)] = np.frombuffer(carry, dtype=np.uint8)
            filled, nls = len(carry), []  # carry has no newline
            while True:
                if filled == len(buf):
                    if nls:
                        break
                    bigger = np.empty(2 * len(buf), dtype=np.uint8)  # one line longer than the buffer: keep it whole
                    bigger[:filled] = buf
                    buf = bigger
                try:
                    k = f.readinto(memoryview(buf[filled : filled + _READ_BYTES]))
                except (OSError, EOFError, gzip.BadGzipFile) as e:
                    damage = e  # every byte before it was read (open_binary): yield them, the last line cut short as it is
                    eof = True
                    break
                if not k:
                    eof = True
                    break
                pos = np.flatnonzero(buf[filled : filled + k] == 10)
                if len(pos):
                    nls.append(pos + filled)
                filled += k
            if eof:
                end = filled  # a last line without a newline is a line too
                carry = b""
            else:
                end = int(nls[-1][-1]) + 1
                carry = buf[end:filled].tobytes()
            if end == 0:
                break
            nl = np.concatenate(nls) if nls else np.empty(0, dtype=np.int64)
            chunk = _split(buf[:end], line_no, nl)
            line_no += len(chunk.lines)
            size = min(2 * size, chunk_bytes)
            yield chunk
    if damage is not None:
        raise DamagedStream(path, line_no, damage) from damage


def read_all_bytes(path: str | Path, *, damage: list[BaseException] | None = None) -> bytes:
    """Whole decompressed content (small files only: account files, batch files, LiteLLM exports).

    A compressed file that ends in damage gives every byte that can still be decoded (:func:`open_binary`);
    the error is appended to ``damage`` if given (the caller reports it once it has used the bytes),
    else raised as :class:`DamagedStream`.
    """
    parts: list[bytes] = []
    with open_binary(path) as f:
        try:
            while block := f.read(_READ_BYTES):
                parts.append(block)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            data = b"".join(parts)
            if damage is None:
                raise DamagedStream(path, data.count(b"\n") + 1, e) from e
            damage.append(e)
            return data
    return b"".join(parts)
