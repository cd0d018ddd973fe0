"""Integration-test harness: starts the REAL posthorn daemon.

Each test (or module, for the corpus) gets its own temporary data dir, free
loopback ports and a `posthorn serve` process built with the sanitizers.
Stdout+stderr of the daemon go to <tmp>/serve.log; ASan/UBSan reports of the
daemon and of every CLI command the harness runs go to <tmp>/san/. After
each test the harness stops the daemon with SIGTERM and fails the test when
the daemon died on its own, did not exit 0, or left a sanitizer report.

Environment:
  POSTHORN_BIN  the binary under test (scripts/run-tests sets it); default
                build/asan/posthorn, then build/posthorn.
"""
import base64
import json
import os
import poplib
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Slow under ASan: be generous with every wait.
START_TIMEOUT = float(os.environ.get("POSTHORN_START_TIMEOUT", "60"))
STOP_TIMEOUT = 60.0
DELIVERY_TIMEOUT = float(os.environ.get("POSTHORN_DELIVERY_TIMEOUT", "30"))

QUEUE_ID_RE = re.compile(rb"\b[0-9A-HJKMNP-TV-Z]{16}\b")

# A sanitizer report that reached stderr instead of the log_path file.
SAN_MARKERS = re.compile(r"runtime error: |ERROR: AddressSanitizer|ERROR: LeakSanitizer|"
                         r"SUMMARY: (Address|UndefinedBehavior|Leak)Sanitizer|WARNING: ThreadSanitizer")

SAN_BASE = {
    "ASAN_OPTIONS": "halt_on_error=1:detect_leaks=1:abort_on_error=1:print_stacktrace=1",
    "UBSAN_OPTIONS": "halt_on_error=1:abort_on_error=1:print_stacktrace=1",
}


def posthorn_bin():
    b = os.environ.get("POSTHORN_BIN")
    if b:
        return str(Path(b).resolve())
    for cand in (REPO / "build/asan/posthorn", REPO / "build/posthorn"):
        if cand.exists():
            return str(cand)
    pytest.exit("POSTHORN_BIN is not set and no build/asan/posthorn or build/posthorn exists", 2)


# dns_server for servers that have no DNS of their own: a closed port on
# loopback, so no test ever queries the machine's resolver.
DEAD_DNS = "127.0.0.1@1"
_key_cache = {}


def binary_has_key(binary, key):
    """Does this posthorn build know the configuration key? (Keys are
    added by releases; unknown keys stop the server.)"""
    k = (binary, key)
    if k not in _key_cache:
        try:
            _key_cache[k] = key.encode() + b"\0" in Path(binary).read_bytes()
        except OSError:
            _key_cache[k] = False
    return _key_cache[k]


