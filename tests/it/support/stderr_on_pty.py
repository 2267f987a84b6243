"""Runs a command with its stderr on a pseudo-terminal, as on an interactive terminal, while its
stdin and stdout stay ours; copies what the terminal shows to our stderr and exits with the
command's status. For tests of what a program draws only on a terminal (a spinner).

Usage: python3 stderr_on_pty.py PROGRAM [ARG...]
"""

import os
import pty
import subprocess
import sys

master, terminal = pty.openpty()
child = subprocess.Popen(sys.argv[1:], stderr=terminal)
os.close(terminal)
while True:
    try:
        shown = os.read(master, 4096)
    except OSError:
        # EIO: the command is gone and nothing holds the terminal any more.
        break
    if not shown:
        break
    sys.stderr.buffer.write(shown)
    sys.stderr.buffer.flush()
sys.exit(child.wait())
