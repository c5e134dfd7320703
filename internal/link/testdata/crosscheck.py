#!/usr/bin/env python3
"""Independent check of the link vectors (docs/FORMAT.md, "Links") with
pyca/cryptography: the no-password key K = HKDF(S, "kumo/v2/link/ID/key"),
and every blob = 0x01 || nonce || AES-256-GCM(K, nonce, manifest, ad
"kumo/v2/link/ID"). (The password vector's Argon2id uses 2 lanes, which
libsodium does not offer; its K is taken from the file.) Run from the
repository root:

    python3 internal/link/testdata/crosscheck.py
"""
import base64, hashlib, json, sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ok = True
for i, v in enumerate(json.load(open("internal/link/testdata/vectors.json"))):
    s = base64.urlsafe_b64decode(v["secret"] + "=")
    if "password" not in v:
        k = HKDF(hashes.SHA256(), 32, None, ("kumo/v2/link/" + v["id"] + "/key").encode()).derive(s)
        if k.hex() != v["key"]:
            ok = False
            print("MISMATCH key", i)
    else:
        if hashlib.sha256(bytes.fromhex(v["auth_key"])).hexdigest() != v["auth_hash"]:
            ok = False
            print("MISMATCH auth hash", i)
    nonce = bytes.fromhex(v["nonce"])
    blob = b"\x01" + nonce + AESGCM(bytes.fromhex(v["key"])).encrypt(
        nonce, v["manifest"].encode(), ("kumo/v2/link/" + v["id"]).encode())
    if blob.hex() != v["blob"]:
        ok = False
        print("MISMATCH blob", i)
print("ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
