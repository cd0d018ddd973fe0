"""POP3 (RFC 1939, CAPA RFC 2449, AUTH PLAIN RFC 5034) with poplib."""
import poplib
import time

import pytest

from conftest import make_message, pop3_auth_plain, retr_bytes, wait_until

PW = "Pop3-pw-654!"


def deliver(srv, user, n, prefix="m"):
    s = srv.smtp()
    msgs = []
    for i in range(n):
        m = make_message(subject=f"{prefix}{i}", body=f"body of {prefix}{i}\r\nline two\r\nline three\r\n")
        s.sendmail("s@client.test", [srv.addr(user)], m)
        msgs.append(m)
    s.quit()
    srv.wait_for_maildir(user, n)
    return msgs


def test_capa(server):
    p = server.pop3()
    caps = p.capa()
    for c in ("UIDL", "TOP", "USER"):
        assert c in caps, caps
    assert "SASL" in caps and "PLAIN" in [x.upper() for x in caps["SASL"]], caps
    p.quit()


def test_login_stat_list_retr(server):
    server.add_user("alice", PW)
    msgs = deliver(server, "alice", 3)
    p = server.pop3("alice", PW)
    count, total = p.stat()
    assert count == 3
    resp, listing, _ = p.list()
    sizes = [int(l.split()[1]) for l in listing]
    assert sum(sizes) == total
    got = [retr_bytes(p, i + 1) for i in range(3)]
    for g, sz in zip(got, sizes):
        assert len(g) == sz
    assert sorted(g.split(b"Subject: ")[1][:2] for g in got) == [b"m0", b"m1", b"m2"]
    for g, m in zip(sorted(got, key=lambda g: g.split(b"Subject: ")[1][:2]), msgs):
        assert g.endswith(m)
    p.quit()


def test_wrong_password_and_unknown_user(server):
    server.add_user("alice", PW)
    p = server.pop3()
    p.user(server.addr("alice"))
    with pytest.raises(poplib.error_proto):
        p.pass_("wrong")
    p.close()
    p = server.pop3()
    try:
        p.user("nobody@" + server.domain)
        with pytest.raises(poplib.error_proto):
            p.pass_("whatever")
    except poplib.error_proto:
        pass  # USER may already refuse
    p.close()


def test_auth_plain(server):
    server.add_user("alice", PW)
    deliver(server, "alice", 1)
    p = server.pop3()
    resp = pop3_auth_plain(p, server.addr("alice"), PW)
    assert resp.startswith(b"+OK"), resp
    assert p.stat()[0] == 1
    p.quit()


def test_uidl_stable_across_sessions_and_restart(server):
    server.add_user("alice", PW)
    deliver(server, "alice", 3)

    def uidls():
        p = server.pop3("alice", PW)
        resp, lines, _ = p.uidl()
        one = p.uidl(1)
        p.quit()
        m = dict(l.split() for l in lines)
        assert len(set(m.values())) == len(m), "UIDLs not unique"
        assert one.split()[-1] == m[b"1"]
        return m

    first = uidls()
    assert len(first) == 3
    second = uidls()
    assert first == second
    server.restart()
    third = uidls()
    assert first == third
    # a new message gets a new uid, the old ones stay
    deliver(server, "alice", 1, prefix="n")
    fourth = uidls()
    assert set(first.values()) < set(fourth.values())


def test_dele_only_at_quit(server):
    server.add_user("alice", PW)
    deliver(server, "alice", 3)
    p = server.pop3("alice", PW)
    p.dele(1)
    assert p.stat()[0] == 2
    with pytest.raises(poplib.error_proto):
        p.retr(1)
    assert len(server.maildir_files("alice")) == 3, "DELE removed the file before QUIT"
    p.quit()
    assert wait_until(lambda: len(server.maildir_files("alice")) == 2, 5)


