#!/usr/bin/env python3
"""Independent re-implementation of kumo's v1 and v2 formats (docs/FORMAT.md) that
recomputes the committed Go test vectors with other libraries: pyca/cryptography
(HKDF, HMAC, AES-GCM) and libsodium via ctypes (Argon2id with one lane,
XChaCha20-Poly1305). Run from the repository root:

    python3 internal/keys/testdata/crosscheck.py

Not part of `go test` (needs Python, cryptography and libsodium).
"""
import ctypes, ctypes.util, hashlib, hmac, json, struct, sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sodium = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
assert sodium.sodium_init() >= 0
ok = True


def check(what, got, want):
    global ok
    if got != want:
        ok = False
        print("MISMATCH", what, got, want)


def hkdf(secret, info, salt=None):
    return HKDF(hashes.SHA256(), 32, salt, info).derive(secret)


def xchacha_seal(key, nonce, pt, ad):
    out = ctypes.create_string_buffer(len(pt) + 16)
    n = ctypes.c_ulonglong()
    assert sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        out, ctypes.byref(n), pt, ctypes.c_ulonglong(len(pt)), ad, ctypes.c_ulonglong(len(ad)),
        None, nonce, key) == 0
    return out.raw[: n.value]


def argon2id_1lane(pw, salt, t, mem_kib):
    out = ctypes.create_string_buffer(32)
    assert sodium.crypto_pwhash(out, ctypes.c_ulonglong(32), pw, ctypes.c_ulonglong(len(pw)), salt,
                                ctypes.c_ulonglong(t), ctypes.c_size_t(mem_kib * 1024), 2) == 0
    return out.raw


# keys
for i, v in enumerate(json.load(open("internal/keys/testdata/vectors.json"))):
    kdf = v["kdf"]
    if kdf["Threads"] == 1:  # libsodium's Argon2id has exactly one lane
        root = argon2id_1lane(v["password"].encode(), bytes.fromhex(v["salt"]), kdf["Time"], kdf["MemoryKiB"])
        check(f"keys[{i}].auth", hkdf(root, b"kumo/v1/auth").hex(), v["auth_key"])
        check(f"keys[{i}].kek", hkdf(root, b"kumo/v1/kek").hex(), v["kek"])
    kek, master, nonce = (bytes.fromhex(v[k]) for k in ("kek", "master", "nonce"))
    check(f"keys[{i}].wrapped", (b"\x01" + nonce + xchacha_seal(kek, nonce, master, b"kumo/v1/master")).hex(), v["wrapped"])
    for name in ("attrs", "names", "chunk_id", "chunks", "cache"):
        info = b"kumo/v1/" + name.replace("_", "-").encode()
        check(f"keys[{i}].{name}", hkdf(master, info).hex(), v["subkey_" + name])

# meta
mv = json.load(open("internal/meta/testdata/vectors.json"))
for i, v in enumerate(mv["attrs"]):
    master = bytes.fromhex(v["master"])
    k = hkdf(master, b"kumo/v1/attrs")
    nonce, enc = bytes.fromhex(v["nonce"]), bytes.fromhex(v["encoded"])
    a = v["attrs"]
    # Re-encode from the JSON fields per FORMAT.md section "Attribute encoding".
    b = bytes([1]) + struct.pack(">IIIIQqqq", a["Mode"], a["UID"], a["GID"], a["Rdev"], a["Size"], a["Atime"], a["Mtime"], a["Ctime"])
    import base64
    target = base64.b64decode(a["Target"]) if a["Target"] else b""
    b += struct.pack(">H", len(target)) + target
    xs = sorted((n.encode(), base64.b64decode(x)) for n, x in (a["Xattrs"] or {}).items())
    b += struct.pack(">I", len(xs))
    for n, x in xs:
        b += bytes([len(n)]) + n + struct.pack(">I", len(x)) + x
    cs = a["Chunks"] or []
    b += struct.pack(">I", len(cs))
    for c in cs:
        b += bytes(c["ID"]) + struct.pack(">I", c["Len"])
    check(f"attrs[{i}].encoded", b.hex(), v["encoded"])
    ad = b"kumo/v1/attrs" + struct.pack(">Q", v["node_id"])
    check(f"attrs[{i}].sealed", (b"\x01" + nonce + xchacha_seal(k, nonce, enc, ad)).hex(), v["sealed"])
