"""The systemd notify protocol (sd_notify(3)) without a systemd library.

Messages are `KEY=VALUE` lines in one datagram to the unix socket named by
$NOTIFY_SOCKET (a leading '@' means the abstract namespace). Without the
variable, every call is a no-op, so the daemon runs the same outside systemd.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

log = structlog.get_logger("sdnotify")


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # The watchdog applies to us only when no other pid was named.
        watched = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_interval_s: float | None = int(usec) / 1e6 if watched else None
        self.is_ready = False  # READY=1 sent: a reload may then say RELOADING=1 and READY=1 again

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, **fields: str | int) -> None:
        if not self._address:
            return
        message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto(message, self._address)
        except OSError as err:  # systemd gone or socket full: never a reason to stop monitoring
            log.warning("sd_notify failed", error=str(err))

    def ready(self, status: str) -> None:
        self.is_ready = True
        self.notify(READY=1, STATUS=status)

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (Type=notify-reload) tell this reload from an earlier one.
        self.notify(RELOADING=1, STATUS="reloading the config", MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def status(self, status: str) -> None:
        self.notify(STATUS=status.replace("\n", " "))

    def watchdog(self) -> None:
        self.notify(WATCHDOG=1)

    def stopping(self) -> None:
        self.notify(STOPPING=1, STATUS="stopping")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
