"""The outside world for remote-delivery tests, all on loopback.

- Dns: a real DNS server — Debian's `unbound`, run by the test as a plain
  subprocess (`unbound -d -c <our conf>`, no chroot, no remote control, no
  user switch, never the system service) on 127.0.0.1 and a free port. A
  test declares MX / A / AAAA / null-MX records first, then starts it.
  Everything outside the declared names is answered locally (NXDOMAIN):
  unbound never sends a query anywhere.
- Sink: a scripted SMTP server (threads) on 127.0.0.x:PORT or [::1]:PORT
  that records every connection and transaction and answers as told: 4xx or
  5xx per recipient and per attempt, a refused greeting, a dropped
  connection, a slow DATA, no 8BITMIME / PIPELINING advertised.
- MailNet: one relay port shared by every sink (posthorn's relay_port) on
  distinct 127.0.0.x addresses, so MX preference decides which one gets
  the mail; the DNS server; conf_lines() for posthorn.conf.
- Queue-file helpers: new_queue_id(), fingerprint() (the documented
  normalisation of mail/fingerprint.h), write_queue_file() and write_state()
  in the documented formats (queue/queue.h, queue/state.h), fast enough to
  write 20,000 files in a few seconds.
"""
import hashlib
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

UNBOUND = shutil.which("unbound") or ("/usr/sbin/unbound" if os.path.exists("/usr/sbin/unbound") else None)


# ---- DNS -------------------------------------------------------------------

def dns_query(name, qtype, port, server="127.0.0.1", timeout=1.0):
    """A minimal DNS query over UDP: returns (rcode, answer count)."""
    tid = random.randrange(65536)
    q = struct.pack(">HHHHHH", tid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, (server, port))
        data, _ = s.recvfrom(4096)
    finally:
        s.close()
    _, flags, _, an, _, _ = struct.unpack(">HHHHHH", data[:12])
    return flags & 0xF, an