def corpus_dir():
    for cand in (REPO.parent / "shared/corpus", Path("/work/shared/corpus")):
        if (cand / "eml").is_dir():
            return cand
    return None


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_ports(n):
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return list(ports)


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(pred, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            return v
        time.sleep(interval)


def to_wire(raw: bytes) -> bytes:
    """Bare LF and lone CR become CRLF; the result ends with CRLF."""
    out = re.sub(rb"\r\n|\r|\n", b"\r\n", raw)
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


def strip_mbox_from(raw: bytes) -> bytes:
    """Drop a leading mbox envelope line ("From sender date"), but not a
    real From header written as "From  :" (RFC 822 allowed space before
    the colon)."""
    if raw.startswith(b"From "):
        first = re.split(rb"\r\n|\r|\n", raw, maxsplit=1)[0]
        if not re.match(rb"From[ \t]*:", first):
            m = re.search(rb"\r\n|\r|\n", raw)
            return raw[m.end():] if m else b""
    return raw


def split_trace(stored: bytes, sent: bytes):
    """stored must be <trace header fields> + sent. Returns the list of
    trace field names (lower case) or raises AssertionError."""
    assert stored.endswith(sent), (
        "stored message does not end with the bytes sent "
        f"(stored {len(stored)} bytes, sent {len(sent)} bytes; first difference "
        f"from the end at {first_diff_from_end(stored, sent)})")
    prefix = stored[: len(stored) - len(sent)]
    names = []
    for line in prefix.split(b"\r\n")[:-1] if prefix else []:
        if line[:1] in (b" ", b"\t"):
            assert names, f"continuation line before any trace field: {line!r}"
            continue
        m = re.match(rb"([A-Za-z-]+):", line)
        assert m, f"prefix line is not a header field: {line!r}"
        names.append(m.group(1).decode().lower())
    assert prefix == b"" or prefix.endswith(b"\r\n"), f"prefix does not end in CRLF: {prefix[-40:]!r}"
    return names


def first_diff_from_end(a: bytes, b: bytes):
    n = min(len(a), len(b))
    for i in range(1, n + 1):
        if a[-i] != b[-i]:
            return f"-{i}: stored {a[-i-20:len(a)-i+20]!r} vs sent {b[-i-20:len(b)-i+20]!r}"
    return "none"


def unfold_headers(msg: bytes):
    """Header block of a CRLF message as a list of (name_lower, value) with
    folding removed."""
    head = msg.split(b"\r\n\r\n", 1)[0]
    fields = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1] += b" " + line.strip()
        else:
            k, _, v = line.partition(b":")
            fields.append([k.strip().lower().decode("latin-1"), v.strip()])
    return [(k, v) for k, v in fields]


