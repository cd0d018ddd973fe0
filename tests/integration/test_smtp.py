"""SMTP server (RFC 5321) with real clients: smtplib, swaks, raw sockets."""
import re
import shutil
import subprocess
import time

import pytest

from conftest import (QUEUE_ID_RE, make_message, retr_bytes, unfold_headers)

PW = "Secret-pass-123!"


def test_greeting_and_ehlo_extensions(server):
    s = server.smtp(ehlo=False)
    code, msg = s.ehlo()
    assert code == 250
    feats = s.esmtp_features
    for ext in ("pipelining", "8bitmime", "size", "enhancedstatuscodes", "smtputf8", "chunking"):
        assert ext in feats, f"EHLO does not announce {ext.upper()}: {feats}"
    assert feats["size"] == str(50 * 1024 * 1024), feats["size"]
    # MX port: no AUTH offered as a way to relay is fine either way, but VRFY must be 252
    code, _ = s.docmd("VRFY", "postmaster")
    assert code == 252
    assert s.docmd("HELP")[0] in (211, 214)
    assert s.noop()[0] == 250
    assert s.rset()[0] == 250
    s.quit()


def test_helo_works(server):
    s = server.smtp(ehlo=False)
    assert s.helo()[0] == 250
    server.add_user("alice", PW)
    s.sendmail("a@client.test", [server.addr("alice")], make_message(to=server.addr("alice")))
    s.quit()
    server.wait_for_maildir("alice", 1)


def test_simple_delivery_and_received_has_queue_id(server):
    server.add_user("alice", PW)
    s = server.smtp()
    assert s.mail("sender@client.test")[0] == 250
    assert s.rcpt(server.addr("alice"))[0] == 250
    code, msg = s.data(make_message(subject="qid test", to=server.addr("alice")))
    assert code == 250, (code, msg)
    ids = QUEUE_ID_RE.findall(msg)
    assert len(ids) == 1, f"250 reply should name one queue id: {msg!r}"
    qid = ids[0]
    s.quit()
    server.wait_for_maildir("alice", 1)
    p = server.pop3("alice", PW)
    stored = retr_bytes(p, 1)
    p.quit()
    received = [v for k, v in unfold_headers(stored) if k == "received"]
    assert received, stored[:500]
    assert qid in received[0], f"first Received: {received[0]!r} lacks queue id {qid!r}"
    rp = [v for k, v in unfold_headers(stored) if k == "return-path"]
    assert rp == [b"<sender@client.test>"], rp
    dt = [v for k, v in unfold_headers(stored) if k == "delivered-to"]
    assert [v.strip(b"<>") for v in dt] == [server.addr("alice").encode()], dt


def test_swaks_delivers(server):
    if not shutil.which("swaks"):
        pytest.skip("swaks not installed")
    server.add_user("alice", PW)
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(server.smtp_port),
                        "--helo", "client.test", "--from", "swaks@client.test",
                        "--to", server.addr("alice"), "--header", "Subject: via swaks",
                        "--body", "swaks body"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    files = server.wait_for_maildir("alice", 1)
    assert b"via swaks" in files[0].read_bytes()


