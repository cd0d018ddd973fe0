"""Files dropped into queue/pending by hand are routed; garbage goes to
queue/lost+found with an event; queue folders renamed away while the server
is stopped are recreated."""
import json
import os
import time


from conftest import make_message, unfold_headers, wait_until, ev_type

PW = "Pickup-pw-789!"


def test_bare_eml_dropped_in_pending(server):
    alice = server.add_user("alice", PW)
    bob = server.add_user("bob", PW)
    carol = server.add_user("carol", PW)
    msg = (f"From: Sender <sender@client.test>\r\nTo: Alice <{alice}>\r\nCc: {bob}\r\n"
           f"Bcc: {carol}\r\nSubject: dropped eml\r\nMessage-ID: <drop1@client.test>\r\n\r\nbody\r\n").encode()
    server.drop_pending("dropped.eml", msg)
    for u in ("alice", "bob", "carol"):
        server.wait_for_maildir(u, 1)
    server.wait_queue_empty("pending")
    for u in ("alice", "bob", "carol"):
        stored = server.maildir_files(u)[0].read_bytes()
        assert b"Subject: dropped eml" in stored
        assert not any(k == "bcc" for k, _ in unfold_headers(stored)), f"Bcc not removed for {u}"
        rp = [v for k, v in unfold_headers(stored) if k == "return-path"]
        assert rp == [b"<sender@client.test>"], rp


def test_bare_eml_lf_line_ends(server):
    """A hand-made file usually has LF line ends: stored with CRLF."""
    alice = server.add_user("alice", PW)
    server.drop_pending("lf.eml", f"From: s@client.test\nTo: {alice}\nSubject: lf\n\nline\n".encode())
    f = server.wait_for_maildir("alice", 1)[0]
    stored = f.read_bytes()
    assert stored.endswith(b"Subject: lf\r\n\r\nline\r\n"), stored


def test_classic_from_rcpt_file_dropped(server):
    alice = server.add_user("alice", PW)
    bob = server.add_user("bob", PW)
    body = make_message(subject="classic pickup", frm="old@client.test", to="list@client.test")
    content = (b"FROM: old@client.test\r\n"
               b"RCPT: " + alice.encode() + b"\r\n"
               b"RCPT: " + bob.encode() + b"\r\n") + body
    server.drop_pending("classic.msg", content)
    for u in ("alice", "bob"):
        f = server.wait_for_maildir(u, 1)[0]
        stored = f.read_bytes()
        assert stored.endswith(body), stored[-300:]
        assert b"FROM: old@client.test\r\nRCPT:" not in stored
        rp = [v for k, v in unfold_headers(stored) if k == "return-path"]
        assert rp == [b"<old@client.test>"], rp
    server.wait_queue_empty("pending")


def test_posthorn_queue_file_dropped(server):
    """A complete posthorn queue file moved in from elsewhere."""
    alice = server.add_user("alice", PW)
    body = make_message(subject="queue file pickup")
    qid = "0G6V2J7K3M8N4P5Q"
    content = (b"posthorn-queue 1\n"
               b"id " + qid.encode() + b"\n"
               b"received 1764781080 2025-12-03T17:18:00Z\n"
               b"from <qf@client.test>\n"
               b"rcpt <" + alice.encode() + b">\n"
               b"origin pickup\n"
               b"body 7BIT\n"
               b"smtputf8 no\n"
               b"\n" + body + b"@@posthorn-end body=" + str(len(body)).encode() + b"\n")
    server.drop_pending(qid, content)
    f = server.wait_for_maildir("alice", 1)[0]
    assert f.read_bytes().endswith(body)
    server.wait_queue_empty("pending")
    assert server.queue_files("lost+found") == []


def test_dropped_files_routed_at_startup(make_server):
    srv = make_server()
    alice = srv.add_user("alice", PW)
    srv.stop()
    (srv.queue_dir("pending") / "offline.eml").write_bytes(
        f"From: s@client.test\r\nTo: {alice}\r\nSubject: offline\r\n\r\nx\r\n".encode())
    srv.start()
    srv.wait_for_maildir("alice", 1)


def test_garbage_goes_to_lost_and_found(server):
    server.add_user("alice", PW)
    garbage = bytes(range(256)) * 4 + b"\nthis is not mail\n"
    server.drop_pending("garbage.bin", garbage)
    lf = wait_until(lambda: server.queue_files("lost+found"), 30)
    assert lf, "garbage not moved to lost+found\n" + server.queue_listing() + server.log_text()
    assert any(f.read_bytes() == garbage for f in lf), "lost+found copy differs from the dropped file"
    assert not (server.queue_dir("pending") / "garbage.bin").exists()
    # the event follows the rename: wait for it rather than race it
    def lost_events():
        return [e for e in server.events() if "garbage.bin" in json.dumps(e)
                or "lost+found" in json.dumps(e) or "lost" in str(ev_type(e))]
    why = wait_until(lost_events, 10)
    assert why, f"no event about the lost+found move: {server.events()[-10:]}"
    assert any(any(k in e for k in ("reason", "error", "why")) for e in why), why


def test_eml_without_recipients_goes_to_lost_and_found(server):
    server.drop_pending("norcpt.eml", b"From: s@client.test\r\nSubject: nobody\r\n\r\nbody\r\n")
    lf = wait_until(lambda: server.queue_files("lost+found"), 30)
    assert lf, server.queue_listing()


def test_incomplete_queue_file_goes_to_lost_and_found(server):
    alice = server.add_user("alice", PW)
    content = (b"posthorn-queue 1\nid 0G6V2J7K3M8N4P5R\nreceived 1764781080 2025-12-03T17:18:00Z\n"
               b"from <qf@client.test>\nrcpt <" + alice.encode() + b">\norigin pickup\nbody 7BIT\n"
               b"smtputf8 no\n\nSubject: half\r\n\r\nno end marker\r\n")
    # an old file (mtime preserved by the move): not one still being written
    tmp = server.root / "old-queue-file"
    tmp.write_bytes(content)
    old = time.time() - 3600
    os.utime(tmp, (old, old))
    os.rename(tmp, server.queue_dir("pending") / "0G6V2J7K3M8N4P5R")
    lf = wait_until(lambda: server.queue_files("lost+found"), 30)
    assert lf, server.queue_listing()
    time.sleep(0.5)
    assert server.maildir_files("alice") == []


def test_outbox_renamed_away_is_recreated(make_server):
    srv = make_server()
    user = srv.add_user("alice", PW)
    srv.stop()
    outbox = srv.queue_dir("outbox")
    if outbox.exists():
        os.rename(outbox, srv.queue_dir("outbox.old"))
    srv.start()
    s = srv.submission(user, PW)
    s.sendmail(user, ["friend@example.com"], make_message(subject="to remote"))
    s.quit()
    assert wait_until(lambda: srv.queue_files("outbox"), 30), (
        "outbox not recreated / message not routed there\n" + srv.queue_listing() + srv.log_text())


def test_pending_renamed_away_is_recreated(make_server):
    srv = make_server()
    srv.add_user("alice", PW)
    srv.stop()
    pend = srv.queue_dir("pending")
    if pend.exists():
        os.rename(pend, srv.queue_dir("pending.old"))
    srv.start()
    s = srv.smtp()
    s.sendmail("x@client.test", [srv.addr("alice")], make_message(subject="after rename"))
    s.quit()
    srv.wait_for_maildir("alice", 1)
    assert srv.queue_dir("pending").is_dir()