def free_udp_tcp_port(host="127.0.0.1"):
    """A port free for both UDP and TCP on host."""
    for _ in range(200):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind((host, 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((host, port))
        except OSError:
            continue
        finally:
            u.close()
            t.close()
        return port
    raise RuntimeError("no free UDP+TCP port")


class Dns:
    """unbound on 127.0.0.1:<port> answering for the declared names.

        dns.mx("example.test", (10, "mx1.example.test"), (20, "mx2.example.test"))
        dns.a("mx1.example.test", "127.0.0.2")
        dns.aaaa("mx6.example.test", "::1")
        dns.null_mx("nomail.test")
        dns.start()                  # posthorn: dns_server = dns.server
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = None
        self.proc = None
        self.records = []  # (name, type, rdata)
        self.zones = {"test."}

    # ---- records -------------------------------------------------------
    @staticmethod
    def _fq(name):
        return name if name.endswith(".") else name + "."

    def _zone_for(self, name):
        tld = self._fq(name).rstrip(".").rsplit(".", 1)[-1] + "."
        self.zones.add(tld)

    def mx(self, domain, *prefs):
        """prefs: (preference, host) pairs."""
        self._zone_for(domain)
        for pref, host in prefs:
            self.records.append((self._fq(domain), "MX", f"{pref} {self._fq(host)}"))
        return self

    def null_mx(self, domain):
        """RFC 7505: "MX 0 ." — the domain accepts no mail."""
        self._zone_for(domain)
        self.records.append((self._fq(domain), "MX", "0 ."))
        return self

    def a(self, name, *ips):
        self._zone_for(name)
        for ip in ips:
            self.records.append((self._fq(name), "A", ip))
        return self

    def aaaa(self, name, *ips):
        self._zone_for(name)
        for ip in ips:
            self.records.append((self._fq(name), "AAAA", ip))
        return self

    # ---- life cycle ----------------------------------------------------
    @property
    def server(self):
        """The value for posthorn's dns_server."""
        return f"127.0.0.1@{self.port}"

    def conf_text(self):
        r = str(self.root)
        lines = [
            "# written by tests/integration/mailnet.py: a private unbound for one test",
            "server:",
            "    interface: 127.0.0.1",
            f"    port: {self.port}",
            "    do-ip4: yes",
            "    do-ip6: no",
            "    do-udp: yes",
            "    do-tcp: yes",
            '    chroot: ""',
            '    username: ""',
            f'    directory: "{r}"',
            f'    pidfile: "{r}/unbound.pid"',
            "    use-syslog: no",
            '    logfile: ""',
            "    verbosity: 1",
            "    log-queries: yes",
            "    do-not-query-localhost: no",
            "    access-control: 127.0.0.0/8 allow",
            '    module-config: "iterator"',
            "    num-threads: 1",
            "    so-reuseport: no",
            "    rrset-roundrobin: yes",
            "    cache-max-ttl: 1",
            "    cache-max-negative-ttl: 1",
            # Everything not declared below is answered here (NXDOMAIN):
            # this server never sends a query anywhere.
            '    local-zone: "." static',
        ]
        for z in sorted(self.zones):
            lines.append(f'    local-zone: "{z}" static')
        for name, typ, rdata in self.records:
            lines.append(f'    local-data: "{name} 1 IN {typ} {rdata}"')
        lines += ["remote-control:", "    control-enable: no", ""]
        return "\n".join(lines)

    def start(self, timeout=15):
        if UNBOUND is None:
            raise RuntimeError("unbound is not installed (scripts/install-deps installs it)")
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if self.port is None:
            self.port = free_udp_tcp_port()
        conf = self.root / "unbound.conf"
        conf.write_text(self.conf_text())
        self.logf = open(self.root / "unbound.log", "ab")
        self.proc = subprocess.Popen([UNBOUND, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT, cwd=str(self.root))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"unbound exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                rc, _ = dns_query("ready.probe.test", 1, self.port, timeout=0.3)
                if rc in (0, 3):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"unbound did not answer on 127.0.0.1:{self.port}:\n{self.log_text()}")
            time.sleep(0.05)

    def restart(self):
        """New records take effect: stop and start on the same port."""
        self.stop()
        return self.start()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.logf.close()

    def log_text(self):
        try:
            return (self.root / "unbound.log").read_text(errors="replace")[-5000:]
        except OSError:
            return ""


# ---- SMTP sink ---------------------------------------------------------------

DEFAULT_TEXT = {
    220: "sink ESMTP ready", 221: "2.0.0 bye", 250: "2.0.0 ok", 354: "go ahead",
    421: "4.3.2 service not available, closing", 450: "4.2.0 mailbox busy",
    451: "4.7.1 try again later", 452: "4.5.3 too many recipients", 500: "5.5.2 syntax error",
    550: "5.1.1 no such user here", 552: "5.3.4 message too big", 554: "5.7.1 rejected by policy",
}

DROP = "drop"  # a scripted "reply" that closes the connection without a word
STALL = "stall"  # a scripted "reply" that never comes (the connection hangs, then closes)
STALL_SECS = 30


def _reply_of(x):
    """A script item: 250, (550, "5.1.1 who?"), DROP or STALL."""
    if x in (DROP, STALL):
        return x
    if isinstance(x, int):
        return (x, DEFAULT_TEXT.get(x, "scripted reply"))
    return (int(x[0]), str(x[1]))


class Script:
    """A sequence of replies by attempt: the n-th use gets item n, the last
    item repeats."""

    def __init__(self, items):
        self.items = [_reply_of(i) for i in items]
        self.n = 0

    def next(self):
        r = self.items[min(self.n, len(self.items) - 1)]
        self.n += 1
        return r


class Transaction:
    def __init__(self, conn):
        self.conn = conn
        self.mail_from = None
        self.mail_params = ""
        self.rcpts = []         # (address, code)
        self.data = None        # bytes (dot-unstuffed, CRLF) when DATA was received
        self.data_code = None   # our reply to the end of DATA
        self.t_end = None

    @property
    def accepted(self):
        return [a for a, c in self.rcpts if 200 <= c < 300]

    @property
    def delivered(self):
        """Recipients for which this transaction completed (250 after DATA)."""
        if self.data_code is None or not 200 <= self.data_code < 300:
            return []
        return self.accepted

    def __repr__(self):
        return (f"<tx from={self.mail_from!r} rcpts={self.rcpts} data={len(self.data or b'')}B "
                f"code={self.data_code} via {self.conn.local}>")


class Connection:
    def __init__(self, peer, local):
        self.peer = peer
        self.local = local
        self.helo = None
        self.ehlo = None
        self.commands = []
        self.transactions = []
        self.violations = []   # protocol violations by the client
        self.t_start = time.time()
        self.t_end = None
        self.quit = False


class Sink:
    """A scripted SMTP server on (ip, port). Thread-safe records.

    Options: pipelining, eightbitmime, smtputf8, size (None = not advertised),
    esmtp (False: EHLO gets 502, only HELO works), delay_data (seconds
    before the reply to the end of DATA), banner_script (Script for the
    greeting per connection: e.g. [421] refuses every connection)."""

    def __init__(self, ip, port, name=None, pipelining=True, eightbitmime=True, smtputf8=False,
                 size=None, esmtp=True, delay_data=0.0, banner=None):
        self.ip, self.port = ip, port
        self.name = name or f"sink-{ip}"
        self.pipelining = pipelining
        self.eightbitmime = eightbitmime
        self.smtputf8 = smtputf8
        self.size = size
        self.esmtp = esmtp
        self.delay_data = delay_data
        self.banner = Script(banner) if banner else None
        self.rcpt_scripts = {}   # lower-case address -> Script
        self.rcpt_default = None  # Script for every other recipient
        self.data_script = None
        self.mail_script = None
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.connections = []
        self.rcpt_attempts = {}
        self.active = 0
        self.max_active = 0
        self.sock = None
        self.thread = None
        self.stopping = False
        self.errors = []

    # ---- scripting -----------------------------------------------------
    def script_rcpt(self, addr, *items):
        """Replies to RCPT TO:<addr> by attempt, e.g. (451, 250)."""
        self.rcpt_scripts[addr.lower()] = Script(items)
        return self

    def script_all_rcpts(self, *items):
        self.rcpt_default = Script(items)
        return self

    def script_data(self, *items):
        """Replies to the end of DATA by transaction: e.g. (451, 250), DROP."""
        self.data_script = Script(items)
        return self

    def script_mail(self, *items):
        self.mail_script = Script(items)
        return self

    # ---- life cycle ----------------------------------------------------
    def start(self):
        fam = socket.AF_INET6 if ":" in self.ip else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.ip, self.port))
        s.listen(128)
        s.settimeout(0.2)
        self.sock = s
        self.stopping = False
        self.thread = threading.Thread(target=self._accept_loop, name=self.name, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.stopping = True
        if self.thread:
            self.thread.join(5)
        if self.sock:
            self.sock.close()
            self.sock = None

    def _accept_loop(self):
        while not self.stopping:
            try:
                c, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c, peer), daemon=True).start()

    # ---- the session ---------------------------------------------------
    def _serve(self, c, peer):
        conn = Connection(peer, (self.ip, self.port))
        with self.lock:
            self.connections.append(conn)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        c.settimeout(60)
        buf = bytearray()

        def send(code, text, more=()):
            lines = [text, *more]
            out = b""
            for i, t in enumerate(lines):
                sep = "-" if i < len(lines) - 1 else " "
                out += f"{code}{sep}{t}\r\n".encode()
            c.sendall(out)

        def reply(r):
            if r == STALL:
                # say nothing until the client gives up (or STALL_SECS)
                c.settimeout(STALL_SECS)
                try:
                    c.recv(1)
                except (socket.timeout, OSError):
                    pass
                raise ConnectionAbortedError("scripted stall")
            if r == DROP:
                raise ConnectionAbortedError("scripted drop")
            send(*r)

        def readline():
            while b"\n" not in buf:
                chunk = c.recv(65536)
                if not chunk:
                    raise EOFError
                buf.extend(chunk)
            i = buf.index(b"\n")
            line = bytes(buf[:i + 1])
            del buf[:i + 1]
            return line

        def check_no_pipelining(cmd):
            # Without PIPELINING the client must wait for each reply
            # (RFC 5321 4.1.1): nothing may follow in the buffer.
            if not self.pipelining and buf:
                conn.violations.append(f"pipelined without PIPELINING after {cmd!r}: {bytes(buf[:60])!r}")

        tx = None
        try:
            greet = self.banner.next() if self.banner else (220, f"{self.name} ESMTP ready")
            reply(greet)
            if greet[0] != 220:
                # RFC 5321 3.1: a 554 greeting still takes QUIT; 421 closes
                if greet[0] == 421:
                    return
            while True:
                line = readline()
                cmd = line.rstrip(b"\r\n").decode("latin-1")
                conn.commands.append(cmd)
                verb = cmd.split(" ", 1)[0].upper()
                # Without PIPELINING nothing may follow any command; with it,
                # EHLO and DATA still end a group (RFC 2920 3.1).
                if not self.pipelining or verb in ("EHLO", "DATA"):
                    if buf:
                        conn.violations.append(f"command sent before the reply to {cmd!r}: {bytes(buf[:60])!r}")
                if verb == "EHLO":
                    if not self.esmtp:
                        send(502, "5.5.1 EHLO not implemented")
                        continue
                    conn.ehlo = cmd[5:]
                    ext = []
                    if self.pipelining:
                        ext.append("PIPELINING")
                    if self.eightbitmime:
                        ext.append("8BITMIME")
                    if self.smtputf8:
                        ext.append("SMTPUTF8")
                    if self.size is not None:
                        ext.append(f"SIZE {self.size}")
                    ext.append("ENHANCEDSTATUSCODES")
                    send(250, self.name, ext)
                elif verb == "HELO":
                    conn.helo = cmd[5:]
                    send(250, self.name)
                elif verb == "MAIL":
                    m = re.match(r"(?i)MAIL FROM:\s*<([^>]*)>(.*)", cmd)
                    if not m:
                        send(501, "5.5.4 syntax")
                        continue
                    r = self.mail_script.next() if self.mail_script else (250, "2.1.0 sender ok")
                    if r not in (DROP, STALL) and r[0] == 250:
                        tx = Transaction(conn)
                        tx.mail_from = m.group(1)
                        tx.mail_params = m.group(2).strip()
                        with self.lock:
                            conn.transactions.append(tx)
                    reply(r)
                elif verb == "RCPT":
                    m = re.match(r"(?i)RCPT TO:\s*<([^>]*)>", cmd)
                    if not m or tx is None:
                        send(503 if m else 501, "5.5.1 MAIL first" if m else "5.5.4 syntax")
                        continue
                    addr = m.group(1)
                    key = addr.lower()
                    with self.lock:
                        self.rcpt_attempts[key] = self.rcpt_attempts.get(key, 0) + 1
                    sc = self.rcpt_scripts.get(key) or self.rcpt_default
                    r = sc.next() if sc else (250, "2.1.5 recipient ok")
                    tx.rcpts.append((addr, 0 if r in (DROP, STALL) else r[0]))
                    reply(r)
                elif verb == "DATA":
                    if tx is None or not tx.accepted:
                        send(503 if tx is None else 554, "5.5.1 no valid recipients")
                        continue
                    send(354, "end with <CRLF>.<CRLF>")
                    data = bytearray()
                    while True:
                        l = readline()
                        if l in (b".\r\n", b".\n"):
                            break
                        if l.startswith(b"."):
                            l = l[1:]
                        data.extend(l)
                    tx.data = bytes(data)
                    check_no_pipelining("DATA end")
                    if self.delay_data:
                        time.sleep(self.delay_data)
                    r = self.data_script.next() if self.data_script else (250, "2.0.0 queued as SINK")
                    if r not in (DROP, STALL):
                        tx.data_code = r[0]
                        tx.t_end = time.time()
                    with self.cond:
                        self.cond.notify_all()
                    reply(r)
                    tx = None
                elif verb == "RSET":
                    tx = None
                    send(250, "2.0.0 reset")
                elif verb == "NOOP":
                    send(250, "2.0.0 ok")
                elif verb == "QUIT":
                    conn.quit = True
                    send(221, "2.0.0 bye")
                    return
                else:
                    send(502, "5.5.1 command not implemented")
        except (EOFError, ConnectionError, socket.timeout, OSError):
            pass
        except Exception as e:  # noqa: BLE001 — a sink bug must not hang the test
            self.errors.append(repr(e))
        finally:
            conn.t_end = time.time()
            try:
                c.close()
            except OSError:
                pass
            with self.cond:
                self.active -= 1
                self.cond.notify_all()

    # ---- records -------------------------------------------------------
    def transactions(self):
        with self.lock:
            return [t for conn in self.connections for t in conn.transactions]

    def completed(self):
        """Transactions that got a 2xx after DATA."""
        return [t for t in self.transactions() if t.delivered]

    def delivered_rcpts(self):
        """Every (recipient, message bytes) delivered, one entry per copy."""
        out = []
        for t in self.completed():
            for r in t.delivered:
                out.append((r, t.data))
        return out

    def delivered_count(self, rcpt=None):
        n = 0
        for r, _ in self.delivered_rcpts():
            if rcpt is None or r.lower() == rcpt.lower():
                n += 1
        return n

    def wait_delivered(self, n, timeout, rcpt=None):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                self.cond.release()
                try:
                    k = self.delivered_count(rcpt)
                finally:
                    self.cond.acquire()
                if k >= n or time.monotonic() > deadline:
                    return k
                self.cond.wait(0.1)

    def violations(self):
        with self.lock:
            return [v for conn in self.connections for v in conn.violations]

    def describe(self):
        with self.lock:
            conns = list(self.connections)
        out = [f"----- {self.name} ({self.ip}:{self.port}): {len(conns)} connections -----"]
        for c in conns[-30:]:
            out.append(f"conn from {c.peer}: {c.commands[:40]}")
            for t in c.transactions:
                out.append(f"   {t!r}")
        if self.errors:
            out.append(f"sink errors: {self.errors}")
        return "\n".join(out) + "\n"