def test_swaks_pipelining(server):
    if not shutil.which("swaks"):
        pytest.skip("swaks not installed")
    server.add_user("alice", PW)
    r = subprocess.run(["swaks", "--pipeline", "--server", "127.0.0.1", "--port", str(server.smtp_port),
                        "--helo", "client.test", "--from", "swaks@client.test",
                        "--to", server.addr("alice"), "--header", "Subject: pipelined swaks"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    server.wait_for_maildir("alice", 1)


def test_pipelined_session_replies_in_order(server):
    server.add_user("alice", PW)
    server.add_user("bob", PW)
    c = server.raw()
    assert c.reply()[0] == 220
    code, lines = c.cmd(b"EHLO client.test")
    assert code == 250 and any(l.upper() == b"PIPELINING" for l in lines)
    # one write: MAIL, RCPT ok, RCPT unknown, RCPT ok, DATA
    c.send(b"MAIL FROM:<pipe@client.test>\r\n"
           b"RCPT TO:<" + server.addr("alice").encode() + b">\r\n"
           b"RCPT TO:<nosuchuser@" + server.domain.encode() + b">\r\n"
           b"RCPT TO:<" + server.addr("bob").encode() + b">\r\n"
           b"DATA\r\n")
    got = [c.reply()[0] for _ in range(5)]
    assert got == [250, 250, 550, 250, 354], got
    # message and the next transaction's commands in one write as well
    c.send(make_message(subject="pipelined") + b".\r\n"
           b"RSET\r\nNOOP\r\nQUIT\r\n")
    got = [c.reply()[0] for _ in range(4)]
    assert got == [250, 250, 250, 221], got
    c.close()
    server.wait_for_maildir("alice", 1)
    server.wait_for_maildir("bob", 1)


def test_pipelined_two_transactions_one_write(server):
    server.add_user("alice", PW)
    c = server.raw()
    assert c.reply()[0] == 220
    c.cmd(b"EHLO client.test")
    a = server.addr("alice").encode()
    c.send(b"MAIL FROM:<p1@client.test>\r\nRCPT TO:<" + a + b">\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    c.send(make_message(subject="first") + b".\r\n"
           b"MAIL FROM:<p2@client.test>\r\nRCPT TO:<" + a + b">\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    c.send(make_message(subject="second") + b".\r\nQUIT\r\n")
    assert [c.reply()[0] for _ in range(2)] == [250, 221]
    c.close()
    files = server.wait_for_maildir("alice", 2)
    subjects = sorted(re.search(rb"Subject: (\w+)", f.read_bytes()).group(1) for f in files)
    assert subjects == [b"first", b"second"]


def test_bdat_chunks(server):
    server.add_user("alice", PW)
    c = server.raw()
    assert c.reply()[0] == 220
    code, lines = c.cmd(b"EHLO client.test")
    assert any(l.upper() == b"CHUNKING" for l in lines)
    assert c.cmd(b"MAIL FROM:<bdat@client.test>")[0] == 250
    assert c.cmd(b"RCPT TO:<" + server.addr("alice").encode() + b">")[0] == 250
    msg = make_message(subject="bdat",
                       body=b"line one\r\n.a line starting with a dot\r\n.\r\n..two dots\r\nlast line\r\n")
    # split at awkward places: inside CRLF, right before a dot line
    cuts = [5, msg.index(b"\r\n") + 1, msg.index(b".a line"), len(msg) - 3]
    chunks = [msg[i:j] for i, j in zip([0] + cuts, cuts + [len(msg)])]
    assert b"".join(chunks) == msg
    for ch in chunks[:-1]:
        c.send(b"BDAT %d\r\n" % len(ch) + ch)
        code, t = c.reply()
        assert code == 250, (code, t)
    c.send(b"BDAT %d LAST\r\n" % len(chunks[-1]) + chunks[-1])
    code, t = c.reply()
    assert code == 250, (code, t)
    assert QUEUE_ID_RE.search(t[-1]), t
    # BDAT 0 LAST ends an empty-chunk transaction too
    assert c.cmd(b"MAIL FROM:<bdat@client.test>")[0] == 250
    assert c.cmd(b"RCPT TO:<" + server.addr("alice").encode() + b">")[0] == 250
    c.send(b"BDAT %d\r\n" % len(msg) + msg)
    assert c.reply()[0] == 250
    c.send(b"BDAT 0 LAST\r\n")
    assert c.reply()[0] == 250
    assert c.cmd(b"QUIT")[0] == 221
    c.close()
    files = server.wait_for_maildir("alice", 2)
    for f in files:
        stored = f.read_bytes()
        assert stored.endswith(msg), stored[-200:]


def test_bdat_with_pipelining_one_write(server):
    server.add_user("alice", PW)
    c = server.raw()
    c.reply()
    c.cmd(b"EHLO client.test")
    msg = make_message(subject="bdat-pipe")
    half = len(msg) // 2
    c.send(b"MAIL FROM:<b@client.test>\r\nRCPT TO:<" + server.addr("alice").encode() + b">\r\n"
           + b"BDAT %d\r\n" % half + msg[:half] + b"BDAT %d LAST\r\n" % (len(msg) - half) + msg[half:]
           + b"QUIT\r\n")
    assert [c.reply()[0] for _ in range(5)] == [250, 250, 250, 250, 221]
    f = server.wait_for_maildir("alice", 1)[0]
    assert f.read_bytes().endswith(msg)


def test_relay_denied_on_mx(server):
    s = server.smtp()
    assert s.mail("someone@client.test")[0] == 250
    code, msg = s.rcpt("victim@example.com")
    assert code == 554 and msg.startswith(b"5.7.1"), (code, msg)
    # and the session goes on
    assert s.rset()[0] == 250
    s.quit()
    time.sleep(0.5)
    assert server.queue_files("outbox") == []
    assert server.queue_files("pending") == []


def test_unknown_user(server):
    s = server.smtp()
    s.mail("someone@client.test")
    code, msg = s.rcpt("nosuchuser@" + server.domain)
    assert code == 550 and msg.startswith(b"5.1.1"), (code, msg)
    s.quit()


def test_size_parameter_too_big(server):
    s = server.smtp()
    limit = int(s.esmtp_features["size"])
    code, msg = s.mail("big@client.test", [f"SIZE={limit + 1}"])
    assert code == 552 and msg.startswith(b"5.3.4"), (code, msg)
    code, msg = s.mail("big@client.test", [f"SIZE={limit}"])
    assert code == 250, (code, msg)
    s.quit()


def test_actual_data_over_max_message_size(make_server):
    srv = make_server("max_message_size = 10K\n")
    srv.add_user("alice", PW)
    s = srv.smtp()
    assert s.esmtp_features["size"] == "10240"
    assert s.mail("big@client.test")[0] == 250  # no SIZE= given: must be enforced on the data
    assert s.rcpt(srv.addr("alice"))[0] == 250
    body = ("x" * 70 + "\r\n") * 300  # ~21 KB
    code, msg = s.data(make_message(body=body))
    assert code == 552 and msg.startswith(b"5.3.4"), (code, msg)
    # session still usable; a small message goes through
    assert s.noop()[0] == 250
    s.sendmail("small@client.test", [srv.addr("alice")], make_message(subject="small"))
    s.quit()
    files = srv.wait_for_maildir("alice", 1)
    time.sleep(0.5)
    files = srv.maildir_files("alice")
    assert len(files) == 1 and b"Subject: small" in files[0].read_bytes()


def test_bdat_over_max_message_size(make_server):
    srv = make_server("max_message_size = 10K\n")
    srv.add_user("alice", PW)
    c = srv.raw()
    c.reply()
    c.cmd(b"EHLO client.test")
    assert c.cmd(b"MAIL FROM:<b@client.test>")[0] == 250
    assert c.cmd(b"RCPT TO:<" + srv.addr("alice").encode() + b">")[0] == 250
    chunk = b"y" * 70 + b"\r\n"
    chunk = chunk * 100  # 7.2 KB
    c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
    codes = [c.reply()[0]]
    c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    code, t = c.reply()
    codes.append(code)
    assert codes[-1] == 552 and t[-1].startswith(b"5.3.4"), (codes, t)
    c.close()
    time.sleep(0.5)
    assert srv.maildir_files("alice") == []


def test_overlong_command_line(server):
    s = server.smtp()
    code, msg = s.docmd("NOOP", "x" * 600)
    assert code == 500 and msg.startswith(b"5.5.2"), (code, msg)


def test_overlong_command_line_raw_then_session_state(server):
    """An over-long MAIL line is refused and does not start a transaction."""
    c = server.raw()
    c.reply()
    c.cmd(b"EHLO client.test")
    code, t = c.cmd(b"MAIL FROM:<" + b"a" * 600 + b"@client.test>")
    assert code == 500 and t[0].startswith(b"5.5.2"), (code, t)
    c.close()


def test_101st_recipient(server):
    server.add_user("alice", PW)
    s = server.smtp()
    assert s.mail("many@client.test")[0] == 250
    local, dom = server.addr("alice").split("@")
    for i in range(1, 101):
        code, msg = s.rcpt(f"{local}+r{i}@{dom}")
        assert code == 250, (i, code, msg)
    code, msg = s.rcpt(f"{local}+r101@{dom}")
    assert code == 452 and msg.startswith(b"4.5.3"), (code, msg)
    code, msg = s.data(make_message(subject="hundred"))
    assert code == 250, (code, msg)
    s.quit()
    server.wait_for_maildir("alice", 1)


def test_null_sender_accepted(server):
    server.add_user("alice", PW)
    s = server.smtp()
    assert s.docmd("MAIL", "FROM:<>")[0] == 250
    assert s.rcpt(server.addr("alice"))[0] == 250
    assert s.data(make_message(subject="bounce", frm="MAILER-DAEMON@client.test"))[0] == 250
    s.quit()
    f = server.wait_for_maildir("alice", 1)[0]
    assert f.read_bytes().startswith(b"Return-Path: <>\r\n")


def test_bad_sequence(server):
    s = server.smtp()
    code, msg = s.docmd("RCPT", "TO:<x@" + server.domain + ">")
    assert code == 503, (code, msg)
    code, msg = s.docmd("DATA")
    assert code == 503, (code, msg)
    s.quit()


def test_unknown_command_and_syntax(server):
    s = server.smtp()
    assert s.docmd("FROB")[0] == 500
    code, _ = s.docmd("MAIL", "FROM:not-an-address")
    assert code in (501, 553)
    s.quit()


def test_dot_lines_roundtrip_smtp_to_pop3(server):
    server.add_user("alice", PW)
    body = b"first\r\n.\r\n..\r\n.hidden\r\n...three\r\nend\r\n"
    msg = make_message(subject="dots", body=body)
    s = server.smtp()
    s.sendmail("d@client.test", [server.addr("alice")], msg)
    s.quit()
    server.wait_for_maildir("alice", 1)
    stored_file = server.maildir_files("alice")[0].read_bytes()
    assert stored_file.endswith(msg), "Maildir file must hold the unstuffed message"
    p = server.pop3("alice", PW)
    got = retr_bytes(p, 1)
    p.quit()
    assert got.endswith(msg)
