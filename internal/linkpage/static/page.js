// The link page: opens https://SERVER/s/ID#SECRET in the browser with
// WebCrypto only. Format: docs/FORMAT.md (links, chunks); nothing here is
// loaded from anywhere but this server, and the secret (the fragment) is
// never sent: every request below carries only the link id and chunk ids.
'use strict';
(() => {
  const CHUNK = 4194304; // plaintext bytes of a full chunk
  const SEG = 65536; // plaintext bytes of a STREAM segment
  const TAG = 16; // AES-GCM tag
  const AHEAD = 24; // chunks fetched and opened ahead of the one being saved
  const BATCH = 8; // chunks a request (32 MiB): each response costs chromium's workers CPU of its own (docs/BENCH.md)
  const WORKERS = 3; // chunk workers, at most (fewer on a machine with fewer cores)
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

  function human(n) {
    const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
    let u = 0;
    let v = n;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return u === 0 ? n + ' bytes' : v.toFixed(v < 10 ? 1 : 0) + ' ' + units[u];
  }

  // refusal turns the link API's refusals into messages: 404 unknown or
  // revoked, 410 expired.
  function refusal(status, code, message) {
    if (status === 410 || code === 'link_expired') {
      return new LinkError('This link has expired. Ask the person who shared it for a new link.');
    }
    if (status === 404) {
      return new LinkError('This link does not exist or was revoked by its owner. Check that the whole address was copied, or ask for a new link.');
    }
    if (status === 429) {
      return new LinkError('The server is limiting requests for this link; wait a minute and reload.');
    }
    return new LinkError('The server refused the request (HTTP ' + status + (code ? ', ' + code : '') +
      (message ? ': ' + message : '') + '). Try again later.');
  }

  async function errorOf(r) {
    try {
      const j = await r.json();
      return { code: (j.error && j.error.code) || '', message: (j.error && j.error.message) || '' };
    } catch { /* not JSON: the status says enough */ }
    return { code: '', message: '' };
  }

  function unreachable(err) {
    return new LinkError('Could not reach the server (' + err.message + '). Check your connection and reload the page.');
  }

  // fetchOK fetches a same-origin URL; a refusal is a LinkError.
  async function fetchOK(path, init) {
    let r;
    try {
      r = await fetch(path, { credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer', ...init });
    } catch (err) {
      throw unreachable(err);
    }
    if (r.ok) return r;
    const { code, message } = await errorOf(r);
    throw refusal(r.status, code, message);
  }

  function b64Encode(b) {
    let s = '';
    for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
    return btoa(s);
  }

  // passwordKeys derives a password link's keys in the password worker
  // (pw.js: the Go code of kumo get, compiled to WebAssembly): {key, auth},
  // 32 bytes each, or a LinkError.
  let pwWorker = null;
  function passwordKeys(req) {
    if (!pwWorker) pwWorker = new Worker('/s/_/pw.js');
    return new Promise((resolve, reject) => {
      pwWorker.onmessage = (ev) => {
        if (ev.data.error) reject(new LinkError('This link\'s password settings cannot be used (' + ev.data.error + '). Try kumo get URL.'));
        else resolve(ev.data);
      };
      pwWorker.onerror = (ev) => {
        ev.preventDefault();
        pwWorker = null;
        reject(new LinkError('This browser could not run the password step (WebAssembly: ' + (ev.message || 'failed to start') +
          '). Use kumo get URL, which asks for the password too.'));
      };
      pwWorker.postMessage(req, [req.password.buffer]);
    });
  }

  // askPassword shows the password form until the server accepts a
  // password (POST /v1/s/ID/open with the auth key derived from it) and
  // returns the manifest key and the sealed manifest. A wrong password or
  // the server's rate limit is said under the form, which stays.
  function askPassword(id, secret, pw) {
    let salt = null;
    try { salt = b64Decode(pw.salt); } catch { /* reported below */ }
    const kdf = pw.kdf || {};
    if (!salt || ![kdf.time, kdf.memory_kib, kdf.threads].every(Number.isSafeInteger)) {
      return Promise.reject(new LinkError('The server sent malformed password settings for this link. Try kumo get URL.'));
    }
    const form = $('pwform');
    const msg = $('pwmsg');
    const btn = $('pwbtn');
    $('status').hidden = true;
    form.hidden = false;
    setState('password');
    $('pw').focus();
    return new Promise((resolve, reject) => {
      const say = (text, wrong) => {
        msg.textContent = text;
        msg.classList.toggle('wrong', wrong);
        btn.disabled = false;
        setState('password');
      };
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        if (btn.disabled) return;
        btn.disabled = true;
        setState('checking');
        msg.classList.remove('wrong');
        msg.textContent = 'Checking the password (deriving its key takes a few seconds)…';
        try {
          const k = await passwordKeys({ id, secret: secret.slice(), password: enc.encode($('pw').value), salt,
            time: kdf.time, memory: kdf.memory_kib, threads: kdf.threads });
          let r;
          try {
            r = await fetch('/v1/s/' + id + '/open', {
              method: 'POST', credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer',
              headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ auth: b64Encode(k.auth) }),
            });
          } catch (err) {
            throw unreachable(err);
          }
          if (r.status === 403 || r.status === 429) {
            const { code } = await errorOf(r);
            if (r.status === 403 && code === 'wrong_password') {
              say('Wrong password: the server refused it. Check it and try again.', true);
              return;
            }
            if (r.status === 429) {
              const wait = parseInt(r.headers.get('Retry-After') || '', 10);
              say('Too many password attempts for this link: the server refuses more for now. Wait ' +
                (wait > 0 ? wait + ' seconds' : 'a minute') + ', then try again.', true);
              return;
            }
          }
          if (!r.ok) {
            const { code, message } = await errorOf(r);
            throw refusal(r.status, code, message);
          }
          const j = await r.json();
          if (typeof j.blob !== 'string') throw new LinkError('The server answered without the link\'s sealed data. Try kumo get URL.');
          const key = await crypto.subtle.importKey('raw', k.key, 'AES-GCM', false, ['decrypt']);
          form.hidden = true;
          resolve({ key, blob: b64Decode(j.blob) });
        } catch (err) {
          form.hidden = true;
          reject(err);
        }
      });
    });
  }

  async function deriveKey(secret, id) {
    const ikm = await crypto.subtle.importKey('raw', secret, 'HKDF', false, ['deriveKey']);
    return crypto.subtle.deriveKey(
      { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: enc.encode('kumo/v2/link/' + id + '/key') },
      ikm, { name: 'AES-GCM', length: 256 }, false, ['decrypt']);
  }

  // openBlob opens 0x02 || nonce(12) || AES-256-GCM(K, nonce, r || manifest, ad="kumo/v2/link/"+ID)
  // and checks that the secret is the commitment to what it holds:
  // secret = SHA-256("kumo/v2/link/commit" || ID || r || manifest). Every
  // holder of the link knows K and could seal another manifest under it; only
  // the one the link was made with has this hash.
  async function openBlob(key, id, secret, blob) {
    if (blob.length > 0 && blob[0] === 1) {
      throw new LinkError('This link was made by an earlier version of kumo and can no longer be opened safely. ' +
        'Ask its owner to make it again (kumo link).');
    }
    if (blob.length < 1 + 12 + 32 + TAG || blob[0] !== 2) {
      throw new LinkError('This link uses a format this page does not know (version ' + blob[0] +
        '). Try kumo get URL with an up-to-date kumo.');
    }
    let pt;
    try {
      pt = new Uint8Array(await crypto.subtle.decrypt(
        { name: 'AES-GCM', iv: blob.subarray(1, 13), additionalData: enc.encode('kumo/v2/link/' + id), tagLength: 128 },
        key, blob.subarray(13)));
    } catch {
      throw new LinkError('Wrong secret: the link cannot be opened with the secret in this address. ' +
        'Check that the whole link was copied, including everything after "#".');
    }
    const prefix = enc.encode('kumo/v2/link/commit' + id);
    const input = new Uint8Array(prefix.length + pt.length);
    input.set(prefix);
    input.set(pt, prefix.length);
    const want = new Uint8Array(await crypto.subtle.digest('SHA-256', input));
    let diff = pt.length < 32 ? 1 : 0;
    for (let i = 0; i < 32; i++) diff |= want[i] ^ secret[i];
    if (diff !== 0) {
      throw new LinkError('This link does not open: the server sent a file list that is not the one the secret in this ' +
        'address was made for (it was altered on the server). Nothing was downloaded.');
    }
    try {
      return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(pt.subarray(32)));
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
  // the page can trust its shape (the secret's commitment already vouches
  // for its origin).
  function validate(m) {
    if (!m || typeof m !== 'object' || m.v !== 2) throw bad('unknown version');
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
        if (c.id === '' ? c.key !== '' || c.sum !== '' : !HEX64.test(c.id) || !HEX64.test(c.key) || !HEX64.test(c.sum)) {
          throw bad('chunk id, key or sum');
        }
        sum += c.n;
      });
      if (sum !== e.size) throw bad('chunk lengths do not add up to the size');
    }
  }

  // chunkError is the message for a chunk worker's failure (chunks.js).
  function chunkError(f, c) {
    switch (f.kind) {
      case 'network': return unreachable(new Error(f.detail));
      case 'http': return refusal(f.status, f.code, f.message);
      case 'size': return new LinkError('The server sent a chunk of the wrong size (' + f.got + ' bytes or more for ' + (f.n || c.n) +
        '); the download stopped and nothing more was saved. Try again, or use kumo get URL.');
      case 'auth': return new LinkError('Part of this file failed to decrypt: the data was altered or damaged on the way. ' +
        'The download stopped; discard what was saved.');
      case 'sum': return new LinkError('Part of this file does not match the link: the server sent other bytes than the ones ' +
        'the link was made with (they were altered on the server). The download stopped; discard what was saved.');
    }
    return new Error(f.detail || 'the chunk worker failed');
  }

  // chunkWorkers starts the workers that fetch and open chunks (chunks.js):
  // a few, so fetching and WebCrypto's copies run on more than one core and
  // the page's own thread only passes buffers along. They live as long as
  // the page.
  let pool = null;
  function chunkWorkers() {
    if (pool) return pool;
    const n = Math.min(WORKERS, Math.max(2, navigator.hardwareConcurrency || 2));
    const waiting = new Map(); // job -> {slots: [{resolve, reject, chunk}] (one per chunk of the request), left}
    let broken = null;
    const rejectAll = (job, err) => { for (const sl of job.slots) sl.reject(err); };
    const fail = (err) => { broken = err; for (const job of waiting.values()) rejectAll(job, err); waiting.clear(); };
    const workers = Array.from({ length: n }, () => {
      const w = new Worker('/s/_/chunks.js');
      w.onmessage = (ev) => {
        const m = ev.data;
        const job = waiting.get(m.job);
        if (!job) return;
        if (m.error) {
          waiting.delete(m.job);
          rejectAll(job, chunkError(m.error, job.slots[0].chunk));
          return;
        }
        job.slots[m.i].resolve(m.bufs.map((b) => new Uint8Array(b)));
        if (--job.left === 0) waiting.delete(m.job);
      };
      w.onerror = (ev) => {
        ev.preventDefault();
        const err = new Error('the download helper (chunk worker) failed: ' + (ev.message || 'no reason given'));
        err.died = true; // it will tell nobody else (saveWithWorker)
        fail(err);
      };
      return w;
    });
    let jobs = 0;
    pool = {
      // openBatch asks a worker for chunks cs (distinct ids) in one
      // request; it answers a promise of each chunk's plaintext.
      // With feed ({dl, at}), the plaintext goes to the service worker's
      // port of download dl (connect) as chunks at[i] of the file, and the
      // promises answer empty lists once it went.
      openBatch(linkID, cs, feed) {
        const job = ++jobs;
        const slots = [];
        const ps = cs.map((c) => new Promise((resolve, reject) => slots.push({ resolve, reject, chunk: c })));
        if (broken) {
          rejectAll({ slots }, broken);
          return ps;
        }
        waiting.set(job, { slots, left: cs.length });
        workers[job % n].postMessage({ type: 'batch', job, link: linkID, chunks: cs.map((c) => ({ id: c.id, key: c.key, sum: c.sum, n: c.n })),
          feed: feed ? feed.dl : '', at: feed ? feed.at : [] });
        return ps;
      },
      // connect gives each worker a port to the service worker for
      // download dl and answers the other ends, for the service worker.
      connect(dl) {
        return workers.map((w) => {
          const ch = new MessageChannel();
          w.postMessage({ type: 'feed', dl }, [ch.port1]);
          return ch.port2;
        });
      },
      disconnect(dl) {
        for (const w of workers) w.postMessage({ type: 'unfeed', dl });
      },
      abort() {
        for (const w of workers) w.postMessage({ type: 'abort' });
        waiting.clear();
      },
    };
    return pool;
  }

  // pieces yields a file's plaintext chunk by chunk (a list of buffers per
  // chunk), with AHEAD chunks being fetched, BATCH a request, and opened by
  // the workers while one is saved: at most about AHEAD+1 chunks are in
  // memory whatever the file's size.
  async function* pieces(linkID, e, progress) {
    const cs = e.chunks || [];
    const queue = [];
    let next = 0;
    // more queues the next chunks: holes as zeros, the others asked for in
    // one request of at most BATCH distinct chunks (a chunk repeated in the
    // file goes to the next request).
    const more = () => {
      const order = []; // per chunk: a hole's promise, or its index in batch
      const batch = [];
      const ids = new Set();
      while (next < cs.length && queue.length + order.length < AHEAD && batch.length < BATCH) {
        const c = cs[next];
        if (c.id !== '' && ids.has(c.id)) break;
        next++;
        if (c.id === '') {
          order.push(Promise.resolve([new Uint8Array(c.n)])); // a hole: zeros
          continue;
        }
        ids.add(c.id);
        order.push(batch.length);
        batch.push(c);
      }
      const ps = batch.length ? chunkWorkers().openBatch(linkID, batch) : [];
      for (const o of order) {
        const p = typeof o === 'number' ? ps[o] : o;
        p.catch(() => {}); // awaited in order below
        queue.push(p);
      }
    };
    try {
      while (next < cs.length && queue.length < AHEAD) more();
      while (queue.length) {
        const bufs = await queue.shift();
        if (next < cs.length && queue.length <= AHEAD - BATCH) more();
        progress(bufs.reduce((s, b) => s + b.length, 0));
        yield bufs;
      }
    } finally {
      if (queue.length && pool) pool.abort();
    }
  }

  const TEMP = 'kumo-download-'; // OPFS names: TEMP + time + '-' + random
  const TEMP_KEEP = 30 * 60 * 1000; // how long the browser has to copy one into its downloads

  // cleanTemp removes what earlier saves left in the origin's private file
  // system once the browser had time to copy it.
  async function cleanTemp() {
    if (!navigator.storage || typeof navigator.storage.getDirectory !== 'function') return;
    const root = await navigator.storage.getDirectory();
    for await (const name of root.keys()) {
      const t = name.startsWith(TEMP) ? parseInt(name.slice(TEMP.length), 10) : NaN;
      if (t > 0 && Date.now() - t > TEMP_KEEP) await root.removeEntry(name).catch(() => {});
    }
  }

  class NoRoom extends Error {}
  class NoWorker extends Error {}

  // saveWithTempFile writes the plaintext into a file of the origin's
  // private file system (a worker writes it with a synchronous handle, at
  // disk speed), then hands that file to the browser's downloads: for
  // where the service worker cannot run. The file is removed TEMP_KEEP
  // later (or by a later page, cleanTemp).
  // NoRoom when the origin's storage cannot hold the file: the caller
  // falls back to another way.
  async function saveWithTempFile(name, size, src) {
    const est = await navigator.storage.estimate();
    if (!(est.quota - est.usage > size + (64 << 20))) throw new NoRoom();
    const tmp = TEMP + Date.now() + '-' + Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
    const w = new Worker('/s/_/chunks.js');
    let replies = 0;
    const waiting = new Map();
    w.onmessage = (ev) => {
      const r = waiting.get(ev.data.reply);
      waiting.delete(ev.data.reply);
      if (r) (ev.data.error ? r.reject(new Error(ev.data.error)) : r.resolve());
    };
    let dead = null;
    w.onerror = (ev) => {
      ev.preventDefault();
      dead = new Error('the file writer (worker) failed: ' + (ev.message || 'no reason given'));
      for (const r of waiting.values()) r.reject(dead);
      waiting.clear();
    };
    const ask = (m, transfer) => new Promise((resolve, reject) => {
      if (dead) throw dead; // it would never answer
      m.reply = ++replies;
      waiting.set(m.reply, { resolve, reject });
      w.postMessage(m, transfer || []);
    });
    const root = await navigator.storage.getDirectory();
    try {
      try {
        await ask({ type: 'file-open', name: tmp });
      } catch {
        throw new NoRoom(); // no synchronous handles here
      }
      let at = 0;
      for await (const bufs of src) {
        const n = bufs.reduce((s, b) => s + b.length, 0);
        await ask({ type: 'file-write', at, bufs: bufs.map((b) => b.buffer) }, bufs.map((b) => b.buffer));
        at += n;
      }
      await ask({ type: 'file-close' });
    } catch (err) {
      await ask({ type: 'file-close' }).catch(() => {});
      w.terminate();
      await root.removeEntry(tmp).catch(() => {});
      if (err instanceof NoRoom) src.return().catch(() => {});
      throw err;
    }
    w.terminate();
    const f = await (await root.getFileHandle(tmp)).getFile();
    const url = URL.createObjectURL(f);
    const a = document.createElement('a');
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => { URL.revokeObjectURL(url); root.removeEntry(tmp).catch(() => {}); }, TEMP_KEEP);
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

  // downloadID is a new download's name at the service worker (/s/_/dl/ID).
  function downloadID() {
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // handOver gives the service worker a download (msg: its id, the file's
  // name, size and chunks, with the ports in feeds) and follows it: once it
  // took it, a hidden frame opens /s/_/dl/{id}, which it answers with the
  // plaintext's stream, and the browser saves that. on.started(port) runs
  // then (port: to tell it of a failure it cannot see), on.saved(n) for
  // each chunk it saved; the promise ends when the download is complete, or
  // with why it stopped. NoWorker: it did not take the download, nothing
  // was saved.
  async function handOver(sw, msg, feeds, on) {
    const ch = new MessageChannel();
    const port = ch.port1;
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new NoWorker()), 15000);
      port.onmessage = (ev) => {
        if (ev.data === 'ready') { clearTimeout(t); resolve(); }
        if (ev.data && ev.data.error) { clearTimeout(t); reject(chunkError(ev.data.error, {})); }
      };
      sw.postMessage({ type: 'download', ...msg }, [ch.port2, ...feeds]);
    });
    const ping = setInterval(() => sw.postMessage({ type: 'ping' }), 5000); // keeps the worker alive
    const frame = document.createElement('iframe');
    frame.hidden = true;
    try {
      await new Promise((resolve, reject) => {
        port.onmessage = (ev) => {
          const m = ev.data;
          if (m === 'cancel') reject(new LinkError('The download was cancelled.'));
          else if (m && m.saved) on.saved(m.saved);
          else if (m && m.done) resolve();
          else if (m && m.error) reject(chunkError(m.error, { n: m.n }));
        };
        frame.src = '/s/_/dl/' + msg.id;
        document.body.appendChild(frame);
        if (on.started) on.started(port);
      });
    } finally {
      clearInterval(ping);
      port.close();
      setTimeout(() => frame.remove(), 60000);
    }
  }

  // saveWithWorker streams the file to the browser's download manager: the
  // service worker answers a download URL with a stream of the plaintext,
  // which the chunk workers fetch, check, open and send it where it runs
  // in this page's process (nearby); elsewhere it fetches and opens the
  // chunks itself. It tells this page what it saved, or why it stopped.
  // NoWorker: the service worker could not be started or did not take the
  // download; nothing was saved and the caller tries another way.
  async function saveWithWorker(linkID, e, name, progress) {
    let sw;
    try {
      sw = await activeWorker();
    } catch {
      throw new NoWorker();
    }
    const cs = e.chunks || [];
    if (!(await nearby(sw))) {
      document.body.dataset.feed = 'service-worker';
      const chunks = cs.map((c) => ({ id: c.id, key: c.key, sum: c.sum, n: c.n }));
      await handOver(sw, { id: downloadID(), name, size: e.size, link: linkID, chunks }, [], { saved: progress });
      return;
    }
    document.body.dataset.feed = 'workers';
    const dl = downloadID();
    const pool = chunkWorkers();
    let port = null; // to the service worker, once it took the download
    let next = 0; // the next chunk to ask a worker for
    let saved = 0; // chunks the service worker saved
    let stopped = false;
    // more asks the workers for the next chunks, BATCH a request (holes
    // are the service worker's; a chunk repeated in the file goes to the
    // next request), while fewer than AHEAD are between the workers and
    // the download. A worker's failure reaches the service worker itself
    // (its stream errors); a worker that died is told it here.
    const more = () => {
      while (!stopped && next < cs.length && next - saved <= AHEAD - BATCH) {
        const batch = [];
        const at = [];
        const ids = new Set();
        while (next < cs.length && next - saved < AHEAD && batch.length < BATCH) {
          const c = cs[next];
          if (c.id !== '' && ids.has(c.id)) break;
          if (c.id !== '') {
            ids.add(c.id);
            batch.push(c);
            at.push(next);
          }
          next++;
        }
        if (!batch.length) continue;
        for (const p of pool.openBatch(linkID, batch, { dl, at })) {
          p.catch((err) => {
            if (stopped) return;
            stopped = true;
            if (err && err.died) port.postMessage({ error: { kind: 'bug', detail: err.message } });
          });
        }
      }
    };
    try {
      await handOver(sw, { id: dl, name, size: e.size, fed: true, chunks: cs.map((c) => ({ n: c.n, hole: c.id === '' })) },
        pool.connect(dl), {
          started(p) { port = p; more(); },
          saved(n) { saved++; progress(n); more(); },
        });
    } finally {
      stopped = true;
      if (saved < cs.length) pool.abort();
      pool.disconnect(dl);
    }
  }

  // nearby reports whether the service worker runs in this page's process,
  // where buffers pass to it without a copy: it times 16 MiB sent there
  // and back. In another process (it started for an earlier tab, which it
  // stays with) each byte handed over costs more than the service worker
  // fetching and opening the chunks itself (docs/BENCH.md): 350-530 ms
  // for these 16 MiB, against 0.1-5 ms. One trip decides unless it took
  // between NEAR and FAR (a busy core, say): then the best of at most 3.
  const NEAR = 60; // ms: the service worker is in this process
  const FAR = 180; // ms: clearly in another
  async function nearby(sw) {
    // Through a port, as the chunk workers' plaintext goes (a message to
    // the ServiceWorker object itself always passes the browser's process).
    const ch = new MessageChannel();
    const t0 = performance.now();
    sw.postMessage({ type: 'probe' }, [ch.port2]);
    const trip = (buf) => new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no answer')), 10000);
      ch.port1.onmessage = () => { clearTimeout(t); resolve(); };
      ch.port1.postMessage(buf, [buf]);
    });
    const trips = []; // ms each
    let best = Infinity;
    try {
      // An empty buffer first, untimed: a stopped service worker starts
      // and takes its end of the port meanwhile.
      await trip(new ArrayBuffer(0));
      do {
        const buf = new ArrayBuffer(16 << 20);
        const t = performance.now();
        await trip(buf);
        trips.push(performance.now() - t);
        best = Math.min(...trips);
      } while (trips.length < 3 && best >= NEAR && best <= FAR);
    } catch {
      return false;
    } finally {
      ch.port1.postMessage('end'); // the service worker closes its end
      ch.port1.close();
    }
    // The speed and tampering tests log these: the best trip, each trip
    // and the whole probe's time, in ms.
    document.body.dataset.probe = best.toFixed(1);
    document.body.dataset.probeTrips = trips.map((x) => x.toFixed(1)).join(' ');
    document.body.dataset.probeTime = (performance.now() - t0).toFixed(1);
    return best < NEAR;
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
    try {
      // The service worker's streamed download first: with 8 chunks a
      // request it took 11 s and 14 chromium CPU seconds for 1 GiB where
      // the temporary file took 17 s and 21 (docs/BENCH.md): it has no
      // second copy of the file. The chunk workers feed it where it runs
      // beside this page.
      let saved = false;
      if ('serviceWorker' in navigator && navigator.serviceWorker && window.isSecureContext) {
        document.body.dataset.saver = 'worker';
        try {
          await saveWithWorker(linkID, e, name, progress);
          saved = true;
        } catch (err) {
          if (!(err instanceof NoWorker)) throw err;
        }
      }
      if (!saved && navigator.storage && typeof navigator.storage.getDirectory === 'function') {
        document.body.dataset.saver = 'tempfile';
        try {
          await saveWithTempFile(name, e.size, pieces(linkID, e, progress));
          saved = true;
          // ms until the file was written and handed to the downloads (the
          // speed test logs it: the rest is the browser's copy).
          document.body.dataset.written = String(Math.round(performance.now() - t0));
        } catch (err) {
          if (!(err instanceof NoRoom)) throw err;
        }
      }
      if (saved) {
        // streamed to the browser's downloads, or saved to the temporary file and handed to them
      } else if (typeof window.showSaveFilePicker === 'function') {
        document.body.dataset.saver = 'picker';
        await saveWithPicker(name, pieces(linkID, e, progress));
      } else {
        document.body.dataset.saver = 'blob';
        await saveAsBlob(name, pieces(linkID, e, progress));
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
    let key;
    let blob;
    if (info.password) {
      ({ key, blob } = await askPassword(id, secret, info.password));
    } else {
      if (typeof info.blob !== 'string') throw new LinkError('The server answered without the link\'s sealed data. Try kumo get URL.');
      key = await deriveKey(secret, id);
      blob = b64Decode(info.blob);
    }
    const m = await openBlob(key, id, secret, blob);
    validate(m);
    render(id, m, info.expires);
  }

  window.addEventListener('hashchange', () => location.reload());
  cleanTemp().catch(() => {});
  document.addEventListener('DOMContentLoaded', () => { setState('opening'); main().catch(showError); });
})();