for i, v in enumerate(mv["names"]):
    names = hkdf(bytes.fromhex(v["master"]), b"kumo/v1/names")
    parent, name, nonce = struct.pack(">Q", v["parent"]), v["name"].encode(), bytes.fromhex(v["nonce"])
    check(f"names[{i}].mac", hmac.new(names, b"kumo/v1/name-mac" + parent + name, hashlib.sha256).hexdigest(), v["mac"])
    seal = hkdf(names, b"kumo/v1/name-seal")
    check(f"names[{i}].sealed", (b"\x01" + nonce + xchacha_seal(seal, nonce, name, parent)).hex(), v["sealed"])
# meta, format v2: key id (share 0, generation 0 = the v1 subkeys) and revision
# in the attrs header; names bound to parent, child and kind
for i, v in enumerate(mv["attrs_v2"]):
    k = hkdf(bytes.fromhex(v["master"]), b"kumo/v1/attrs")  # the home tree's keys are the v1 subkeys
    nonce, enc = bytes.fromhex(v["nonce"]), bytes.fromhex(v["encoded"])
    hdr = b"\x02" + struct.pack(">QIQ", 0, 0, v["rev"])
    ad = b"kumo/v2/attrs" + struct.pack(">Q", v["node_id"]) + hdr
    check(f"attrs_v2[{i}].sealed", (hdr + nonce + xchacha_seal(k, nonce, enc, ad)).hex(), v["sealed"])
for i, v in enumerate(mv["names_v2"]):
    names = hkdf(bytes.fromhex(v["master"]), b"kumo/v1/names")
    seal = hkdf(names, b"kumo/v1/name-seal")
    name, nonce = v["name"].encode(), bytes.fromhex(v["nonce"])
    hdr = b"\x02" + struct.pack(">QI", 0, 0)
    ad = b"kumo/v2/name" + struct.pack(">QQB", v["parent"], v["child"], v["kind"]) + hdr
    check(f"names_v2[{i}].mac", hmac.new(names, b"kumo/v1/name-mac" + struct.pack(">Q", v["parent"]) + name, hashlib.sha256).hexdigest(), v["mac"])
    check(f"names_v2[{i}].sealed", (hdr + nonce + xchacha_seal(seal, nonce, name, ad)).hex(), v["sealed"])
# share subkeys (internal/keys/share_test.go): secret 6061..7f, share 7, generation 2
secret = bytes(range(0x60, 0x80))
for purpose, want in (("attrs", "6c5d95949920714478867df8275da1b496415035b199de5c486de9e3dddf7a31"),
                      ("names", "3a00e339d0bd03fa33e19d43f8ca27ca688f812593839ab3d4a85f0c85faea53")):
    check(f"share.{purpose}", hkdf(secret, b"kumo/v2/share/0000000000000007/00000002/" + purpose.encode()).hex(), want)

# chunk
SEG = 64 << 10
for i, v in enumerate(json.load(open("internal/chunk/testdata/vectors.json"))):
    n = v["plain_len"]
    p = bytes((j * 7 + 3) & 0xFF for j in range(n))
    cid = hmac.new(bytes.fromhex(v["id_key"]), p, hashlib.sha256).digest()
    check(f"chunk[{i}].id", cid.hex(), v["id"])
    key = hkdf(bytes.fromhex(v["content_key"]), b"kumo/v1/chunk-key" + cid)
    check(f"chunk[{i}].key", key.hex(), v["chunk_key"])
    g, segs, out = AESGCM(key), (n + SEG - 1) // SEG, b""
    for s in range(segs):
        nonce = s.to_bytes(11, "big") + bytes([1 if s == segs - 1 else 0])
        out += g.encrypt(nonce, p[s * SEG:(s + 1) * SEG], None)
    check(f"chunk[{i}].sha256", hashlib.sha256(out).hexdigest(), v["sealed_sha256"])
    off = (segs - 1) * (SEG + 16)
    check(f"chunk[{i}].last", out[off:off + 48].hex(), v["last_segment_hex_prefix"])
    if "sealed" in v:
        check(f"chunk[{i}].sealed", out.hex(), v["sealed"])

