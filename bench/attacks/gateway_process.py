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


def established(port):
    """Connections the gateway holds on its local `port` (ESTABLISHED in /proc/net/tcp and
    tcp6): what the server side still keeps open, whatever its clients have yet to read."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                next(rows)
                for row in rows:
                    fields = row.split()
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    count += local_port == port and fields[3] == "01"
        except OSError:
            pass
    return count
