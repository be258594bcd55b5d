"""sd_notify without a dependency: READY=1 at start, WATCHDOG=1 from the inference loop."""
import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state):
    """Send `state` to systemd when run under it (NOTIFY_SOCKET set); a no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:  # systemd away or restarting: never a reason for a caller (the loop) to die
        log.warning("could not notify systemd", extra={"fields": {"state": state, "error": exc}})
        return False
    return True