# identity keys and recovery key (v2; docs/FORMAT.md §3c, §3d)
import base64
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def raw_public(k):
    return k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


for i, v in enumerate(json.load(open("internal/keys/testdata/identity_vectors.json"))):
    master, email, nonce = bytes.fromhex(v["master"]), v["email"].encode(), bytes.fromhex(v["nonce"])
    bpriv, seed = bytes.fromhex(v["x25519_private"]), bytes.fromhex(v["ed25519_seed"])
    bpub = raw_public(X25519PrivateKey.from_private_bytes(bpriv))
    spub = raw_public(Ed25519PrivateKey.from_private_bytes(seed))
    check(f"identity[{i}].x25519_public", bpub.hex(), v["x25519_public"])
    check(f"identity[{i}].ed25519_public", spub.hex(), v["ed25519_public"])
    k = hkdf(master, b"kumo/v2/identity")
    check(f"identity[{i}].key", k.hex(), v["identity_key"])
    sealed = b"\x02" + nonce + xchacha_seal(k, nonce, bpriv + seed + bpub + spub, b"kumo/v2/identity\x00\x02" + email)
    check(f"identity[{i}].sealed", sealed.hex(), v["sealed"])
    fp = hashlib.sha256(b"kumo/v2/identity-fingerprint\x00" + bpub + spub).hexdigest()[:32]
    check(f"identity[{i}].fingerprint", " ".join(fp[j:j + 4] for j in range(0, 32, 4)), v["fingerprint"])
for i, v in enumerate(json.load(open("internal/keys/testdata/recovery_vectors.json"))):
    rk, email, nonce = bytes.fromhex(v["recovery_key"]), v["email"].encode(), bytes.fromhex(v["nonce"])
    text = base64.b32encode(rk + hashlib.sha256(b"kumo/v2/recovery-check\x00" + rk).digest()[:3]).decode()
    check(f"recovery[{i}].text", "-".join(text[j:j + 4] for j in range(0, len(text), 4)), v["text"])
    wk, ak = hkdf(rk, b"kumo/v2/recovery-wrap"), hkdf(rk, b"kumo/v2/recovery-auth")
    check(f"recovery[{i}].wrap_key", wk.hex(), v["wrap_key"])
    check(f"recovery[{i}].auth_key", ak.hex(), v["auth_key"])
    wrapped = b"\x02" + nonce + xchacha_seal(wk, nonce, bytes.fromhex(v["master"]), b"kumo/v2/recovery-master\x00\x02" + email)
    check(f"recovery[{i}].wrapped", wrapped.hex(), v["wrapped"])

# shared folders (docs/FORMAT.md §3g): roster and record signatures with
# pyca's Ed25519, the owner's secret with HKDF, and the invitation opened with
# RFC 9180 HPKE written out here (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
# ChaCha20-Poly1305, base mode) over pyca's X25519 and ChaCha20-Poly1305.
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305


def hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk, info, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out, i = out + t, i + 1
    return out[:n]


