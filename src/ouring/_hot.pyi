# The C-API hot path (native/hot.c).
from typing import Any, Final

MAX_RW: Final[int]

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
    @classmethod
    def fresh(cls, size: int, /) -> Lease: ...
    def take(self, n: int, /) -> bytes: ...

def prep(
    ring: int,
    opcode: int,
    fd: int,
    addr: int,
    length: int,
    offset: int,
    op_flags: int,
    user_data: int,
    sqe_flags: int,
    /,
) -> int: ...
def set_error_factories(unlendable: Any, in_use: Any, /) -> None: ...
