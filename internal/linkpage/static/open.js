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

// readAll reads a response body of exactly want bytes into a spare buffer,
// straight into it where the browser can (a BYOB reader), else by copying
// each piece.
async function readAll(body, want, n) {
  let buf = spare.pop() || new ArrayBuffer(BUF);
  let got = 0;
  let rd = null;
  try { rd = body.getReader({ mode: 'byob' }); } catch { /* not a byte stream here */ }
  if (rd) {
    while (got < want) {
      const { done, value } = await rd.read(new Uint8Array(buf, got, want - got));
      if (done) { if (value) buf = value.buffer; break; }
      buf = value.buffer;
      got += value.byteLength;
    }
    if (got === want) {
      const { done, value } = await rd.read(new Uint8Array(buf, 0, 1)); // must be the end
      if (value) buf = value.buffer;
      if (!done) { rd.cancel().catch(() => {}); spare.push(buf); throw new Failure('size', { got: got + 1, n }); }
    }
  } else {
    rd = body.getReader();
    const view = new Uint8Array(buf);
    for (;;) {
      const { done, value } = await rd.read();
      if (done) break;
      if (got + value.length > want) { rd.cancel().catch(() => {}); spare.push(buf); throw new Failure('size', { got: got + value.length, n }); }
      view.set(value, got);
      got += value.length;
    }
  }
  if (got !== want) { spare.push(buf); throw new Failure('size', { got, n }); }
  return buf;
}

// openChunk fetches chunk c of the link and opens its segments.
async function openChunk(linkID, c, signal) {
  const key = await crypto.subtle.importKey('raw', hexDecode(c.key), 'AES-GCM', false, ['decrypt']);
  let r;
  try {
    r = await fetch('/v1/s/' + linkID + '/chunks/' + c.id, { credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer', signal });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new Failure('network', { detail: String(err && err.message) });
  }
  if (!r.ok) {
    let code = '';
    let message = '';
    try {
      const j = await r.json();
      code = (j.error && j.error.code) || '';
      message = (j.error && j.error.message) || '';
    } catch { /* not JSON: the status says enough */ }
    throw new Failure('http', { status: r.status, code, message });
  }
  const segs = Math.ceil(c.n / SEG);
  const sealedLen = c.n + TAG * segs;
  const sealed = await readAll(r.body, sealedLen, c.n);
  const ops = [];
  for (let i = 0; i < segs; i++) {
    const off = i * (SEG + TAG);
    ops.push(crypto.subtle.decrypt({ name: 'AES-GCM', iv: segNonce(i, i === segs - 1), tagLength: 128 }, key,
      new Uint8Array(sealed, off, Math.min(SEG + TAG, sealedLen - off))));
  }
  spare.push(sealed); // WebCrypto copied its inputs: the buffer is free again
  try {
    return await Promise.all(ops);
  } catch {
    throw new Failure('auth');
  }
}

function failureData(err) {
  const f = err instanceof Failure ? err : new Failure('bug', { detail: String(err && err.message) });
  return { kind: f.kind, status: f.status, code: f.code, message: f.message === f.kind ? '' : f.message, detail: f.detail, got: f.got, n: f.n };
}
