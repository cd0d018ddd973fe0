"""kill -9 in the middle of 200 messages from 10 parallel clients; after a
restart every message that got a 250 is in the mailbox exactly once."""
import collections
import re
import smtplib
import threading
import time

from conftest import make_message, wait_until

PW = "Crash-pw-777!"
CLIENTS = 10
TOTAL = 200
KILL_AFTER = 60  # acknowledged messages before the kill


def client(srv, rcpt, ids, acked, attempted, lock, stop_evt, ack_evt):
    s = None
    for mid in ids:
        if stop_evt.is_set():
            return
        try:
            if s is None:
                s = smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=30)
                s.ehlo()
            msg = make_message(subject=f"crash {mid}", msgid=f"{mid}@crash.test",
                               body=(f"message {mid}\r\n" + "x" * 70 + "\r\n") * 10)
            with lock:
                attempted.add(mid)
            code, _ = s.mail("crash@client.test")
            if code != 250:
                s.rset()
                continue
            code, _ = s.rcpt(rcpt)
            if code != 250:
                s.rset()
                continue
            code, _ = s.data(msg)
            if code == 250:
                with lock:
                    acked.add(mid)
                    if len(acked) >= KILL_AFTER:
                        ack_evt.set()
        except (smtplib.SMTPException, OSError):
            try:
                if s:
                    s.close()
            except OSError:
                pass
            s = None
            time.sleep(0.05)
    try:
        if s:
            s.quit()
    except (smtplib.SMTPException, OSError):
        pass


def ids_in_mailbox(srv, user):
    counts = collections.Counter()
    for f in srv.maildir_files(user):
        m = re.search(rb"Message-ID: <([^@>]+)@crash\.test>", f.read_bytes())
        assert m, f"message without crash id: {f}"
        counts[m.group(1).decode()] += 1
    return counts


def test_kill9_midway_no_acked_message_lost_or_duplicated(server):
    rcpt = server.add_user("crash", PW)
    all_ids = [f"c{i:03d}" for i in range(TOTAL)]
    acked, attempted = set(), set()
    lock = threading.Lock()
    stop_evt, ack_evt = threading.Event(), threading.Event()
    threads = [threading.Thread(target=client, args=(server, rcpt, all_ids[k::CLIENTS], acked, attempted,
                                                     lock, stop_evt, ack_evt), daemon=True)
               for k in range(CLIENTS)]
    for t in threads:
        t.start()
    assert ack_evt.wait(180), f"only {len(acked)} messages acknowledged before the kill\n" + server.log_text()
    server.kill9()
    # let the clients notice; those still running fail fast now
    time.sleep(1.0)
    stop_evt.set()
    for t in threads:
        t.join(60)
    with lock:
        acked_at_kill = set(acked)
    assert len(acked_at_kill) < TOTAL, "the kill came too late to be 'midway'"

    server.start()
    # the queue drains: everything acknowledged reaches the mailbox
    ok = wait_until(lambda: acked_at_kill <= set(ids_in_mailbox(server, "crash")), 120, interval=0.5)
    counts = ids_in_mailbox(server, "crash")
    missing = sorted(acked_at_kill - set(counts))
    assert ok and not missing, (f"{len(missing)} acknowledged messages lost: {missing[:20]}\n"
                                + server.queue_listing() + server.log_text())
    server.wait_queue_empty("pending", timeout=60)
    time.sleep(1.0)
    counts = ids_in_mailbox(server, "crash")
    dups = {k: v for k, v in counts.items() if v > 1}
    assert not dups, f"messages delivered more than once: {dups}"
    print(f"crash test: {len(acked_at_kill)} acknowledged before kill -9, {len(attempted)} attempted, "
          f"{len(counts)} in the mailbox after restart")
    stray = set(counts) - attempted
    assert not stray, f"messages never sent were delivered: {stray}"
