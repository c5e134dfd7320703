#!/usr/bin/env python3
"""Independent check of the link vectors (docs/FORMAT.md, "Links") with
pyca/cryptography: the secret S = SHA-256("kumo/v2/link/commit" || ID || r ||
manifest), the no-password key K = HKDF(S, "kumo/v2/link/ID/key"), and every
blob = 0x02 || nonce || AES-256-GCM(K, nonce, r || manifest, ad
"kumo/v2/link/ID"); then that the blob opens to r and the manifest, that S is
their commitment, and that each chunk entry has a 64-hex sum. (The password
vector's Argon2id uses 2 lanes, which libsodium does not offer; its K is taken
from the file.) Run from the repository root:

    python3 internal/link/testdata/crosscheck.py
"""
import base64, hashlib, hmac, json, re, sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ok = True
def fail(what, i):
    global ok
    ok = False
    print("MISMATCH", what, i)

for i, v in enumerate(json.load(open("internal/link/testdata/vectors.json"))):
    ad = ("kumo/v2/link/" + v["id"]).encode()
    r = bytes.fromhex(v["r"])
    manifest = v["manifest"].encode()
    s = hashlib.sha256(b"kumo/v2/link/commit" + v["id"].encode() + r + manifest).digest()
    if base64.urlsafe_b64encode(s).rstrip(b"=").decode() != v["secret"]:
        fail("secret (commitment)", i)
    if not v["url"].endswith("/s/" + v["id"] + "#" + v["secret"]):
        fail("url", i)
    if "password" not in v:
        k = HKDF(hashes.SHA256(), 32, None, ("kumo/v2/link/" + v["id"] + "/key").encode()).derive(s)
        if k.hex() != v["key"]:
            fail("key", i)
    else:
        if hashlib.sha256(bytes.fromhex(v["auth_key"])).hexdigest() != v["auth_hash"]:
            fail("auth hash", i)
    key = AESGCM(bytes.fromhex(v["key"]))
    nonce = bytes.fromhex(v["nonce"])
    blob = b"\x02" + nonce + key.encrypt(nonce, r + manifest, ad)
    if blob.hex() != v["blob"]:
        fail("blob", i)
    # A reader's side: open, split, recompute the commitment.
    b = bytes.fromhex(v["blob"])
    plain = key.decrypt(b[1:13], b[13:], ad)
    got = hashlib.sha256(b"kumo/v2/link/commit" + v["id"].encode() + plain[:32] + plain[32:]).digest()
    if b[0] != 2 or not hmac.compare_digest(got, s) or plain[32:] != manifest:
        fail("open", i)
    m = json.loads(manifest)
    if m["v"] != 2:
        fail("manifest version", i)
    for e in m["entries"]:
        for c in e.get("chunks", []):
            want = r"^[0-9a-f]{64}$" if c["id"] else r"^$"
            if not (re.match(want, c["sum"]) and re.match(want, c["key"])):
                fail("chunk sum " + e["path"], i)
print("ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