def hpke_open(sk_bytes, enc, info, aad, ct):
    sk = X25519PrivateKey.from_private_bytes(sk_bytes)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    dh = sk.exchange(X25519PublicKey.from_public_bytes(enc))
    kem = b"KEM" + struct.pack(">H", 0x0020)
    lx = lambda sid, salt, label, ikm: hkdf_extract(salt, b"HPKE-v1" + sid + label + ikm)
    le = lambda sid, prk, label, inf, n: hkdf_expand(prk, struct.pack(">H", n) + b"HPKE-v1" + sid + label + inf, n)
    shared = le(kem, lx(kem, b"", b"eae_prk", dh), b"shared_secret", enc + raw_public(sk), 32)
    suite = b"HPKE" + struct.pack(">HHH", 0x0020, 0x0001, 0x0003)
    ctx = b"\x00" + lx(suite, b"", b"psk_id_hash", b"") + lx(suite, b"", b"info_hash", info)
    secret = lx(suite, shared, b"secret", b"")
    key, nonce = le(suite, secret, b"key", ctx, 32), le(suite, secret, b"base_nonce", ctx, 12)
    return ChaCha20Poly1305(key).decrypt(nonce, ct, aad)


sv = json.load(open("internal/keys/testdata/sharing_vectors.json"))
ids = {}
for who, a, b in (("alice", 1, 2), ("bob", 3, 4), ("carol", 5, 6)):
    bpriv, seed = bytes(range(a, a + 32)), bytes(range(b, b + 32))
    ids[who] = (bpriv, Ed25519PrivateKey.from_private_bytes(seed), raw_public(X25519PrivateKey.from_private_bytes(bpriv)),
                raw_public(Ed25519PrivateKey.from_private_bytes(seed)))
em = lambda e: bytes([len(e)]) + e
body = b"\x02" + struct.pack(">QIQ", 7, 2, 5) + em(b"alice@example.com") + ids["alice"][2] + ids["alice"][3] + struct.pack(">H", 2)
body += em(b"bob@example.com") + ids["bob"][2] + ids["bob"][3] + b"\x02" + struct.pack(">I", 0)
body += em(b"carol@example.com") + ids["carol"][2] + ids["carol"][3] + b"\x01" + struct.pack(">I", 1)
roster = body + ids["alice"][1].sign(b"kumo/v2/share-roster\x00" + body)
check("sharing.roster", roster.hex(), sv["Roster"])
# version 0x03: the lowest accepted generation (2) follows the generation (3); version 6
members = body[body.index(struct.pack(">H", 2) + em(b"bob@example.com")):]
body3 = b"\x03" + struct.pack(">QIIQ", 7, 3, 2, 6) + em(b"alice@example.com") + ids["alice"][2] + ids["alice"][3] + members
roster3 = body3 + ids["alice"][1].sign(b"kumo/v2/share-roster\x00" + body3)
check("sharing.roster_min_gen", roster3.hex(), sv["RosterMinGen"])
sealed, mac = bytes.fromhex(sv["RecordSealed"]), bytes.fromhex(sv["RecordMAC"])
rec = sealed + hashlib.sha256(ids["bob"][3]).digest()[:16] + ids["bob"][1].sign(b"kumo/v2/share-record\x00\x02" + struct.pack(">Q", 42) + mac + sealed)
check("sharing.record", rec.hex(), sv["RecordSigned"])
check("sharing.owner_secret", hkdf(bytes.fromhex(sv["OwnerSecretMaster"]), b"kumo/v2/share-secret/0000000000000007/00000002").hex(), sv["OwnerSecret"])
blob = bytes.fromhex(sv["Invite"])
sig, enc, ct = blob[1:65], blob[65:97], blob[97:]
ids["alice"][1].public_key().verify(sig, b"kumo/v2/share-invite-sig\x00" + em(b"bob@example.com") + ids["bob"][2] + enc + ct)
pt = hpke_open(ids["bob"][0], enc, b"kumo/v2/share-invite", b"kumo/v2/share-invite\x00bob@example.com", ct)
want = struct.pack(">QI", 7, 2) + bytes.fromhex(sv["InviteSecret"]) + struct.pack(">Q", 99) + em(b"alice@example.com") + em(b"Photos")
check("sharing.invite", pt.hex(), want.hex())

print("all vectors match" if ok else "MISMATCHES")
sys.exit(0 if ok else 1)
