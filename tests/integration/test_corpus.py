"""Every message of the shared corpus goes in over SMTP and comes back over
POP3 byte for byte (after the trace header fields posthorn prepends).

Wire form: bare LF and lone CR become CRLF, a leading mbox "From " envelope
line is removed (but not the "From  :" header of file 192), and a message
without a final line break gets one (SMTP needs CRLF before the final dot).
Messages with a text line longer than 998 octets must be refused with
550 5.6.0 (max_line_length default, RFC 5322 2.1.1)."""
import poplib
import re
import time

import pytest

from conftest import (Server, corpus_dir, retr_bytes, split_trace, strip_mbox_from, to_wire, _finish, _register)

CORPUS = corpus_dir()
FILES = sorted((CORPUS / "eml").glob("*.eml")) if CORPUS else []
LINE_MAX = 998

pytestmark = pytest.mark.skipif(not FILES, reason="shared corpus not found (../shared/corpus or /work/shared/corpus)")


@pytest.fixture(scope="module")
def corpus_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("corpus"))
    srv.start()
    yield srv
    _finish(srv)


@pytest.fixture(autouse=True)
def _health(corpus_server, request):
    """The harness's makereport hook checks this server after each test; a
    daemon that died in an earlier test is started again so one crash
    fails one test, not all that follow."""
    corpus_server.revive()
    _register(request, corpus_server)


def wire_form(path):
    return to_wire(strip_mbox_from(path.read_bytes()))


def longest_line(wire):
    return max(len(l) for l in wire.split(b"\r\n"))


def mail_options(wire):
    opts = []
    if any(b >= 0x80 for b in wire):
        opts.append("BODY=8BITMIME")
        head = wire.split(b"\r\n\r\n", 1)[0]
        if any(b >= 0x80 for b in head):
            opts.append("SMTPUTF8")
    return opts


def test_corpus_conversion_rules():
    """The harness's own conversion: 192 keeps its 'From  :' header, mbox
    envelope lines go, everything ends up CRLF."""
    if not FILES:
        pytest.skip("no corpus")
    by_num = {p.name[:3]: p for p in FILES}
    w192 = wire_form(by_num["192"])
    assert w192.startswith(b"From  :")
    w003 = wire_form(by_num["003"])
    assert not w003.startswith(b"From ")
    for p in FILES:
        w = wire_form(p)
        assert re.search(rb"\r(?!\n)|(?<!\r)\n", w) is None, p.name


@pytest.mark.parametrize("path", FILES, ids=[p.name[:3] for p in FILES])
def test_corpus_roundtrip(corpus_server, path):
    srv = corpus_server
    wire = wire_form(path)
    user = "c" + path.name[:3]
    pw = "Corpus-pw-" + path.name[:3] + "!x"
    srv.add_user(user, pw)
    rcpt = srv.addr(user)

    s = srv.smtp()
    try:
        code, msg = s.mail("corpus@client.test", mail_options(wire))
        assert code == 250, (code, msg)
        code, msg = s.rcpt(rcpt)
        assert code == 250, (code, msg)
        code, msg = s.data(wire)
        if longest_line(wire) > LINE_MAX:
            assert code == 550 and msg.startswith(b"5.6.0"), (
                f"{path.name}: a line of {longest_line(wire)} octets must be refused with 550 5.6.0, got {code} {msg!r}")
            # the session goes on
            assert s.noop()[0] == 250
        else:
            assert code == 250, f"{path.name}: DATA -> {code} {msg!r}"
        s.quit()
    finally:
        s.close()

    if longest_line(wire) > LINE_MAX:
        time.sleep(1.0)
        assert srv.maildir_files(user) == [], "refused message was delivered"
        return

    files = srv.wait_for_maildir(user, 1)
    assert len(files) == 1, [f.name for f in files]

    p = srv.pop3(user, pw)
    try:
        count, size = p.stat()
        assert count == 1
        resp, listing, _ = p.list()
        listed_size = int(listing[0].split()[1])
        stored = retr_bytes(p, 1)
        assert listed_size == len(stored), f"LIST says {listed_size} octets, RETR gave {len(stored)}"
        names = split_trace(stored, wire)
        assert sorted(names) == ["delivered-to", "received", "return-path"], (
            f"trace fields added: {names}")
        assert names[0] == "return-path", names
        p.dele(1)
        p.quit()
    except poplib.error_proto as e:
        pytest.fail(f"POP3 error {e}\n" + srv.log_text())
    finally:
        p.close()