# ---- the network ---------------------------------------------------------------

def free_port_everywhere(ips, tries=200):
    """A TCP port free on every address in ips (127.0.0.x, ::1)."""
    for _ in range(tries):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for ip in ips:
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            t = socket.socket(fam, socket.SOCK_STREAM)
            try:
                t.bind((ip, port))
            except OSError:
                ok = False
            finally:
                t.close()
            if not ok:
                break
        if ok:
            return port
    raise RuntimeError("no port free on every test address")


def ipv6_loopback_ok():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


class MailNet:
    """DNS + sinks sharing one relay port. Address plan (each test is free
    to use others): 127.0.0.1 is posthorn's own listeners; sinks and second
    servers on 127.0.0.2 ... 127.0.0.30 and ::1."""

    IPS = [f"127.0.0.{i}" for i in range(2, 31)]

    def __init__(self, root: Path):
        self.root = Path(root)
        self.dns = Dns(self.root / "dns")
        ips = list(self.IPS)
        if ipv6_loopback_ok():
            ips.append("::1")
        self.relay_port = free_port_everywhere(ips)
        self.sinks = []

    def sink(self, ip, start=True, **opts):
        s = Sink(ip, self.relay_port, **opts)
        self.sinks.append(s)
        if start:
            s.start()
        return s

    def conf_lines(self, **extra):
        """posthorn.conf lines pointing the MTA at this network; extra keys
        (retry_schedule="1s", ...) are added as given."""
        assert self.dns.port is not None, "start the DNS server (net.dns.start()) before writing the config"
        lines = [f"dns_server = {self.dns.server}", f"relay_port = {self.relay_port}"]
        for k, v in extra.items():
            lines.append(f"{k} = {v}")
        return "\n".join(lines) + "\n"

    def describe(self):
        return "".join(s.describe() for s in self.sinks) + "----- unbound -----\n" + self.dns.log_text()[-3000:]

    def close(self):
        for s in self.sinks:
            s.stop()
        self.dns.stop()


