"""rotate's pure parts: the fingerprint is the stand-ins' (so /health proves which secret a service
read), and the role's new password goes to PostgreSQL only as a SCRAM-SHA-256 verifier."""

import base64
import hashlib
import hmac
import re

from ripcord.modules.rotate import fingerprint, key_id, scram_verifier


def test_fingerprints_agree_with_the_stand_ins_and_hide_the_value(titan_common):
    for key, value in (("TITAN_HMAC_SECRET", "ab" * 32), ("TITAN_DB_PASSWORD", "p'w d")):
        assert fingerprint(key, value) == titan_common.fingerprint(key, value)
        assert len(fingerprint(key, value)) == 12 and value not in fingerprint(key, value)
    # labelled per key: one value under two keys shows two fingerprints
    assert fingerprint("A", "same") != fingerprint("B", "same")
    assert len(key_id("k" * 40)) == 12


def test_scram_verifier_is_rfc_7677_and_holds_no_password():
    password = "correct horse"
    verifier = scram_verifier(password)
    match = re.fullmatch(r"SCRAM-SHA-256\$4096:([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)",
                         verifier)
    assert match and password not in verifier
    salt, stored, server = (base64.b64decode(g) for g in match.groups())
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert stored == hashlib.sha256(client_key).digest()
    assert server == hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert scram_verifier(password) != verifier  # a fresh salt each time
