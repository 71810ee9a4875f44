"""TCP relay from the host's loopback into the bare node's network namespace.

    python relay.py --netns /proc/PID/ns/net --listen 127.0.0.1:PORT --target 127.0.0.1:6443

The listening socket is opened in the host's namespace, then the process joins the node's
namespace, so every connection it makes to the target starts there: kubectl, helm and
`kubectl port-forward` on the host reach the apiserver without any host interface, route
or firewall rule. Stdlib only; one thread pair per connection (a handful: kubectl clients).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def join_netns(path: str) -> None:
    """setns(2) into the network namespace at `path` (os.setns needs Python 3.12)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                sock.shutdown(how)


def _serve(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError as exc:
        print(f"relay: cannot reach {target[0]}:{target[1]}: {exc}", file=sys.stderr)
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", required=True, help="e.g. /proc/PID/ns/net")
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT on the host")
    parser.add_argument("--target", type=_address, required=True, help="HOST:PORT in the netns")
    args = parser.parse_args(argv)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(args.listen)
    server.listen(64)
    join_netns(args.netns)
    print(f"relay: {args.listen[0]}:{args.listen[1]} -> {args.target[0]}:{args.target[1]}",
          flush=True)
    while True:
        client, _ = server.accept()
        threading.Thread(target=_serve, args=(client, args.target), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