# ---- queue files (the documented formats) ----------------------------------------

B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_last_us = [0]
_id_lock = threading.Lock()


def new_queue_id(us=None):
    """16 chars: 10 of microsecond time + 6 random (queue/queue.h), strictly
    increasing within this process."""
    with _id_lock:
        if us is None:
            us = int(time.time() * 1_000_000)
        if us <= _last_us[0]:
            us = _last_us[0] + 1
        _last_us[0] = us
    head = ""
    v = us
    for _ in range(10):
        head = B32[v & 31] + head
        v >>= 5
    tail = "".join(random.choice(B32) for _ in range(6))
    return head + tail


def header_values(msg: bytes, name: str):
    """Raw values (everything after the colon, CR/LF removed, folding kept
    as is) of every header field `name` in msg, like mail/message.c."""
    head_end = msg.find(b"\r\n\r\n")
    head = msg[:head_end + 2] if head_end >= 0 else msg
    out = []
    fields = re.split(rb"\r?\n(?![ \t])", head)
    for f in fields:
        m = re.match(rb"([^:\s]+)[ \t]*:", f)
        if m and m.group(1).decode("latin-1").lower() == name.lower():
            v = f[f.index(b":") + 1:]
            out.append(v.replace(b"\r", b"").replace(b"\n", b""))
    return out


