"""sd_notify without a dependency: READY=1 at start, WATCHDOG=1 from the inference loop."""
import os
import socket


def notify(state):
    """Send `state` to systemd when run under it (NOTIFY_SOCKET set); a no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(state.encode(), address)
    return True
