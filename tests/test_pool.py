"""Buffer pools (``ouring._pool``, native/pool.c): buffers registered with a
ring, fixed reads and writes, and the ownership of a pool buffer: a released
buffer's slot is reused only after the final CQE of every operation holding
it. Real rings, files in tmp_path, pipes; nothing of io_uring is mocked."""

from __future__ import annotations

import errno
import gc
import mmap
import os
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

import pytest
import trio
import trio.testing
from ouring._native import lib

import ouring
from ouring._ops import Read, ReadFixed, Write, WriteFixed, fixed_or_plain

PAGE = mmap.PAGESIZE
ROOT = Path(__file__).resolve().parent.parent


def data_file(tmp_path: Path, size: int = 64 * 1024) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "data"
    path.write_bytes(data)
    return path, data


def mapped(address: int) -> bool:
    """Whether ``address`` lies in a mapping of this process (the kernel's answer)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start <= address < end:
                return True
    return False


# -- the pool and its buffers ----------------------------------------------------------------


async def test_a_pool_hands_out_page_aligned_writable_buffers() -> None:
    pool = ouring.BufferPool(3, 5000)
    assert (pool.count, pool.size, pool.stride, pool.available) == (3, 5000, 2 * PAGE, 3)
    bufs = [pool.get() for _ in range(3)]
    assert [b.index for b in bufs] == [0, 1, 2]
    assert all(b.address % PAGE == 0 and len(b) == 5000 and b.pool is pool for b in bufs)
    bufs[1][0:5] = b"hello"
    bufs[1][4999] = 7
    assert bytes(bufs[1][:5]) == b"hello"
    assert bufs[1][4999] == 7
    view = memoryview(bufs[1])
    assert (view.readonly, view.nbytes) == (False, 5000)
    assert bytes(bufs[0]) == bytes(5000)  # fresh memory is zeroed
    view.release()
    for b in bufs:
        b.release()
    assert pool.available == 3


async def test_read_fixed_and_write_fixed_move_the_bytes(tmp_path: Path) -> None:
    path, data = data_file(tmp_path)
    fd = os.open(path, os.O_RDWR)
    try:
        pool = ouring.BufferPool(2, 4096)
        with pool.get() as buf:
            got, n = await ouring.read_fixed(fd, buf, 8192)
            assert got is buf
            assert n == 4096
            assert bytes(buf) == data[8192:12288]
            buf[:3] = b"xyz"
            view, n = await ouring.write_fixed(fd, buf[:3], 100)  # a memoryview of a pool buffer
            assert n == 3
            assert bytes(view) == b"xyz"
            view.release()
        assert pool.available == 2
        assert path.read_bytes()[100:103] == b"xyz"
    finally:
        os.close(fd)


@pytest.mark.io_uring_only  # registration: the thread ring has none
async def test_a_registered_pool_s_buffers_get_the_fixed_opcodes(tmp_path: Path) -> None:
    ring = ouring.current_ring()
    pool = ouring.BufferPool(2, 4096)
    assert pool.registered
    assert pool.reason is None
    other = ouring.Ring(4)
    try:
        plain_pool = other.buffer_pool(1, 4096)  # registered with another ring
        with pool.get() as a, pool.get() as b, plain_pool.get() as c:
            op = fixed_or_plain(ring._fixed_pool, ReadFixed, Read, 0, b, 0)
            assert type(op) is ReadFixed
            assert op.opcode == lib.IORING_OP_READ_FIXED
            assert op.buf_index == b.index == 1
            op.release()
            op = fixed_or_plain(ring._fixed_pool, WriteFixed, Write, 0, a[10:20], 0)
            assert type(op) is WriteFixed
            assert op.buf_index == 0
            op.release()
            op = fixed_or_plain(ring._fixed_pool, ReadFixed, Read, 0, c, 0)
            assert type(op) is Read  # another ring's pool: plain memory here
            op.release()
    finally:
        other.close()


@pytest.mark.io_uring_only  # registration: the thread ring has none
async def test_read_many_reads_fixed_into_pool_buffers_beside_plain_ones(tmp_path: Path) -> None:
    path, data = data_file(tmp_path)
    fd = os.open(path, os.O_RDONLY)
    try:
        pool = ouring.BufferPool(4, 4096)
        bufs = [pool.get() for _ in range(4)]
        plain = bytearray(4096)
        requests = [(fd, b, i * 4096) for i, b in enumerate(bufs)] + [(fd, plain, 40960)]
        batches = ouring.current_ring().statistics().batches
        results = await ouring.read_many(requests)
        assert [n for _, n in results] == [4096] * 5
        assert [r[0] for r in results] == [*bufs, plain]
        for i, b in enumerate(bufs):
            assert bytes(b) == data[i * 4096 : (i + 1) * 4096]
        assert plain == data[40960:45056]
        assert ouring.current_ring().statistics().batches == batches + 1
    finally:
        os.close(fd)


# -- ownership ------------------------------------------------------------------------------


async def test_a_buffer_released_during_a_read_comes_back_only_after_the_cqe(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    pool = ouring.BufferPool(1, 64)
    buf = pool.get()
    result: list[tuple[object, int]] = []

    async def reader() -> None:
        result.append(await ouring.read_fixed(r, buf))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        buf.release()  # the kernel still owns it: the slot stays out
        assert pool.available == 0
        with pytest.raises(ouring.PoolExhaustedError, match="all 1 buffers"):
            pool.get()
        os.write(w, b"late bytes")
    assert result.pop()[1] == 10
    assert pool.available == 1  # the final CQE gave it back
    again = pool.get()
    assert again is not buf
    assert again.index == 0
    assert bytes(again[:10]) == b"late bytes"  # the read landed in the pool's memory
    with pytest.raises(BufferError, match="released"):
        memoryview(buf)  # the stale handle cannot reach the new owner's memory
    again.release()


async def test_a_cancelled_fixed_read_gives_its_buffer_back_only_after_the_final_cqe(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    with ouring.Ring(8) as ring:
        pool = ring.buffer_pool(1, 64)
        assert pool.registered
        buf = pool.get()
        op = fixed_or_plain(ring._fixed_pool, ReadFixed, Read, r, buf, -1)
        assert type(op) is ReadFixed
        ring.submit(op)
        ring.flush()
        buf.release()
        del buf
        assert pool.available == 0  # the operation holds it
        ring.cancel(op)
        assert pool.available == 0  # a cancel is a request: the kernel owns it until the CQE
        while op.state != ouring._ops.DONE:
            ring.wait(5)
        assert op.cancelled()
        assert op.res == -errno.ECANCELED
        assert pool.available == 1
    os.write(w, b"x")  # nothing of the cancelled read is armed
    assert os.read(r, 1) == b"x"


async def test_a_cancelled_read_fixed_raises_cancelled_with_the_buffer_untouched(
    pipe: tuple[int, int],
) -> None:
    r, _ = pipe
    pool = ouring.BufferPool(1, 16)
    with pool.get() as buf:
        buf[:] = b"0123456789abcdef"
        with trio.move_on_after(0.05) as scope:
            await ouring.read_fixed(r, buf)
        assert scope.cancelled_caught
        assert bytes(buf) == b"0123456789abcdef"
    assert pool.available == 1
    assert ouring.current_ring().statistics().inflight == 0


async def test_a_memoryview_keeps_a_released_buffer_out_of_the_pool() -> None:
    pool = ouring.BufferPool(1, 32)
    buf = pool.get()
    view = buf[:8]
    buf.release()
    assert pool.available == 0  # someone can still see the memory
    view[:4] = b"safe"
    view.release()
    assert pool.available == 1


async def test_a_dropped_buffer_returns_to_the_pool() -> None:
    pool = ouring.BufferPool(1, 32)
    buf = pool.get()
    del buf
    assert pool.available == 1


# -- exhaustion and bad input -----------------------------------------------------------------


async def test_get_on_an_empty_pool_raises_at_once_and_works_after_a_release() -> None:
    pool = ouring.BufferPool(2, 128)
    a, b = pool.get(), pool.get()
    with pytest.raises(ouring.PoolExhaustedError, match="release one or make a bigger pool"):
        pool.get()
    pool.release(a)
    c = pool.get()
    assert c.index == a.index
    for x in (b, c):
        x.release()


async def test_bad_input_raises_at_the_call_and_keeps_nothing(tmp_path: Path) -> None:
    path, _ = data_file(tmp_path)
    fd = os.open(path, os.O_RDONLY)
    try:
        for count, size in ((0, 4096), (1, 0), (1, 2**30 + 1), (16385, 1), (-1, 1)):
            with pytest.raises(ValueError, match="must be between"):
                ouring.BufferPool(count, size)
        with pytest.raises(TypeError):
            ouring.BufferPool(1.5, 4096)  # type: ignore[arg-type]
        pool = ouring.BufferPool(2, 4096)
        other = ouring.BufferPool(1, 4096)  # a second pool on the ring: plain buffers
        with pytest.raises(TypeError, match="BufferPool"):
            await ouring.read_fixed(fd, bytearray(4096), 0)
        with pytest.raises(TypeError, match="BufferPool"):
            await ouring.write_fixed(fd, memoryview(b"abc"), 0)
        buf = pool.get()
        with pytest.raises(ValueError, match="not a buffer of this pool"):
            other.release(buf)
        with pytest.raises(ValueError, match="not a buffer of this pool"):
            pool.release(bytearray(1))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="-1"):
            await ouring.read_fixed(fd, buf, -7)
        with pytest.raises(OSError, match="Bad file descriptor") as info:
            await ouring.read_fixed(-1, buf, 0)
        assert info.value.errno == errno.EBADF
        assert info.value.buffer is buf  # type: ignore[attr-defined]
        buf.release()
        with pytest.raises(ValueError, match="released already"):
            buf.release()
        with pytest.raises(BufferError, match="released back to its pool"):
            await ouring.read_fixed(fd, buf, 0)
        with pytest.raises(BufferError, match="released back to its pool"):
            await ouring.read(fd, buf, 0)
        assert pool.available == 2
        assert other.available == 1
        assert ouring.current_ring().statistics().inflight == 0
        pool.close()
        with pytest.raises(ValueError, match="closed"):
            pool.get()
    finally:
        os.close(fd)


# -- rings: one table each; closing; another ring; the thread fallback --------------------------


@pytest.mark.io_uring_only  # registration: the thread ring has none
async def test_one_registered_pool_per_ring_and_close_frees_the_table() -> None:
    async with ouring.open_ring() as ring:
        # A ring closed before its reaper task first ran leaves that task to
        # find its fd number reused by the next ring (trio's BusyResourceError,
        # a driver issue outside pools): let it start.
        await trio.lowlevel.checkpoint()
        first = ouring.BufferPool(2, 4096)
        assert first.ring is ring
        assert first.registered
        second = ouring.BufferPool(2, 4096)
        assert not second.registered
        assert "one per ring" in (second.reason or "")
        held = first.get()
        first.close()  # a buffer is out: stays registered until it is back or the ring closes
        assert first.registered
        held.release()
        first.close()  # idempotent
        assert first.registered  # unregistered at the ring's close
        third = ring.buffer_pool(1, 4096)
        assert not third.registered
    fresh = ouring.current_ring()
    with ouring.BufferPool(1, 4096) as pool:
        assert pool.registered
        assert pool.ring is fresh
    assert not pool.registered
    assert pool.reason == "the pool was closed"
    again = ouring.BufferPool(1, 4096)
    assert again.registered  # the ring's table is free again


@pytest.mark.io_uring_only  # registration: the thread ring has none
async def test_closing_the_ring_unregisters_the_pool_and_its_buffers_stay_valid(
    tmp_path: Path,
) -> None:
    path, data = data_file(tmp_path)
    fd = os.open(path, os.O_RDONLY)
    try:
        async with ouring.open_ring() as ring:
            pool = ouring.BufferPool(2, 4096)
            buf = pool.get()
            await ouring.read_fixed(fd, buf, 0)
        assert ring.closed
        assert not pool.registered
        assert "ring closed" in (pool.reason or "")
        assert bytes(buf) == data[:4096]  # still the pool's memory
        # On the run's ring it is a plain buffer: read_fixed reads plainly.
        _, n = await ouring.read_fixed(fd, buf, 4096)
        assert n == 4096
        assert bytes(buf) == data[4096:8192]
        spare = pool.get()  # an unregistered pool still hands out plain buffers
        results = await ouring.read_many([(fd, spare, 0)])
        assert results[0][1] == 4096
        assert bytes(spare) == data[:4096]
        buf.release()
        spare.release()
    finally:
        os.close(fd)


async def reader_expecting_ring_closed(
    fd: int, buf: ouring.PoolBuffer, errors: list[BaseException]
) -> None:
    try:
        await ouring.read_fixed(fd, buf)
    except ouring.RingClosedError as exc:
        errors.append(exc)


@pytest.mark.io_uring_only  # registration: the thread ring has none
async def test_a_ring_closing_with_a_fixed_read_in_flight_keeps_the_memory_until_its_cqe(
    pipe: tuple[int, int],
) -> None:
    r, _ = pipe
    errors: list[BaseException] = []
    async with ouring.open_ring() as ring:
        pool = ouring.BufferPool(1, 64)
        address = pool.address
        ref = weakref.ref(pool)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader_expecting_ring_closed, r, pool.get(), errors)
            await trio.testing.wait_all_tasks_blocked()
            assert pool.available == 0
            ring.close()  # cancels and reaps the read, then unregisters
    assert len(errors) == 1
    assert ring.statistics().leaked == 0
    errors.clear()  # the traceback holds the read's frame, and so the buffer
    del pool
    gc.collect()
    assert ref() is None  # nothing left holds the pool: its memory is unmapped
    assert not mapped(address)


async def test_threads_fallback_pools_are_plain_and_every_call_works(tmp_path: Path) -> None:
    path, data = data_file(tmp_path)
    fd = os.open(path, os.O_RDWR)
    try:
        async with ouring.open_ring(fallback="always-threads") as ring:
            pool = ouring.BufferPool(2, 4096)
            assert pool.ring is ring
            assert not pool.registered
            assert "thread fallback" in (pool.reason or "")
            a, b = pool.get(), pool.get()
            _, n = await ouring.read_fixed(fd, a, 0)
            assert n == 4096
            assert bytes(a) == data[:4096]
            results = await ouring.read_many([(fd, b, 4096)])
            assert results[0][1] == 4096
            assert bytes(b) == data[4096:8192]
            a[:2] = b"ok"
            view, n = await ouring.write_fixed(fd, a[:2], 0)
            view.release()
            assert n == 2
            assert path.read_bytes()[:2] == b"ok"
            with pytest.raises(TypeError, match="BufferPool"):
                await ouring.read_fixed(fd, bytearray(8), 0)
            a.release()
            b.release()
            assert pool.available == 2
    finally:
        os.close(fd)


@pytest.mark.io_uring_only  # registration: the thread ring has none
async def test_pools_leave_no_mapping_behind() -> None:
    addresses = []
    async with ouring.open_ring() as ring:
        for _ in range(20):
            pool = ouring.BufferPool(4, 64 * 1024)
            buf = pool.get()
            addresses.append(pool.address)
            del pool, buf
        gc.collect()
        # The ring keeps its registered pool (the first) until it closes.
        assert ring._fixed_pool is not None
        assert ring._fixed_pool.address == addresses[0]
        assert mapped(addresses[0])
        assert not any(mapped(a) for a in addresses[1:])
    gc.collect()
    assert not any(mapped(a) for a in addresses)


# -- features -----------------------------------------------------------------------------------


async def test_features_are_probed_at_setup_and_the_thread_ring_answers_too() -> None:
    with ouring.Ring(4) as ring:
        features = ring.features()
        assert features["io_uring"]
        assert features["fixed_buffers"]
        assert features["stat"] == ring.supports(lib.IORING_OP_STATX)
        assert features["ftruncate"] == ring.supports(lib.OURING_OP_FTRUNCATE)
        features["io_uring"] = False
        assert ring.features()["io_uring"]  # a copy
    async with ouring.open_ring(fallback="always-threads") as threads:
        emulated = threads.features()
        assert set(emulated) == set(features)
        assert not any(
            emulated[key]
            for key in ("io_uring", "fixed_buffers", "nodrop", "coop_taskrun", "defer_taskrun")
        )
        assert emulated["stat"]
        assert emulated["ftruncate"]
        assert emulated["mkdir"]


# -- RLIMIT_MEMLOCK and O_DIRECT --------------------------------------------------------------

MEMLOCK_PROGRAM = r"""
import ctypes, os, resource, sys
import trio, ouring

