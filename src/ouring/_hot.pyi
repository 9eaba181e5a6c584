# The C-API hot path (native/hot.c).
from collections.abc import Callable
from typing import Any, Final

MAX_RW: Final[int]
CREATED: Final[int]
PENDING: Final[int]
SUBMITTED: Final[int]
CANCELLING: Final[int]
DONE: Final[int]
LEAKED: Final[int]
CALLER: Final[int]
RING: Final[int]
CLOSED: Final[int]

class Lease:
    """One buffer lent to the kernel: a strong reference and a buffer export
    of ``obj``, and its range in the process-wide lease table, until
    ``release()``."""

    @property
    def obj(self) -> Any: ...
    @property
    def ptr(self) -> int: ...
    @property
    def length(self) -> int: ...
    def __init__(self, obj: Any, writable: bool, /) -> None: ...
    def release(self) -> None: ...

class Operation:
    """An SQE image and a lifecycle, as C fields."""

    fd: int
    addr: int
    length: int
    offset: int
    op_flags: int
    sqe_flags: int
    ioprio: int
    buf_index: int
    file_index: int
    cqe_flags: int
    user_data: int
    state: int
    res: int
    cancel_by: int
    waiter: object
    abandoned: bool
    def __init__(self, fd: int, addr: int, length: int, offset: int, op_flags: int, /) -> None: ...
    def cancelled(self) -> bool: ...

class BufferOperation(Operation):
    """An operation on one lent caller buffer."""

    @property
    def buffer(self) -> Any: ...
    def release(self) -> None: ...
    def result(self) -> tuple[Any, int]: ...

class FileOperation(BufferOperation):
    def __init__(self, fd: Any, buf: Any, offset: int = -1) -> None: ...

class MessageOperation(BufferOperation):
    def __init__(self, sock: Any, buf: Any, flags: int = 0) -> None: ...

class ReceiveOperation(BufferOperation):
    def __init__(self, sock: Any, size: int, flags: int = 0) -> None: ...
    def result(self) -> bytes: ...  # type: ignore[override]

class Group:
    """Wake ``waiter`` once, when ``count`` operations are DONE."""

    waiter: object
    @property
    def left(self) -> int: ...
    def __init__(self, count: int, waiter: object, /) -> None: ...

class RingCore:
    """The operation table of one ring and every state change of an operation."""

    executor: Any
    _supported: bytes
    _closed: bool
    _max_inflight: int
    _idle_callbacks: list[Callable[[], object]]
    _submitted: int
    _completed: int
    _cancelled: int
    _leaked: int
    _batches: int
    @property
    def _pending(self) -> list[Any]: ...
    @property
    def _inflight(self) -> dict[int, Any]: ...
    @property
    def _cancels(self) -> list[Any]: ...
    @property
    def _last_submit(self) -> int: ...
    def submit(self, op: Any, waiter: object = None, /) -> None: ...
    def cancel(self, op: Any, by: int = 1, /) -> bool: ...
    def abandon(self, op: Any, /) -> None: ...
    def _prepare(self) -> None: ...
    def _enter(self, wait_nr: int, timeout_ns: int, max_cqes: int, /) -> int: ...
    def _withdraw_pending(self, by: int, /) -> None: ...
    def _leak_inflight(self) -> list[Any]: ...
    def _open_core(self, ring: int, max_inflight: int, batch: int, thread: int, /) -> None: ...
    def _close_core(self) -> None: ...

def after_fork_in_child() -> None: ...
def set_helpers(
    unlendable: Any, in_use: Any, fileno_for: Any, file_offset: Any, u32: Any, buffer_error: Any, /
) -> None: ...
