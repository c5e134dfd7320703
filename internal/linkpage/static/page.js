// The link page: opens https://SERVER/s/ID#SECRET in the browser with
// WebCrypto only. Format: docs/FORMAT.md (links, chunks); nothing here is
// loaded from anywhere but this server, and the secret (the fragment) is
// never sent: every request below carries only the link id and chunk ids.
'use strict';
(() => {
  const CHUNK = 4194304; // plaintext bytes of a full chunk
  const SEG = 65536; // plaintext bytes of a STREAM segment
  const TAG = 16; // AES-GCM tag
  const AHEAD = 4; // chunks fetched and opened ahead of the one being saved
  const enc = new TextEncoder();
  const $ = (id) => document.getElementById(id);

  // LinkError is a message for the person holding the link.
  class LinkError extends Error {}

  function setState(s) { document.body.dataset.state = s; }

  function showError(err) {
    const msg = err instanceof LinkError ? err.message
      : 'Something went wrong in this page: ' + (err && err.message ? err.message : String(err)) +
        '. The command line reads links too: kumo get URL';
    $('status').hidden = true;
    $('progress').hidden = true;
    $('error').textContent = msg;
    $('error').hidden = false;
    setState('error');
  }

  function b64urlDecode(s) {
    if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new Error('not base64url');
    let t = s.replace(/-/g, '+').replace(/_/g, '/');
    while (t.length % 4) t += '=';
    return b64Decode(t);
  }

  function b64Decode(s) {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  const HEX64 = /^[0-9a-f]{64}$/;

  function hexDecode(s) {
    const out = new Uint8Array(s.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
    return out;
  }

  function human(n) {
    const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
    let u = 0;
    let v = n;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return u === 0 ? n + ' bytes' : v.toFixed(v < 10 ? 1 : 0) + ' ' + units[u];
  }

  // fetchOK fetches a same-origin URL and turns the link API's refusals
  // into messages: 404 unknown or revoked, 410 expired.
  async function fetchOK(path, signal) {
    let r;
    try {
      r = await fetch(path, { credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer', signal });
    } catch (err) {
      if (err && err.name === 'AbortError') throw err;
      throw new LinkError('Could not reach the server (' + err.message + '). Check your connection and reload the page.');
    }
    if (r.ok) return r;
    let code = '';
    let message = '';
    try {
      const j = await r.json();
      code = (j.error && j.error.code) || '';
      message = (j.error && j.error.message) || '';
    } catch { /* not JSON: the status says enough */ }
    if (r.status === 410 || code === 'link_expired') {
      throw new LinkError('This link has expired. Ask the person who shared it for a new link.');
    }
    if (r.status === 404) {
      throw new LinkError('This link does not exist or was revoked by its owner. Check that the whole address was copied, or ask for a new link.');
    }
    if (r.status === 429) {
      throw new LinkError('The server is limiting requests for this link; wait a minute and reload.');
    }
    throw new LinkError('The server refused the request (HTTP ' + r.status + (code ? ', ' + code : '') +
      (message ? ': ' + message : '') + '). Try again later.');
  }

  async function deriveKey(secret, id) {
    const ikm = await crypto.subtle.importKey('raw', secret, 'HKDF', false, ['deriveKey']);
    return crypto.subtle.deriveKey(
      { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: enc.encode('kumo/v2/link/' + id + '/key') },
      ikm, { name: 'AES-GCM', length: 256 }, false, ['decrypt']);
  }

  // openBlob opens 0x01 || nonce(12) || AES-256-GCM(K, nonce, manifest, ad="kumo/v2/link/"+ID).
  async function openBlob(key, id, blob) {
    if (blob.length < 1 + 12 + TAG || blob[0] !== 1) {
      throw new LinkError('This link uses a format this page does not know (version ' + blob[0] +
        '). Try kumo get URL with an up-to-date kumo.');
    }
    let pt;
    try {
      pt = await crypto.subtle.decrypt(
        { name: 'AES-GCM', iv: blob.subarray(1, 13), additionalData: enc.encode('kumo/v2/link/' + id), tagLength: 128 },
        key, blob.subarray(13));
    } catch {
      throw new LinkError('Wrong secret: the link cannot be opened with the secret in this address. ' +
        'Check that the whole link was copied, including everything after "#".');
    }
    try {
      return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(pt));
    } catch {
      throw new LinkError('The link opened but its file list is not valid JSON; it was made by a broken client.');
    }
  }

  function bad(why) { return new LinkError('The link\'s file list is malformed (' + why + '); it was made by a broken client.'); }

  function cleanPath(p) {
    if (typeof p !== 'string' || p.includes('\0')) return false;
    return p.split('/').every((el) => el !== '' && el !== '.' && el !== '..');
  }

  // validate checks the manifest as docs/FORMAT.md states it, so the rest of
  // the page can trust its shape (the AEAD already vouches for its origin).
  function validate(m) {
    if (!m || typeof m !== 'object' || m.v !== 1) throw bad('unknown version');
    if (m.kind !== 'file' && m.kind !== 'dir') throw bad('kind');
    if (typeof m.name !== 'string' || m.name === '' || m.name.includes('/') || m.name.includes('\0')) throw bad('name');
    if (!Array.isArray(m.entries)) throw bad('entries');
    if (m.kind === 'file' && (m.entries.length !== 1 || m.entries[0].path !== '' || m.entries[0].type !== 'file')) throw bad('a file link has one file entry');
    const seen = new Set();
    for (const e of m.entries) {
      if (!e || typeof e !== 'object') throw bad('entry');
      if (m.kind === 'dir' && !cleanPath(e.path)) throw bad('path');
      if (seen.has(e.path)) throw bad('duplicate path');
      seen.add(e.path);
      if (m.kind === 'dir' && e.path.includes('/') && !seen.has(e.path.slice(0, e.path.lastIndexOf('/')))) throw bad('a child before its folder');
      if (e.type === 'dir' || e.type === 'symlink') continue;
      if (e.type !== 'file') throw bad('type');
      if (!Number.isSafeInteger(e.size) || e.size < 0) throw bad('size');
      const cs = e.chunks || [];
      if (!Array.isArray(cs)) throw bad('chunks');
      let sum = 0;
      cs.forEach((c, i) => {
        if (!c || !Number.isSafeInteger(c.n) || c.n < 1 || c.n > CHUNK) throw bad('chunk length');
        if (i < cs.length - 1 && c.n !== CHUNK) throw bad('a short chunk before the last');
        if (c.id !== '' && (!HEX64.test(c.id) || !HEX64.test(c.key))) throw bad('chunk id or key');
        sum += c.n;
      });
      if (sum !== e.size) throw bad('chunk lengths do not add up to the size');
    }
  }

  function segNonce(i, final) {
    const iv = new Uint8Array(12);
    let v = i;
    for (let b = 10; b >= 0 && v > 0; b--) { iv[b] = v % 256; v = Math.floor(v / 256); }
    iv[11] = final ? 1 : 0;
    return iv;
  }

  // openChunk fetches one sealed chunk and opens its STREAM segments;
  // the result is the chunk's plaintext as a list of buffers.
  async function openChunk(linkID, c, signal) {
    if (c.id === '') return [new Uint8Array(c.n)]; // a hole
    const segs = Math.ceil(c.n / SEG);
    const key = await crypto.subtle.importKey('raw', hexDecode(c.key), 'AES-GCM', false, ['decrypt']);
    const r = await fetchOK('/v1/s/' + linkID + '/chunks/' + c.id, signal);
    const sealed = new Uint8Array(await r.arrayBuffer());
    if (sealed.length !== c.n + TAG * segs) {
      throw new LinkError('The server sent a chunk of the wrong size (' + sealed.length + ' bytes for ' + c.n +
        '); the download stopped and nothing more was saved. Try again, or use kumo get URL.');
    }
    const ops = [];
    for (let i = 0; i < segs; i++) {
      const off = i * (SEG + TAG);
      const end = Math.min(off + SEG + TAG, sealed.length);
      ops.push(crypto.subtle.decrypt({ name: 'AES-GCM', iv: segNonce(i, i === segs - 1), tagLength: 128 }, key, sealed.subarray(off, end)));
    }
    try {
      return (await Promise.all(ops)).map((b) => new Uint8Array(b));
    } catch {
      throw new LinkError('Part of this file failed to decrypt: the data was altered or damaged on the way. ' +
        'The download stopped; discard what was saved.');
    }
  }

  // pieces yields a file's plaintext chunk by chunk, with AHEAD chunks in
  // flight so the network and the decryption overlap; at most about
  // (AHEAD+1) chunks are in memory whatever the file's size.
  async function* pieces(linkID, e, progress) {
    const ctl = new AbortController();
    const cs = e.chunks || [];
    const queue = [];
    let next = 0;
    const start = () => {
      const p = openChunk(linkID, cs[next++], ctl.signal);
      p.catch(() => {}); // awaited in order below
      queue.push(p);
    };
    try {
      while (next < cs.length && queue.length < AHEAD) start();
      while (queue.length) {
        const bufs = await queue.shift();
        if (next < cs.length) start();
        progress(bufs.reduce((s, b) => s + b.length, 0));
        yield bufs;
      }
    } finally {
      ctl.abort();
    }
  }

  async function saveWithPicker(name, src) {
    const handle = await window.showSaveFilePicker({ suggestedName: name });
    const w = await handle.createWritable();
    try {
      for await (const bufs of src) for (const b of bufs) await w.write(b);
      await w.close();
    } catch (err) {
      await w.abort().catch(() => {});
      throw err;
    }
  }

  async function activeWorker() {
    const reg = await navigator.serviceWorker.register('/s/_/sw.js', { scope: '/s/_/dl/' });
    const w = reg.installing || reg.waiting || reg.active;
    if (w.state !== 'activated') {
      await new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('the download helper (service worker) did not start')), 15000);
        w.addEventListener('statechange', () => {
          if (w.state === 'activated') { clearTimeout(t); resolve(); }
          if (w.state === 'redundant') { clearTimeout(t); reject(new Error('the download helper (service worker) failed to start')); }
        });
      });
    }
    return reg.active;
  }

  // saveWithWorker streams the file to the browser's download manager: the
  // service worker answers a download URL with a stream it pulls from this
  // page through a MessageChannel, one chunk per pull (backpressure).
  async function saveWithWorker(name, size, src) {
    const sw = await activeWorker();
    const idb = crypto.getRandomValues(new Uint8Array(16));
    const dl = Array.from(idb, (b) => b.toString(16).padStart(2, '0')).join('');
    const ch = new MessageChannel();
    const port = ch.port1;
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the download helper (service worker) did not answer')), 15000);
      port.onmessage = (ev) => { if (ev.data === 'ready') { clearTimeout(t); resolve(); } };
      sw.postMessage({ type: 'download', id: dl, name, size }, [ch.port2]);
    });
    const ping = setInterval(() => sw.postMessage({ type: 'ping' }), 5000); // keeps the worker alive
    const frame = document.createElement('iframe');
    frame.hidden = true;
    try {
      await new Promise((resolve, reject) => {
        port.onmessage = async (ev) => {
          if (ev.data === 'cancel') {
            src.return().catch(() => {});
            reject(new LinkError('The download was cancelled.'));
            return;
          }
          if (ev.data !== 'pull') return;
          try {
            const { value, done } = await src.next();
            if (done) {
              port.postMessage({ done: true });
              resolve();
            } else {
              port.postMessage({ bufs: value.map((b) => b.buffer) }, value.map((b) => b.buffer));
            }
          } catch (err) {
            port.postMessage({ error: err.message });
            reject(err);
          }
        };
        frame.src = '/s/_/dl/' + dl;
        document.body.appendChild(frame);
      });
    } finally {
      clearInterval(ping);
      setTimeout(() => frame.remove(), 60000);
    }
  }

  // saveAsBlob is the last resort: the plaintext is gathered into a Blob
  // (Chromium spills big blobs to disk; other browsers may keep it in memory).
  async function saveAsBlob(name, src) {
    const parts = [];
    for await (const bufs of src) parts.push(new Blob(bufs));
    const url = URL.createObjectURL(new Blob(parts, { type: 'application/octet-stream' }));
    const a = document.createElement('a');
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 120000);
  }

  let busy = false;

  async function download(linkID, e, name) {
    if (busy) return;
    busy = true;
    for (const b of document.querySelectorAll('button.dl')) b.disabled = true;
    const p = $('progress');
    p.hidden = false;
    p.textContent = 'Saving ' + name + '…';
    setState('saving');
    let done = 0;
    const t0 = performance.now();
    const progress = (n) => {
      done += n;
      const s = (performance.now() - t0) / 1000;
      p.textContent = 'Saving ' + name + ': ' + human(done) + ' of ' + human(e.size) +
        (s > 0.5 ? ' (' + human(Math.round(done / s)) + '/s)' : '');
    };
    const src = pieces(linkID, e, progress);
    try {
      if (typeof window.showSaveFilePicker === 'function') {
        document.body.dataset.saver = 'picker';
        await saveWithPicker(name, src);
      } else if ('serviceWorker' in navigator && navigator.serviceWorker && window.isSecureContext) {
        document.body.dataset.saver = 'worker';
        await saveWithWorker(name, e.size, src);
      } else {
        document.body.dataset.saver = 'blob';
        await saveAsBlob(name, src);
      }
      p.textContent = 'Saved ' + name + ' (' + human(e.size) + ', every byte decrypted and authenticated).';
      setState('saved');
    } catch (err) {
      if (err && err.name === 'AbortError') { // the save dialog was closed
        p.textContent = 'Not saved.';
        setState('ready');
      } else {
        showError(err);
      }
    } finally {
      busy = false;
      for (const b of document.querySelectorAll('button.dl')) b.disabled = false;
    }
  }

  function render(id, m, expires) {
    $('title').textContent = m.name;
    document.title = m.name + ' — kumo link';
    const files = m.entries.filter((e) => e.type === 'file');
    const total = files.reduce((s, e) => s + e.size, 0);
    let sum = m.kind === 'dir' ? 'Folder: ' + files.length + ' file' + (files.length === 1 ? '' : 's') + ', ' + human(total)
      : 'File: ' + human(total);
    if (expires) sum += '. The link expires ' + new Date(expires).toLocaleString() + '.';
    $('summary').textContent = sum;
    const body = $('files').tBodies[0];
    for (const e of m.entries) {
      const tr = body.insertRow();
      tr.dataset.path = e.path;
      const nameCell = tr.insertCell();
      nameCell.textContent = m.kind === 'file' ? m.name : (e.type === 'dir' ? e.path + '/' : e.path);
      const size = tr.insertCell();
      size.className = 'size';
      const act = tr.insertCell();
      if (e.type === 'dir') {
        nameCell.className = 'dir';
      } else if (e.type === 'symlink') {
        size.textContent = 'link';
        act.textContent = '→ ' + String(e.target || '');
      } else {
        size.textContent = human(e.size);
        size.title = e.size + ' bytes';
        size.dataset.bytes = String(e.size);
        const b = document.createElement('button');
        b.className = 'dl';
        b.type = 'button';
        b.textContent = 'Download';
        const name = m.kind === 'file' ? m.name : e.path.slice(e.path.lastIndexOf('/') + 1);
        b.addEventListener('click', () => download(id, e, name));
        act.appendChild(b);
      }
    }
    $('status').hidden = true;
    $('content').hidden = false;
    setState('ready');
  }

  async function main() {
    const mm = location.pathname.match(/^\/s\/([A-Za-z0-9_-]{22})$/);
    if (!mm) throw new LinkError('This is not a link address: a link looks like https://SERVER/s/ID#SECRET.');
    const id = mm[1];
    const frag = location.hash.slice(1);
    if (frag === '') {
      throw new LinkError('This link has no secret: the part after "#" is missing. ' +
        'Ask the sender for the whole link, including everything after "#".');
    }
    let secret = null;
    try { secret = b64urlDecode(frag); } catch { /* reported below */ }
    if (!secret || frag.length !== 43 || secret.length !== 32) {
      throw new LinkError('The secret in this link is malformed: the part after "#" should be 43 letters, digits, "-" or "_". ' +
        'Check that the whole link was copied.');
    }
    if (!window.crypto || !crypto.subtle) {
      throw new LinkError('This browser cannot decrypt here: WebCrypto needs a secure (https) page. Use kumo get URL.');
    }
    const info = await (await fetchOK('/v1/s/' + id)).json();
    if (info.password) {
      throw new LinkError('This link is password-protected: open it with kumo get URL (this page cannot open password links yet).');
    }
    if (typeof info.blob !== 'string') throw new LinkError('The server answered without the link\'s sealed data. Try kumo get URL.');
    const key = await deriveKey(secret, id);
    const m = await openBlob(key, id, b64Decode(info.blob));
    validate(m);
    render(id, m, info.expires);
  }

  window.addEventListener('hashchange', () => location.reload());
  document.addEventListener('DOMContentLoaded', () => { setState('opening'); main().catch(showError); });
})();