def test_dele_without_quit_is_not_applied(server):
    server.add_user("alice", PW)
    deliver(server, "alice", 2)
    p = server.pop3("alice", PW)
    p.dele(1)
    p.dele(2)
    # connection drops without QUIT
    p.close()
    time.sleep(1)
    assert len(server.maildir_files("alice")) == 2
    p = wait_until(lambda: try_login(server, "alice"), 10)
    assert p, "mailbox still locked after the client went away"
    assert p.stat()[0] == 2
    p.quit()


def try_login(srv, user):
    p = srv.pop3()
    try:
        p.user(srv.addr(user))
        p.pass_(PW)
        return p
    except poplib.error_proto:
        p.close()
        return None


def test_rset_restores(server):
    server.add_user("alice", PW)
    deliver(server, "alice", 2)
    p = server.pop3("alice", PW)
    p.dele(1)
    p.dele(2)
    assert p.stat()[0] == 0
    p.rset()
    assert p.stat()[0] == 2
    p.quit()
    assert len(server.maildir_files("alice")) == 2


def test_second_session_refused(server):
    server.add_user("alice", PW)
    deliver(server, "alice", 1)
    p1 = server.pop3("alice", PW)
    p2 = server.pop3()
    p2.user(server.addr("alice"))
    with pytest.raises(poplib.error_proto):
        p2.pass_(PW)
    p2.close()
    p1.quit()
    p3 = wait_until(lambda: try_login(server, "alice"), 10)
    assert p3, "mailbox still locked after QUIT"
    p3.quit()


def test_top(server):
    server.add_user("alice", PW)
    deliver(server, "alice", 1)
    p = server.pop3("alice", PW)
    full = retr_bytes(p, 1)
    head, body = full.split(b"\r\n\r\n", 1)
    resp, lines, _ = p.top(1, 0)
    got0 = b"".join(l + b"\r\n" for l in lines)
    assert got0 == head + b"\r\n\r\n"
    resp, lines, _ = p.top(1, 2)
    got2 = b"".join(l + b"\r\n" for l in lines)
    assert got2 == head + b"\r\n\r\n" + b"\r\n".join(body.split(b"\r\n")[:2]) + b"\r\n"
    p.quit()


def test_dot_lines_roundtrip_pop3(server):
    alice = server.add_user("alice", PW)
    body = b".\r\n..\r\n.leading\r\nmiddle . dot\r\n...\r\n"
    msg = make_message(subject="dotted", body=body)
    # inject via BDAT so no SMTP dot-stuffing is involved on the way in
    c = server.raw()
    c.reply()
    c.cmd(b"EHLO client.test")
    c.cmd(b"MAIL FROM:<d@client.test>")
    c.cmd(b"RCPT TO:<" + alice.encode() + b">")
    c.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    assert c.reply()[0] == 250
    c.close()
    server.wait_for_maildir("alice", 1)
    # raw POP3 to see the stuffing on the wire
    import socket
    sk = socket.create_connection(("127.0.0.1", server.pop3_port), timeout=30)
    f = sk.makefile("rb")
    assert f.readline().startswith(b"+OK")
    for cmd in (b"USER " + alice.encode(), b"PASS " + PW.encode()):
        sk.sendall(cmd + b"\r\n")
        assert f.readline().startswith(b"+OK")
    sk.sendall(b"RETR 1\r\n")
    assert f.readline().startswith(b"+OK")
    wire = b""
    while True:
        line = f.readline()
        assert line, "connection closed during RETR"
        if line == b".\r\n":
            break
        wire += line
    sk.sendall(b"QUIT\r\n")
    f.readline()
    sk.close()
    assert wire.endswith(b"\r\n\r\n" + b"..\r\n...\r\n..leading\r\nmiddle . dot\r\n....\r\n"), wire[-100:]
    p = server.pop3("alice", PW)
    assert retr_bytes(p, 1).endswith(msg)
    p.quit()


def test_noop_and_unknown_command(server):
    server.add_user("alice", PW)
    p = server.pop3("alice", PW)
    assert p.noop().startswith(b"+OK")
    with pytest.raises(poplib.error_proto):
        p._shortcmd("FROB")
    p.quit()