FINGERPRINT_BODY_MAX = 256 * 1024


def fingerprint(msg: bytes) -> str:
    """mail/fingerprint.h: SHA-256 over "S:" + each Subject value, then the
    body (after the header block, at most 256 KiB) with ASCII letters
    lower-cased and all whitespace removed; first 16 hex characters."""
    h = hashlib.sha256()
    for v in header_values(msg, "Subject"):
        h.update(b"S:" + v)
    i = msg.find(b"\r\n\r\n")
    body = msg[i + 4:] if i >= 0 else b""
    body = body[:FINGERPRINT_BODY_MAX]
    body = re.sub(rb"[ \t\r\n]", b"", body).lower()
    h.update(body)
    return h.hexdigest()[:16]


def queue_file_bytes(qid, mail_from, rcpts, msg: bytes, received=None, client_ip=None, helo=None,
                     auth_user=None, origin="submission", fp=None, body8=False):
    """A complete queue file (queue/queue.h): envelope, message, end marker."""
    if received is None:
        received = int(time.time())
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(received))
    env = ["posthorn-queue 1", f"id {qid}", f"received {received} {iso}", f"from <{mail_from}>"]
    env += [f"rcpt <{r}>" for r in rcpts]
    if client_ip:
        env.append(f"client-ip {client_ip}")
    if helo:
        env.append(f"helo {helo}")
    if auth_user:
        env.append(f"auth-user {auth_user}")
    env.append(f"origin {origin}")
    env.append(f"body {'8BITMIME' if body8 else '7BIT'}")
    env.append("smtputf8 no")
    env.append(f"fingerprint {fp or fingerprint(msg)}")
    assert msg.endswith(b"\r\n")
    return ("\n".join(env) + "\n\n").encode() + msg + f"@@posthorn-end body={len(msg)}\n".encode()


