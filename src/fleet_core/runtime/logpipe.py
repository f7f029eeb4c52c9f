"""The writer behind `tmux pipe-pane`: the pane's bytes to a log file, rotated at a cap.

    python -S logpipe.py PATH MAX_BYTES

Appends to PATH (0600), flushing every read; when the file passes MAX_BYTES it becomes
PATH.1 (the previous PATH.1 goes) and a new PATH starts. Only os and sys are imported: tmux
starts it for every agent. It ends when the pane's pipe closes (the session is gone).
"""

import os
import sys


def main(path: str, max_bytes: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    size = os.fstat(fd).st_size
    while True:
        try:
            data = os.read(0, 65536)
        except InterruptedError:
            continue
        if not data:
            break
        os.write(fd, data)
        size += len(data)
        if size >= max_bytes:
            os.close(fd)
            os.replace(path, path + ".1")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            size = 0
    os.close(fd)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        print("usage: python -S logpipe.py PATH MAX_BYTES", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
