"""probe.py tcp|udp HOST PORT COUNT TIMEOUT INTERVAL [SOURCE_PORT]: opens COUNT new connections (or sends
COUNT datagrams from fresh connected sockets, so ICMP errors surface) and prints a JSON list of answers, 'refused' or 'timeout'.
With SOURCE_PORT every socket is bound to it: the datagrams are one flow for conntrack."""
import json
import socket
import sys
import time

proto, host, port, count, timeout, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
source_port = int(sys.argv[7]) if len(sys.argv) > 7 else 0
family = socket.AF_INET6 if ":" in host else socket.AF_INET
results = []
for _ in range(count):
    try:
        if proto == "tcp":
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect((host, port))
                results.append(sock.recv(256).decode().strip())
        else:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.settimeout(timeout)
                if source_port:
                    sock.bind(("", source_port))
                sock.connect((host, port))
                sock.send(b"ping")
                results.append(sock.recv(256).decode().strip())
    except ConnectionRefusedError:
        results.append("refused")
    except (socket.timeout, TimeoutError):
        results.append("timeout")
    except OSError as error:
        results.append(f"error {error.errno}")
    if interval:
        time.sleep(interval)
print(json.dumps(results))