class Server:
    """One posthorn daemon in its own data dir."""

    def __init__(self, root: Path, conf_extra: str = "", write_conf: bool = True):
        self.root = root
        self.data = root / "data"
        self.san = root / "san"
        self.log_path = root / "serve.log"
        self.data.mkdir(parents=True, exist_ok=True)
        self.san.mkdir(exist_ok=True)
        self.bin = posthorn_bin()
        self.smtp_host = "127.0.0.1"
        self.smtp_port, self.sub_port, self.pop3_port = free_ports(3)
        self.proc = None
        self.logf = None
        self.expected_exit = True  # no daemon yet
        self._domain = None
        self._postmaster_pw = None
        self.starts = 0
        self.log_offset = 0  # check_health looks at serve.log from here on
        if write_conf:
            self.write_conf(conf_extra)

    # ---- configuration -------------------------------------------------
    def base_conf(self, extra=""):
        """The harness's keys, minus those that extra sets itself (a key set
        twice is an error). smtp_listen in extra moves the SMTP listener
        (e.g. a second server as a remote MX on 127.0.0.5:relay_port)."""
        given = set(re.findall(r"(?m)^[ \t]*([A-Za-z0-9_]+)[ \t]*=", extra))
        m = re.search(r"(?m)^[ \t]*smtp_listen[ \t]*=[ \t]*([0-9.]+):([0-9]+)", extra)
        if m:
            self.smtp_host, self.smtp_port = m.group(1), int(m.group(2))
        keys = [
            ("smtp_listen", f"127.0.0.1:{self.smtp_port}"),
            ("submission_listen", f"127.0.0.1:{self.sub_port}"),
            ("pop3_listen", f"127.0.0.1:{self.pop3_port}"),
            ("router_scan_interval", "1s"),
        ]
        if binary_has_key(self.bin, "dns_server"):
            # Never the machine's resolver: a test that wants DNS starts
            # its own (mailnet fixture); every other remote domain fails
            # to resolve at once on a dead loopback port and stays queued.
            keys.append(("dns_server", DEAD_DNS))
        out = "# written by tests/integration/conftest.py\n"
        for k, v in keys:
            if k not in given:
                out += f"{k} = {v}\n"
        return out

    def write_conf(self, extra=""):
        (self.data / "posthorn.conf").write_text(self.base_conf(extra) + extra)

    def env(self):
        env = dict(os.environ)
        asan = env.get("ASAN_OPTIONS") or SAN_BASE["ASAN_OPTIONS"]
        ubsan = env.get("UBSAN_OPTIONS") or SAN_BASE["UBSAN_OPTIONS"]
        env["ASAN_OPTIONS"] = f"{asan}:log_path={self.san}/asan"
        env["UBSAN_OPTIONS"] = f"{ubsan}:log_path={self.san}/ubsan"
        env.pop("POSTHORN_DATA", None)
        return env

    # ---- life cycle ----------------------------------------------------
    def start(self, wait=True, wrap=()):
        """Starts `posthorn serve` (behind the command prefix wrap, e.g.
        unshare -n) and by default waits until all three ports accept."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.logf = open(self.log_path, "ab")
        self.logf.write(f"\n===== start #{self.starts + 1} =====\n".encode())
        self.logf.flush()
        self.proc = subprocess.Popen(
            [*wrap, self.bin, "serve", "--data", str(self.data)],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
            env=self.env(), cwd=str(self.root))
        self.starts += 1
        self.expected_exit = False
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self):
        deadline = time.monotonic() + START_TIMEOUT
        for host, port in ((self.smtp_host, self.smtp_port), ("127.0.0.1", self.sub_port),
                           ("127.0.0.1", self.pop3_port)):
            while not port_open(port, host):
                if self.proc.poll() is not None:
                    self.expected_exit = True
                    pytest.fail(f"posthorn serve exited with {self.proc.returncode} during start\n" + self.log_text())
                if time.monotonic() > deadline:
                    pytest.fail(f"posthorn serve did not listen on {port} within {START_TIMEOUT}s\n" + self.log_text())
                time.sleep(0.05)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, expect_code=0):
        """SIGTERM, wait, assert the exit code."""
        if self.proc is None or self.proc.poll() is not None and self.expected_exit:
            return self.proc.returncode if self.proc else None
        self.expected_exit = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"posthorn did not exit within {STOP_TIMEOUT}s of SIGTERM\n" + self.log_text())
        self.logf.close()
        if expect_code is not None:
            assert rc == expect_code, f"posthorn exited {rc} after SIGTERM, want {expect_code}\n" + self.log_text()
        return rc

    def kill9(self):
        self.expected_exit = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.logf.close()

    def restart(self):
        self.stop()
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # ---- diagnostics ---------------------------------------------------
    def log_text(self, limit=20000):
        try:
            t = self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            t = ""
        if len(t) > limit:
            t = "...\n" + t[-limit:]
        return "----- serve.log -----\n" + t + self.san_text()

    def san_reports(self):
        return sorted(p for p in self.san.iterdir() if p.is_file()) if self.san.exists() else []

    def san_text(self):
        out = ""
        for p in self.san_reports():
            out += f"\n----- {p.name} -----\n" + p.read_text(errors="replace")[:20000]
        return out

    def check_health(self):
        """Called after each test: a daemon that died on its own or any
        sanitizer report fails the test."""
        problems = []
        if self.proc is not None and not self.expected_exit and self.proc.poll() is not None:
            problems.append(f"posthorn died unexpectedly (exit {self.proc.returncode})")
        if self.san_reports():
            problems.append("sanitizer report(s): " + ", ".join(p.name for p in self.san_reports()))
        try:
            log = self.log_path.read_bytes()[self.log_offset:].decode(errors="replace")
        except OSError:
            log = ""
        m = SAN_MARKERS.search(log)
        if m:
            problems.append(f"sanitizer report in serve.log: {log[max(0, m.start() - 200):m.start() + 300]!r}")
        return problems

    def revive(self):
        """After a failure was reported: set old sanitizer reports and log
        aside and start again on the same data (module-scoped servers)."""
        if self.alive():
            return
        old = self.root / "san-seen"
        old.mkdir(exist_ok=True)
        for p in self.san_reports():
            os.rename(p, old / p.name)
        try:
            self.log_offset = self.log_path.stat().st_size
        except OSError:
            self.log_offset = 0
        self.start()

    def _dead_fail(self, what):
        if self.proc is not None and not self.alive() and not self.expected_exit:
            pytest.fail(f"posthorn died (exit {self.proc.returncode}) while waiting for {what}\n" + self.log_text())

    # ---- CLI -----------------------------------------------------------
    def cli(self, *args, input=None, check=False, timeout=60, prog=None, env_extra=None):
        """Runs `posthorn --data DATA ARGS...` (or PROG ARGS... when prog is
        given, e.g. a symlink named sendmail)."""
        cmd = [prog, *args] if prog else [self.bin, "--data", str(self.data), *args]
        env = self.env()
        env.update(env_extra or {})
        r = subprocess.run(cmd, input=input, capture_output=True, env=env,
                           timeout=timeout, cwd=str(self.root))
        err = r.stderr.decode(errors="replace")
        if SAN_MARKERS.search(err) or r.returncode < 0:
            pytest.fail(f"posthorn {' '.join(args)}: exit {r.returncode}, sanitizer/crash:\n{err}\n" + self.san_text())
        if check:
            assert r.returncode == 0, (
                f"{' '.join(args)} exited {r.returncode}\nstdout: {r.stdout!r}\nstderr: {r.stderr!r}")
        return r

    @property
    def domain(self):
        if self._domain is None:
            r = self.cli("domain", "list", "--json")
            dom = None
            if r.returncode == 0:
                try:
                    j = json.loads(r.stdout)
                    if isinstance(j, dict):
                        j = j.get("domains", j.get("items", [j]))
                    first = j[0]
                    if isinstance(first, dict):
                        dom = first.get("domain") or first.get("name")
                    else:
                        dom = first
                except (ValueError, IndexError, KeyError, TypeError):
                    dom = None
            if dom is None:
                r2 = self.cli("domain", "list")
                words = r2.stdout.decode().split()
                assert r2.returncode == 0 and words, (
                    f"cannot read the local domain: domain list --json -> {r.returncode} {r.stdout!r} {r.stderr!r}; "
                    f"domain list -> {r2.returncode} {r2.stdout!r} {r2.stderr!r}")
                dom = words[0]
            self._domain = dom
        return self._domain

    def addr(self, local):
        return local if "@" in local else f"{local}@{self.domain}"

    def add_user(self, addr, password, quota=None):
        addr = self.addr(addr)
        args = ["user", "add", addr, "--password-stdin"]
        if quota is not None:
            args += ["--quota", str(quota)]
        self.cli(*args, input=(password + "\n").encode(), check=True)
        return addr

    @property
    def postmaster_password(self):
        if self._postmaster_pw is None:
            pw = wait_until(lambda: parse_postmaster_password(self.log_path.read_bytes()), 10)
            if not pw:
                pytest.fail("no line with 'postmaster@' and 'password' in the first start's output\n"
                            + self.log_text())
            self._postmaster_pw = pw
        return self._postmaster_pw

    # ---- clients -------------------------------------------------------
    def smtp(self, ehlo=True, timeout=60):
        s = smtplib.SMTP(self.smtp_host, self.smtp_port, local_hostname="client.test", timeout=timeout)
        if ehlo:
            s.ehlo()
        return s

    def submission(self, user=None, password=None, timeout=60):
        s = smtplib.SMTP("127.0.0.1", self.sub_port, local_hostname="client.test", timeout=timeout)
        s.ehlo()
        if user is not None:
            s.login(self.addr(user), password)
        return s

    def pop3(self, user=None, password=None, timeout=60):
        p = poplib.POP3("127.0.0.1", self.pop3_port, timeout=timeout)
        if user is not None:
            p.user(self.addr(user))
            p.pass_(password)
        return p

    def raw(self, port=None, timeout=30):
        return RawClient(port or self.smtp_port, timeout)

    # ---- files -----------------------------------------------------------
    def maildir(self, user):
        a = self.addr(user)
        local, dom = a.rsplit("@", 1)
        return self.data / "mail" / dom.lower() / local.lower()

    def maildir_files(self, user):
        md = self.maildir(user)
        files = []
        for sub in ("new", "cur"):
            d = md / sub
            if d.is_dir():
                files += sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
        return files

    def wait_for_maildir(self, user, n, timeout=DELIVERY_TIMEOUT):
        """Waits until the user's Maildir holds at least n messages; returns
        the files (new/ and cur/). Fails with the log when it times out."""
        def ready():
            self._dead_fail(f"{n} messages for {user}")
            return len(self.maildir_files(user)) >= n
        wait_until(ready, timeout)
        files = self.maildir_files(user)
        if len(files) < n:
            pytest.fail(f"{self.addr(user)}: {len(files)} messages in Maildir after {timeout}s, want {n}\n"
                        + self.queue_listing() + self.log_text())
        return files

    def queue_dir(self, folder):
        return self.data / "queue" / folder

    def queue_files(self, folder):
        d = self.queue_dir(folder)
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.is_file())

    def queue_listing(self):
        out = "----- queue -----\n"
        q = self.data / "queue"
        if q.is_dir():
            for d in sorted(q.iterdir()):
                if d.is_dir():
                    out += f"{d.name}: {[p.name for p in d.iterdir()][:20]}\n"
        return out

    def wait_queue_empty(self, folder="pending", timeout=DELIVERY_TIMEOUT):
        def empty():
            self._dead_fail(f"queue/{folder} to drain")
            return not self.queue_files(folder)
        ok = wait_until(empty, timeout)
        if not ok:
            pytest.fail(f"queue/{folder} not empty after {timeout}s\n" + self.queue_listing() + self.log_text())

    def drop_pending(self, name, content: bytes):
        """Drops a file into queue/pending the way an administrator would
        (written elsewhere, then moved in)."""
        tmp = self.root / ("drop-" + name)
        tmp.write_bytes(content)
        os.rename(tmp, self.queue_dir("pending") / name)

    def events(self):
        p = self.data / "log" / "events.jsonl"
        if not p.exists():
            return []
        out = []
        for line in p.read_bytes().splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out


def ev_type(e):
    for k in ("event", "type", "ev", "kind"):
        if k in e:
            return e[k]
    return None


def parse_postmaster_password(out: bytes):
    for line in out.decode("utf-8", "replace").splitlines():
        if "postmaster@" in line and "password" in line.lower():
            words = line.split()
            if not words:
                continue
            pw = words[-1].strip("'\"`")
            if pw and not pw.endswith(":"):
                return pw
    return None


class RawClient:
    """A plain socket SMTP client for pipelining, BDAT and smuggling tests."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes):
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """One (possibly multi-line) reply: (code, [texts])."""
        texts = []
        while True:
            line = self.line()
            assert len(line) >= 3 and line[:3].isdigit(), f"not a reply line: {line!r}"
            texts.append(line[4:])
            if line[3:4] != b"-":
                return int(line[:3]), texts

    def cmd(self, c: bytes):
        self.send(c + b"\r\n")
        return self.reply()

    def nothing_pending(self, wait=1.0):
        """True when no further bytes arrive within `wait` seconds."""
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(30)
        self.buf += chunk
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def pop3_auth_plain(p: poplib.POP3, user, password):
    tok = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
    return p._shortcmd("AUTH PLAIN " + tok)


