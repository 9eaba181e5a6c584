"""The example programs run as a user would run them: in their own process."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

CAT = Path(__file__).resolve().parent.parent / "examples" / "cat.py"


def run_cat(
    *args: Path, stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, str(CAT), *map(str, args)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=60,
        check=False,
    )


def two_files(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """One file with every byte value, one of several 64 KiB chunks and a tail."""
    every_byte = bytes(range(256)) * 3
    large = random.Random(1).randbytes(5 * 64 * 1024 + 12345)
    a = tmp_path / "every-byte.bin"
    b = tmp_path / "large.bin"
    a.write_bytes(every_byte)
    b.write_bytes(large)
    return a, b, every_byte + large


def test_cat_concatenates_files(tmp_path: Path) -> None:
    a, b, expected = two_files(tmp_path)
    done = run_cat(a, b)
    assert done.stderr == b""
    assert done.returncode == 0
    assert done.stdout == expected


def test_cat_writes_to_a_regular_file(tmp_path: Path) -> None:
    a, b, expected = two_files(tmp_path)
    out = tmp_path / "out.bin"
    with out.open("wb") as f:
        done = run_cat(b, a, b, stdout=f.fileno())
    assert done.stderr == b""
    assert done.returncode == 0
    large = b.read_bytes()
    assert out.read_bytes() == large + a.read_bytes() + large
    assert len(expected) < out.stat().st_size


def test_cat_reports_a_missing_file_and_goes_on(tmp_path: Path) -> None:
    a, b, expected = two_files(tmp_path)
    missing = tmp_path / "missing.txt"
    done = run_cat(a, missing, b)
    assert done.returncode == 1
    assert done.stderr.decode() == f"cat: {missing}: No such file or directory\n"
    assert done.stdout == expected

    done = run_cat(missing)
    assert done.returncode == 1
    assert done.stderr.decode() == f"cat: {missing}: No such file or directory\n"
    assert done.stdout == b""


COPY_FILE = Path(__file__).resolve().parent.parent / "examples" / "copy_file.py"


def test_copy_file_copies_binary_and_text(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    data = random.Random(2).randbytes(3 * 256 * 1024 + 4321)
    source.write_bytes(data)
    text = tmp_path / "source.txt"
    text.write_bytes("line €\r\nnext\rlast".encode() * 5000)
    for src, dest, extra in (
        (source, tmp_path / "copy.bin", []),
        (text, tmp_path / "copy.txt", ["--text"]),
    ):
        done = subprocess.run(
            [sys.executable, str(COPY_FILE), str(src), str(dest), *extra],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.stderr == b""
        assert done.returncode == 0
        assert dest.read_bytes() == src.read_bytes()

    missing = tmp_path / "missing.bin"
    done = subprocess.run(
        [sys.executable, str(COPY_FILE), str(missing), str(tmp_path / "out")],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.decode() == f"copy_file: {missing}: No such file or directory\n"


ECHO_SERVER = Path(__file__).resolve().parent.parent / "examples" / "echo_server.py"


def test_echo_server_echoes_concurrent_clients_and_stops_on_sigterm() -> None:
    import select
    import signal
    import socket
    import threading

    server = subprocess.Popen(
        [sys.executable, str(ECHO_SERVER), "--host", "127.0.0.1", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert server.stdout is not None
    try:
        ready, _, _ = select.select([server.stdout], [], [], 30)
        assert ready, "the server did not start"
        line = server.stdout.readline().decode()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])

        def client(seed: int, echoed: list[bytes]) -> None:
            data = random.Random(seed).randbytes(seed * 50_000 + 1)
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                # Send from another thread: the echo comes back while we send.
                sender = threading.Thread(target=sock.sendall, args=(data,))
                sender.start()
                got = bytearray()
                while len(got) < len(data):
                    chunk = sock.recv(65536)
                    assert chunk
                    got += chunk
                sender.join()
                sock.shutdown(socket.SHUT_WR)
                assert sock.recv(1) == b""  # the server closes after our EOF
            echoed.append(bytes(got) if got == data else b"mismatch")

        echoed: list[bytes] = []
        clients = [threading.Thread(target=client, args=(i, echoed)) for i in range(1, 9)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(60)
        assert len(echoed) == 8
        assert b"mismatch" not in echoed

        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
        assert err == b""
        assert server.returncode == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
