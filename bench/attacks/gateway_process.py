"""What every attack script needs of the gateway's process: its resident memory, and
stopping one the script started. Python 3 standard library only."""

import subprocess


def rss_kib(pid):
    """The process's resident set size in KiB (0 when /proc does not say)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def stop(proc):
    """Terminates a gateway the script started, killing it if it does not exit in 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
