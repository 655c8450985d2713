"""A pod's test server: TCP and UDP on port 8080 (IPv4 and IPv6), answering
'<pod name> <client address>' so tests see which pod answered and whether the client
address was preserved."""
import socket
import sys
import threading

NAME = sys.argv[1]
PORT = 8080


def answer(address):
    host = address[0]
    if host.startswith("::ffff:"):
        host = host[len("::ffff:"):]
    return f"{NAME} {host}\n".encode()


def tcp():
    server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("::", PORT))
    server.listen(128)
    while True:
        connection, address = server.accept()
        try:
            connection.sendall(answer(address))
        finally:
            connection.close()


def udp():
    server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind(("::", PORT))
    while True:
        _, address = server.recvfrom(2048)
        server.sendto(answer(address), address)


threading.Thread(target=udp, daemon=True).start()
tcp()
