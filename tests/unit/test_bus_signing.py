"""ripcord signs commands exactly as the stand-in engine verifies them (and no other way)."""

import time

from ripcord import bus

SECRET = "s3cret-for-tests"
BODY = bus.encode({"state": "HARD_HALT", "reason": "test", "operator": "unit"})


def test_a_signed_command_is_accepted_once(titan_common):
    verifier = titan_common.CommandVerifier([SECRET])
    headers = bus.sign(bus.HALT_SUBJECT, BODY, SECRET)
    assert verifier.verify(bus.HALT_SUBJECT, headers, BODY) is None
    assert verifier.verify(bus.HALT_SUBJECT, headers, BODY) == "replayed nonce"


def test_tampering_with_subject_body_or_secret_is_detected(titan_common):
    verifier = titan_common.CommandVerifier([SECRET])
    headers = bus.sign(bus.HALT_SUBJECT, BODY, SECRET)
    assert verifier.verify(bus.FLATTEN_SUBJECT, headers, BODY) == "bad signature"
    assert verifier.verify(bus.HALT_SUBJECT, headers, BODY + b" ") == "bad signature"
    assert verifier.verify(bus.HALT_SUBJECT, bus.sign(bus.HALT_SUBJECT, BODY, "other"), BODY) == (
        "bad signature")


def test_unsigned_and_stale_commands_are_rejected(titan_common):
    verifier = titan_common.CommandVerifier([SECRET])
    assert verifier.verify(bus.HALT_SUBJECT, {}, BODY) == "unsigned"
    stale = bus.sign(bus.HALT_SUBJECT, BODY, SECRET, timestamp_ms=int((time.time() - 31) * 1000))
    assert verifier.verify(bus.HALT_SUBJECT, stale, BODY).startswith("stale command")


def test_the_previous_secret_is_accepted_during_a_rotation(titan_common):
    verifier = titan_common.CommandVerifier(["new-secret", SECRET])
    assert verifier.verify(bus.HALT_SUBJECT, bus.sign(bus.HALT_SUBJECT, BODY, SECRET), BODY) is None


def test_rejections_log_the_lines_operators_alert_on(titan_common):
    assert titan_common.rejection_log_line("s", "unsigned") == "Security: Unsigned Command Detected subject=s"
    assert titan_common.rejection_log_line("s", "bad signature").startswith("HMAC Verification Failed")


def test_fingerprints_agree(titan_common):
    assert bus.fingerprint(SECRET) == titan_common.secret_fingerprint(SECRET)