def write_queue_file(folder: Path, qid, mail_from, rcpts, msg: bytes, **kw):
    """Writes folder/<qid> the way an administrator would (temp name, then
    rename), without fsync: the server is stopped while tests do this."""
    tmp = folder / f".{qid}.writing"
    tmp.write_bytes(queue_file_bytes(qid, mail_from, rcpts, msg, **kw))
    os.rename(tmp, folder / qid)
    return folder / qid


def state_bytes(rcpt_states, first=None, last=None, next_attempt=None, attempts=1, warned=False):
    """queue/state.h: rcpt_states = [(addr, status, attempts, host, reply)]."""
    now = int(time.time())
    lines = ["posthorn-state 1",
             f"first-attempt {first if first is not None else now - 600}",
             f"last-attempt {last if last is not None else now - 60}",
             f"next-attempt {next_attempt if next_attempt is not None else now + 3600}",
             f"attempts {attempts}",
             f"warned {'yes' if warned else 'no'}"]
    for addr, status, n, host, reply in rcpt_states:
        s = f"rcpt <{addr}> {status} attempts={n}"
        if host:
            s += f" host={host}"
        if reply:
            s += f" reply={reply}"
        lines.append(s)
    return ("\n".join(lines) + "\n").encode()


def write_state(folder: Path, qid, rcpt_states, **kw):
    p = folder / f"{qid}.st"
    p.write_bytes(state_bytes(rcpt_states, **kw))
    return p