def retr_bytes(p: poplib.POP3, n):
    """RETR n as CRLF bytes (poplib un-stuffs dots and strips line ends)."""
    resp, lines, octets = p.retr(n)
    return b"".join(l + b"\r\n" for l in lines)


def make_message(subject="test", body="hello\r\n", frm="sender@client.test", to="rcpt@example.invalid",
                 extra_headers=(), msgid=None):
    hdr = [f"From: {frm}", f"To: {to}", f"Subject: {subject}",
           "Date: Thu, 03 Dec 2026 17:00:00 +0000"]
    if msgid:
        hdr.append(f"Message-ID: <{msgid}>")
    hdr += list(extra_headers)
    b = ("\r\n".join(hdr) + "\r\n\r\n").encode()
    b += body.encode() if isinstance(body, str) else body
    return b


# ---- fixtures --------------------------------------------------------------

def _stop_and_check(srv: Server):
    """Stops a still running daemon (SIGTERM, want exit 0) and returns every
    problem: died on its own, bad exit code, sanitizer reports."""
    problems = srv.check_health()
    if srv.alive():
        try:
            rc = srv.stop(expect_code=None)
            if rc != 0:
                problems.append(f"posthorn exited {rc} after SIGTERM (want 0)")
        except BaseException as e:  # noqa: BLE001
            problems.append(f"stop failed: {e}")
        problems += [p for p in srv.check_health() if p not in problems]
    return problems


