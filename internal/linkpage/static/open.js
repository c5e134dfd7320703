// How the link page's workers fetch a sealed chunk of a link and open its
// STREAM segments with WebCrypto: shared by the chunk workers (chunks.js) and
// the download service worker (sw.js), which load it with importScripts.
// Format: docs/FORMAT.md (links, chunks).
'use strict';

const SEG = 65536; // plaintext bytes of a STREAM segment
const TAG = 16; // AES-GCM tag

function segNonce(i, final) {
  const iv = new Uint8Array(12);
  let v = i;
  for (let b = 10; b >= 0 && v > 0; b--) { iv[b] = v % 256; v = Math.floor(v / 256); }
  iv[11] = final ? 1 : 0;
  return iv;
}

function hexEncode(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
}

function hexDecode(s) {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}

// Failure is what the page turns into a message (page.js, chunkError);
// failureData is its form for postMessage.
class Failure extends Error {
  constructor(kind, extra) { super(kind); this.kind = kind; Object.assign(this, extra); }
}

// spare holds chunk-sized buffers for reuse: reading every chunk into fresh
// memory cost more (page faults, zeroing) than the copies themselves.
const spare = [];
const BUF = 4194304 + TAG * 64; // a full chunk, sealed

// BodyReader reads a response body piece by piece into the caller's
// buffers: straight into them where the browser can (a BYOB reader), else
// by copying what the default reader hands out. A failed read is a network
// failure (a connection cut mid-answer).
class BodyReader {
  constructor(body) {
    try { this.byob = body.getReader({ mode: 'byob' }); } catch { /* not a byte stream here */ }
    if (!this.byob) this.rd = body.getReader();
    this.left = null; // the default reader's bytes not yet taken
  }

  async read(view) {
    try {
      return await (this.byob ? this.byob.read(view) : this.rd.read());
    } catch (err) {
      if (err && err.name === 'AbortError') throw err;
      throw new Failure('network', { detail: 'the answer was cut: ' + String(err && err.message) });
    }
  }

  // fill reads up to len bytes into buf at off, fewer only at the body's
  // end; it answers the buffer (a BYOB read hands it back transferred) and
  // the bytes read.
  async fill(buf, off, len) {
    let got = 0;
    if (this.byob) {
      while (got < len) {
        const { done, value } = await this.read(new Uint8Array(buf, off + got, len - got));
        if (value) buf = value.buffer;
        if (done) break;
        got += value.byteLength;
      }
      return { buf, got };
    }
    const view = new Uint8Array(buf);
    while (got < len) {
      if (!this.left || !this.left.length) {
        const { done, value } = await this.read();
        if (done) break;
        this.left = value;
      }
      const k = Math.min(this.left.length, len - got);
      view.set(this.left.subarray(0, k), off + got);
      this.left = this.left.subarray(k);
      got += k;
    }
    return { buf, got };
  }

  // atEnd reports whether the body has no more bytes.
  async atEnd() {
    if (this.left && this.left.length) return false;
    const { got } = await this.fill(new ArrayBuffer(1), 0, 1);
    return got === 0;
  }

  cancel() { (this.byob || this.rd).cancel().catch(() => {}); }
}

// openBatch fetches chunks cs of the link (distinct ids, at most 16 and
// 64 MiB sealed) in one request, GET /v1/s/ID/chunks?ids=A,B,... (docs/API.md:
// each chunk's sealed length, 4 bytes big-endian, then its bytes, in the
// order asked for), and opens each as it arrives: got(i, plaintext buffers)
// for chunk i, in order of decryption. Every frame must have exactly the
// length chunk i has sealed and the answer end after the last: a frame of
// another length, a short answer or bytes after the last frame are a size
// failure, bytes that do not open an auth failure, bytes that open but do
// not have the chunk's sum (c.sum, SHA-256 of the sealed chunk) a sum
// failure; any stops the batch.
// Fewer, larger requests cost chromium's workers less per byte
// (docs/BENCH.md).
async function openBatch(linkID, cs, signal, got) {
  const keys = cs.map((c) => crypto.subtle.importKey('raw', hexDecode(c.key), 'AES-GCM', false, ['decrypt']));
  let r;
  try {
    r = await fetch('/v1/s/' + linkID + '/chunks?ids=' + cs.map((c) => c.id).join(','),
      { credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer', signal });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new Failure('network', { detail: String(err && err.message) });
  }
  if (!r.ok) throw await httpFailure(r);
  const body = new BodyReader(r.body);
  const opened = [];
  try {
    for (let i = 0; i < cs.length; i++) {
      const c = cs[i];
      const segs = Math.ceil(c.n / SEG);
      const sealedLen = c.n + TAG * segs;
      let { buf, got: h } = await body.fill(spare.pop() || new ArrayBuffer(BUF), 0, 4);
      if (h !== 4) { spare.push(buf); throw new Failure('size', { got: 0, n: c.n }); }
      const frame = new DataView(buf, 0, 4).getUint32(0);
      if (frame !== sealedLen) { spare.push(buf); throw new Failure('size', { got: frame, n: c.n }); }
      ({ buf, got: h } = await body.fill(buf, 0, sealedLen));
      if (h !== sealedLen) { spare.push(buf); throw new Failure('size', { got: h, n: c.n }); }
      // Before the last chunk goes out, the answer must end: bytes after it
      // are a broken answer too.
      if (i === cs.length - 1 && !(await body.atEnd())) { spare.push(buf); throw new Failure('size', { got: sealedLen + 1, n: c.n }); }
      const key = await keys[i];
      // The whole sealed chunk's SHA-256 must be the manifest's sum: every
      // holder of the link has the content key and could seal other bytes
      // under it that decrypt, but not bytes with this hash. No plaintext
      // is handed on before the hash matched.
      const sum = crypto.subtle.digest('SHA-256', new Uint8Array(buf, 0, sealedLen));
      const ops = [];
      for (let j = 0; j < segs; j++) {
        const off = j * (SEG + TAG);
        ops.push(crypto.subtle.decrypt({ name: 'AES-GCM', iv: segNonce(j, j === segs - 1), tagLength: 128 }, key,
          new Uint8Array(buf, off, Math.min(SEG + TAG, sealedLen - off))));
      }
      spare.push(buf); // WebCrypto copied its inputs: the buffer is free again
      const p = Promise.all([sum, Promise.all(ops)]).then(([d, bufs]) => {
        if (hexEncode(d) !== c.sum) throw new Failure('sum');
        return got(i, bufs);
      }, () => { throw new Failure('auth'); });
      p.catch(() => {}); // awaited below
      opened.push(p);
    }
  } catch (err) {
    body.cancel();
    throw err;
  }
  await Promise.all(opened);
}

async function httpFailure(r) {
  let code = '';
  let message = '';
  try {
    const j = await r.json();
    code = (j.error && j.error.code) || '';
    message = (j.error && j.error.message) || '';
  } catch { /* not JSON: the status says enough */ }
  return new Failure('http', { status: r.status, code, message });
}

function failureData(err) {
  const f = err instanceof Failure ? err : new Failure('bug', { detail: String(err && err.message) });
  return { kind: f.kind, status: f.status, code: f.code, message: f.message === f.kind ? '' : f.message, detail: f.detail, got: f.got, n: f.n };
}