# Root's CAP_IPC_LOCK exempts it from RLIMIT_MEMLOCK: drop it (capset) first.
libc = ctypes.CDLL(None, use_errno=True)
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]
header, data = Header(0x20080522, 0), (Data * 2)()
assert libc.capget(ctypes.byref(header), data) == 0
data[0].effective &= ~(1 << 14)
data[0].permitted &= ~(1 << 14)
assert libc.capset(ctypes.byref(header), data) == 0
resource.setrlimit(resource.RLIMIT_MEMLOCK, (512 * 1024, 512 * 1024))

async def main():
    pool = ouring.BufferPool(64, 16384)  # 1 MiB: over the limit
    print(pool.registered)
    print(pool.reason)
    fd = os.open(sys.argv[1], os.O_RDONLY)
    with pool.get() as buf:
        _, n = await ouring.read_fixed(fd, buf, 0)
        results = await ouring.read_many([(fd, buf, 0)])
        print(n, results[0][1], bytes(buf[:4]).hex())
    small = ouring.BufferPool(4, 4096)
    print(small.registered)

trio.run(main)
"""


def test_a_low_memlock_limit_gives_plain_buffers_and_says_why(tmp_path: Path) -> None:
    path, data = data_file(tmp_path, 16384)
    env = {k: v for k, v in os.environ.items() if k != "OURING_FALLBACK"}
    done = subprocess.run(
        [sys.executable, "-c", MEMLOCK_PROGRAM, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    registered, reason, counts, small = done.stdout.splitlines()
    assert registered == "False"
    assert reason.startswith("RLIMIT_MEMLOCK (512 KiB) is too low to register 1024 KiB")
    assert counts == f"16384 16384 {data[:4].hex()}"
    assert small == "True"  # a pool under the limit registers


def direct_dir(tmp_path: Path) -> Path:
    """A directory whose filesystem takes O_DIRECT (tmpfs refuses it)."""
    for candidate in (tmp_path, Path("/var/tmp"), ROOT):
        try:
            fd = os.open(candidate / ".odirect-probe", os.O_CREAT | os.O_RDWR | os.O_DIRECT)
        except OSError:
            continue
        os.close(fd)
        os.unlink(candidate / ".odirect-probe")
        return candidate
    pytest.skip("no filesystem here takes O_DIRECT (tmpfs refuses it)")


async def test_o_direct_reads_and_writes_with_pool_buffers(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(dir=direct_dir(tmp_path)) as where:
        path = Path(where) / "direct"
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_DIRECT)
        try:
            pool = ouring.BufferPool(2, 2 * PAGE)
            data = os.urandom(2 * PAGE)
            with pool.get() as out, pool.get() as back:
                out[:] = data
                _, n = await ouring.write_fixed(fd, out, PAGE)
                assert n == 2 * PAGE
                _, n = await ouring.read_fixed(fd, back, PAGE)
                assert n == 2 * PAGE
                assert bytes(back) == data
                results = await ouring.read_many([(fd, back, 0)])
                assert results[0][1] == 2 * PAGE
                assert bytes(back) == bytes(PAGE) + data[:PAGE]
                # A plain bytearray is rarely aligned: the page-aligned pool is what makes
                # O_DIRECT work; a misaligned offset is the kernel's EINVAL, not a crash.
                with pytest.raises(OSError, match="Invalid argument") as info:
                    await ouring.read_fixed(fd, back, 1)
                assert info.value.errno == errno.EINVAL
        finally:
            os.close(fd)