def _finish(srv: Server, request=None):
    problems = _stop_and_check(srv)
    if problems:
        pytest.fail("; ".join(problems) + "\n" + srv.log_text(), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Right after a test body ran: a daemon that died on its own or left a
    sanitizer report fails that test (one failure, with the log), instead of
    a second error at teardown."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call":
        return
    item._posthorn_call_failed = rep.failed
    problems, logs = [], []
    for srv in getattr(item, "_posthorn_servers", []):
        p = srv.check_health()
        if p:
            problems += p
            logs.append(srv.log_text())
    if not problems:
        return
    text = "posthorn: " + "; ".join(problems) + "\n" + "\n".join(logs)
    if rep.passed:
        rep.outcome = "failed"
        rep.longrepr = text
    else:
        rep.sections.append(("posthorn daemon health", text))
    item._posthorn_call_failed = True


def _register(request, srv):
    lst = getattr(request.node, "_posthorn_servers", None)
    if lst is None:
        lst = request.node._posthorn_servers = []
    lst.append(srv)


@pytest.fixture
def make_server(tmp_path, request):
    """Factory: make_server(conf_extra="", start=True) -> Server. Servers it
    made are stopped (SIGTERM, exit 0 wanted) and checked after the test."""
    made = []

    def factory(conf_extra="", start=True, name=None):
        root = tmp_path / (name or f"srv{len(made)}")
        root.mkdir()
        srv = Server(root, conf_extra)
        made.append(srv)
        _register(request, srv)
        if start:
            srv.start()
        return srv

    yield factory
    errors = []
    for srv in made:
        problems = _stop_and_check(srv)
        if problems:
            errors.append("; ".join(problems) + "\n" + srv.log_text())
    if errors and not getattr(request.node, "_posthorn_call_failed", False):
        pytest.fail("\n\n".join(errors), pytrace=False)
    elif errors:
        # the test already failed; say it on stderr rather than count it twice
        sys.stderr.write("posthorn teardown problems (test already failed):\n" + "\n\n".join(errors)[:5000])


@pytest.fixture
def server(make_server):
    """A running daemon with default config (plus test ports)."""
    return make_server()


# ---- the outside world for remote delivery (tests/integration/mailnet.py) ----

@pytest.fixture
def mailnet(tmp_path, request):
    """A MailNet: a private unbound (declare records, then net.dns.start()),
    scripted SMTP sinks on 127.0.0.x:relay_port (net.sink(ip, ...)), and
    net.conf_lines(...) for posthorn.conf. A failing test gets the sinks'
    transcripts and unbound's log in its report."""
    from mailnet import MailNet
    net = MailNet(tmp_path / "net")
    request.node._posthorn_mailnet = net
    yield net
    net.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_call(item):
    outcome = yield
    net = getattr(item, "_posthorn_mailnet", None)
    if net is not None and outcome.excinfo is not None:
        try:
            item.add_report_section("call", "mailnet", net.describe())
        except Exception:  # noqa: BLE001
            pass
