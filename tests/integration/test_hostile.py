"""Regression tests for what a hostile review of issue 2 found: each test
names the finding it pins down."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import make_message, wait_until, ev_type

PW = "Hostile-pw-4242!"


def test_appended_eml_is_not_routed_half_written(server):
    """A .eml built with several appends (shell >>) must arrive whole."""
    alice = server.add_user("alice", PW)
    path = server.queue_dir("pending") / "m.eml"
    parts = [f"From: x@example.org\n", f"To: {alice}\n", "Subject: s\n", "\n", "body 1\n", "body 2\n"]
    for p in parts:
        with open(path, "a") as f:
            f.write(p)
        time.sleep(0.3)
    files = server.wait_for_maildir("alice", 1)
    data = files[0].read_bytes()
    assert b"body 1\r\nbody 2\r\n" in data and b"Subject: s" in data, data
    time.sleep(1)
    assert len(server.maildir_files("alice")) == 1
    assert not server.queue_files("lost+found"), server.queue_listing()


def test_eml_held_open_by_a_slow_writer_is_not_cut(server):
    """A writer that keeps the file open and pauses must not lose the rest."""
    alice = server.add_user("alice", PW)
    path = server.queue_dir("pending") / "slow.eml"
    with open(path, "wb") as f:
        f.write(f"From: x@example.org\nTo: {alice}\nSubject: s\n\nfirst part\n".encode())
        f.flush()
        time.sleep(4)
        f.write(b"second part\n" * 3)
    files = server.wait_for_maildir("alice", 1)
    data = files[0].read_bytes()
    assert data.count(b"second part") == 3, data
    assert not server.queue_files("lost+found")


def test_sighup_then_status_reads_valid_listener_addresses(server):
    server.signal(signal.SIGHUP)
    time.sleep(0.5)
    r = server.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)  # invalid UTF-8 or garbage would fail here
    assert f"127.0.0.1:{server.smtp_port}" in json.dumps(j)


def test_sighup_reopens_event_log(server):
    log = server.data / "log" / "events.jsonl"
    rotated = server.data / "log" / "events.jsonl.1"
    os.rename(log, rotated)
    server.signal(signal.SIGHUP)
    assert wait_until(log.exists, 5), "event log not reopened after SIGHUP"
    s = server.smtp()
    s.noop()
    s.quit()
    assert wait_until(lambda: b'"connect"' in log.read_bytes(), 5)


def test_slowloris_command_line_is_cut_off(make_server):
    """One byte every half second must not keep a command open past the
    command timeout (the read timeout alone restarts with every byte)."""
    srv = make_server("smtp_command_timeout = 2s\n")
    c = srv.raw()
    assert c.reply()[0] == 220
    t0 = time.monotonic()
    closed = False
    try:
        for ch in b"EHLO slow.example.org" * 4:
            c.send(bytes([ch]))
            time.sleep(0.5)
            if time.monotonic() - t0 > 8:
                break
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    try:
        code, _ = c.reply()
        assert code == 421
        closed = True
    except (EOFError, ConnectionResetError, socket.timeout):
        closed = True
    assert closed and time.monotonic() - t0 < 6, "slow command line was not cut off near the 2 s deadline"
    c.close()


def test_slowloris_data_is_cut_off(make_server):
    srv = make_server("smtp_data_timeout = 2s\n")
    alice = srv.add_user("alice", PW)
    c = srv.raw()
    c.reply()
    c.cmd(b"EHLO client.test")
    assert c.cmd(b"MAIL FROM:<a@client.test>")[0] == 250
    assert c.cmd(f"RCPT TO:<{alice}>".encode())[0] == 250
    assert c.cmd(b"DATA")[0] == 354
    t0 = time.monotonic()
    got = None
    try:
        while time.monotonic() - t0 < 10:
            c.send(b"x")
            time.sleep(0.5)
            if not c.nothing_pending(0.01):
                got = c.reply()
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    if got is None:
        try:
            got = c.reply()
        except (EOFError, ConnectionResetError, socket.timeout):
            got = (0, [])
    assert got[0] in (421, 0) and time.monotonic() - t0 < 6, got
    c.close()
    assert not srv.maildir_files("alice")


def test_sendmail_fullname_cannot_inject_headers(server):
    alice = server.add_user("alice", PW)
    r = server.cli("sendmail", "-F", "Name\nBcc: victim@example.com\nX-Injected: yes", alice,
                   input=b"Subject: inj\n\nbody\n")
    assert r.returncode != 0 and b"-F" in r.stderr
    r = server.cli("sendmail", "-F", 'Evil "Name" \\ x', "-f", "x@example.org", alice,
                   input=b"Subject: q\n\nbody\n", check=True)
    data = server.wait_for_maildir("alice", 1)[0].read_bytes()
    assert b'From: "Evil \\"Name\\" \\\\ x" <x@example.org>' in data, data
    assert b"X-Injected" not in data


def test_sendmail_obeys_size_and_line_limits(make_server):
    srv = make_server("max_message_size = 100K\n")
    alice = srv.add_user("alice", PW)
    r = srv.cli("sendmail", alice, input=b"Subject: big\n\n" + (b"a" * 70 + b"\n") * 3000)
    assert r.returncode != 0 and b"max_message_size" in r.stderr
    r = srv.cli("sendmail", alice, input=b"Subject: long\n\n" + b"b" * 5000 + b"\n")
    assert r.returncode != 0 and b"line 3" in r.stderr
    assert not srv.queue_files("pending")


def test_dropped_eml_over_size_limit_goes_to_lost_and_found(make_server):
    srv = make_server("max_message_size = 64K\n")
    alice = srv.add_user("alice", PW)
    srv.drop_pending("big.eml", f"From: x@example.org\nTo: {alice}\nSubject: b\n\n".encode()
                     + (b"z" * 70 + b"\n") * 2000)
    assert wait_until(lambda: srv.queue_files("lost+found"), 20), srv.queue_listing()
    assert not srv.maildir_files("alice")


def test_dropped_eml_with_too_many_recipients_is_not_cut_silently(server):
    alice = server.add_user("alice", PW)
    many = ", ".join(f"u{i}@example.invalid" for i in range(1500))
    server.drop_pending("many.eml", f"From: x@example.org\nTo: {many}, {alice}\nSubject: m\n\nb\n".encode())
    assert wait_until(lambda: server.queue_files("lost+found"), 20)
    evs = wait_until(lambda: [e for e in server.events() if ev_type(e) == "lost"], 5)
    assert evs and "1000 recipients" in json.dumps(evs), evs


def test_alias_loop_refused_at_rcpt(server):
    d = server.domain
    server.cli("alias", "add", f"loop1@{d}", f"loop2@{d}", check=True)
    server.cli("alias", "add", f"loop2@{d}", f"loop1@{d}", check=True)
    s = server.smtp()
    s.mail("a@client.test")
    code, msg = s.rcpt(f"loop1@{d}")
    assert code == 550 and msg.startswith(b"5.4.6"), (code, msg)
    s.quit()


@pytest.mark.parametrize("line", [
    "hostname = bad host name",
    "hostname = a/../b",
    "max_recipients = 0",
    "smtp_command_timeout = 0",
    "max_line_length = 10",
])
def test_config_values_that_disable_protection_are_errors(make_server, line):
    srv = make_server(line + "\n", start=False)
    r = subprocess.run([srv.bin, "serve", "--data", str(srv.data)], capture_output=True, timeout=30,
                       env=srv.env())
    assert r.returncode != 0
    assert b"posthorn.conf:" in r.stderr, r.stderr


def test_port_clash_on_first_start_keeps_the_password_for_later(make_server):
    srv = make_server(start=False)
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("127.0.0.1", srv.smtp_port))
    busy.listen(1)
    try:
        r = subprocess.run([srv.bin, "serve", "--data", str(srv.data)], capture_output=True, timeout=30,
                           env=srv.env())
    finally:
        busy.close()
    assert r.returncode != 0 and b"smtp_listen" in r.stderr, r.stderr
    assert b"password" not in r.stdout, "the one-time password was spent on a start that failed"
    srv.start()
    assert srv.postmaster_password


def test_minor_reply_codes(server):
    c = server.raw()
    c.reply()
    assert c.cmd(b"EHLO    ")[0] == 501
    assert c.cmd(b"HELO client.test")[0] == 250
    assert c.cmd(b"AUTH PLAIN AGEAYg==")[0] == 503  # AUTH needs EHLO
    assert c.cmd(b"VRFY")[0] == 501
    assert c.cmd(b"EHLO client.test")[0] == 250
    assert c.cmd(b"MAIL FROM:<a@client.test>")[0] == 250
    code, _ = c.cmd(f"RCPT TO:<postmaster@{server.domain}> NOTIFY=NEVER".encode())
    assert code == 555
    assert c.cmd(b"RSET")[0] == 250
    code, _ = c.cmd(b"MAIL FROM:<\xffx@client.test> SMTPUTF8")
    assert code == 501
    c.close()


def test_sendmail_symlink_accepts_data_option(server, tmp_path):
    alice = server.add_user("alice", PW)
    link = tmp_path / "sendmail"
    link.symlink_to(server.bin)
    r = server.cli("--data", str(server.data), alice, prog=str(link), input=b"Subject: s\n\nb\n")
    assert r.returncode == 0, r.stderr
    server.wait_for_maildir("alice", 1)


def test_pop3_slowloris_command_line_is_cut_off(make_server):
    """POP3 too: a command line trickled a byte at a time is cut off at
    pop3_timeout, although every byte restarts the idle timer."""
    srv = make_server("pop3_timeout = 2s\n")
    sock = socket.create_connection(("127.0.0.1", srv.pop3_port), timeout=10)
    assert sock.recv(512).startswith(b"+OK")
    t0 = time.monotonic()
    closed = False
    try:
        for ch in b"USER someone-with-a-long-name@example.org":
            sock.sendall(bytes([ch]))
            time.sleep(0.5)
            if time.monotonic() - t0 > 8:
                break
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    if not closed:
        sock.settimeout(3)
        try:
            data = sock.recv(512)
            closed = data == b"" or data.startswith(b"-ERR")
        except (ConnectionResetError, socket.timeout):
            closed = False
    assert closed and time.monotonic() - t0 < 7, "slow POP3 command line was not cut off near the 2 s deadline"
    sock.close()
