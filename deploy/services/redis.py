"""Redis from Debian's packages: the Feast online store and the streaming state store.

Append-only persistence is on because the streaming path stores applied Kafka offsets together
with the counters they produced; losing one without the other would double count after a restart.
"""

from __future__ import annotations

import shutil
import socket
import subprocess

from deploy.service import Service, ServiceError, apt_install
from taobao_assets.atomic_file import write_private


def _command(*words: str) -> bytes:
    """A Redis command in the protocol's array form: any bytes in a word (a space in a password) stay in it."""
    encoded = [w.encode() for w in words]
    return b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in encoded)


class Redis(Service):
    name = "redis"

    def port(self) -> int:
        return self.settings.redis_port

    def version(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            return "not installed"
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        return next((w.split("=")[1] for w in out.split() if w.startswith("v=")), out.strip())

    def install(self) -> None:
        if shutil.which("redis-server") is None:
            apt_install(["redis-server"])

    def prepare(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        conf = self.state / "redis.conf"
        # The password goes in a 0600 file rather than on the command line (visible in ps).
        write_private(
            conf,
            f"bind 127.0.0.1\nport {self.port()}\nrequirepass {self.settings.redis_password}\n"
            f"dir {self.state}\nappendonly yes\nappendfsync everysec\nsave \"\"\n"
            "protected-mode yes\ndaemonize no\n",
        )

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server not found; run install")
        return [binary, str(self.state / "redis.conf")]

    def _ping(self) -> bytes:
        """The server's replies to AUTH and PING, empty when it cannot be reached."""
        try:
            with socket.create_connection(("127.0.0.1", self.port()), timeout=1) as sock:
                sock.sendall(_command("AUTH", self.settings.redis_password) + _command("PING"))
                reply = b""
                while reply.count(b"\r\n") < 2 and len(reply) < 512:
                    chunk = sock.recv(512)
                    if not chunk:
                        break
                    reply += chunk
                return reply
        except OSError:
            return b""

    def healthy(self) -> bool:
        return b"+PONG" in self._ping()

    def loading(self) -> bool:
        # Redis accepts connections while it replays its append-only file and answers
        # "-LOADING Redis is loading the dataset in memory" until it is done.
        return b"-LOADING" in self._ping()
