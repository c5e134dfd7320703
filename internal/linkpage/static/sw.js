// The link page's download helper: a service worker that answers
// /s/_/dl/{id} with a stream of a file's plaintext, so the browser saves a
// big file to disk without holding it in memory. When it runs in the page's
// process, the page's chunk workers fetch, check and open the chunks and
// send it the plaintext through message ports (transferred, not copied):
// this one thread then only orders it into the download (fedPlaintext).
// In another tab's process each byte handed over would be copied between
// processes (a 1 GiB download went from 19 s to 40–100 s), so there it
// fetches and opens the chunks itself (open.js), from the list the page
// hands it (the link id, and each chunk's id, content key, sum and length).
// It sees only the keys of the file it saves, as the page does.
'use strict';
importScripts('/s/_/open.js');

const AHEAD = 16; // chunks fetched and opened ahead of the one being saved (32 measured no faster)
const BATCH = 8; // chunks a request (GET /v1/s/ID/chunks?ids=...)
const pending = new Map(); // download id -> {port, name, size, link, chunks}

self.addEventListener('install', () => self.skipWaiting());

function validChunks(cs) {
  return Array.isArray(cs) && cs.every((c) => c && Number.isSafeInteger(c.n) && c.n > 0 && c.n <= 4194304 &&
    (c.id === '' ? c.key === '' && c.sum === ''
      : /^[0-9a-f]{64}$/.test(c.id) && /^[0-9a-f]{64}$/.test(c.key) && /^[0-9a-f]{64}$/.test(c.sum)));
}

self.addEventListener('message', (e) => {
  const m = e.data;
  if (m && m.type === 'probe' && e.ports[0]) {
    // Each buffer back as it came: the page times them (page.js, nearby).
    // Its 'end', or a minute (a page gone meanwhile), closes the port.
    const p = e.ports[0];
    const t = setTimeout(() => p.close(), 60000);
    p.onmessage = (ev) => {
      if (ev.data instanceof ArrayBuffer) {
        p.postMessage(ev.data, [ev.data]);
        return;
      }
      clearTimeout(t);
      p.close();
    };
    return;
  }
  if (!m || m.type !== 'download') return; // pings only keep the worker awake
  const port = e.ports[0];
  if (!port || typeof m.id !== 'string' || !/^[0-9a-f]{32}$/.test(m.id)) return;
  if (m.fed) {
    // The page's chunk workers fetch, check and open the chunks and send
    // each one's plaintext here through feeds (one port a worker): this
    // thread only puts it in order into the download. It sees no key.
    const feeds = e.ports.slice(1);
    if (!feeds.length || !Array.isArray(m.chunks) ||
      !m.chunks.every((c) => c && Number.isSafeInteger(c.n) && c.n > 0 && c.n <= 4194304 && typeof c.hole === 'boolean')) {
      port.postMessage({ error: { kind: 'bug', detail: 'the download helper was handed a malformed file list' } });
      return;
    }
    pending.set(m.id, { port, name: String(m.name), size: m.size, chunks: m.chunks, feeds });
    port.postMessage('ready');
    return;
  }
  if (typeof m.link !== 'string' || !/^[A-Za-z0-9_-]{22}$/.test(m.link) || !validChunks(m.chunks)) {
    port.postMessage({ error: { kind: 'bug', detail: 'the download helper was handed a malformed file list' } });
    return;
  }
  pending.set(m.id, { port, name: String(m.name), size: m.size, link: m.link, chunks: m.chunks });
  port.postMessage('ready');
});

// rfc5987 encodes a file name for Content-Disposition's filename*.
function rfc5987(s) {
  return encodeURIComponent(s).replace(/['()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

// plaintext is the file's stream: AHEAD chunks in flight, BATCH a request,
// saved in order, each reported to the page (progress), a failure reported
// and the stream errored (the browser marks the download failed).
function plaintext(d) {
  const ctl = new AbortController();
  const queue = [];
  let next = 0;
  // more queues the next chunks: holes as zeros, the others asked for in
  // one request of at most BATCH distinct chunks.
  const more = () => {
    const batch = [];
    const slots = [];
    const ids = new Set();
    while (next < d.chunks.length && queue.length < AHEAD && batch.length < BATCH) {
      const c = d.chunks[next];
      if (c.id !== '' && ids.has(c.id)) break;
      next++;
      if (c.id === '') {
        queue.push({ p: Promise.resolve([new Uint8Array(c.n).buffer]), c }); // a hole: zeros
        continue;
      }
      ids.add(c.id);
      const p = new Promise((resolve, reject) => slots.push({ resolve, reject }));
      p.catch(() => {}); // awaited in order below
      batch.push(c);
      queue.push({ p, c });
    }
    if (batch.length) {
      openBatch(d.link, batch, ctl.signal, (i, bufs) => slots[i].resolve(bufs))
        .catch((err) => { for (const sl of slots) sl.reject(err); });
    }
  };
  return new ReadableStream({
    start() {
      while (next < d.chunks.length && queue.length < AHEAD) more();
    },
    async pull(ctrl) {
      if (!queue.length) {
        ctrl.close();
        d.port.postMessage({ done: true });
        return;
      }
      const { p, c } = queue.shift();
      try {
        const bufs = await p;
        if (next < d.chunks.length && queue.length <= AHEAD - BATCH) more();
        for (const b of bufs) ctrl.enqueue(new Uint8Array(b));
        d.port.postMessage({ saved: c.n });
      } catch (err) {
        ctl.abort();
        d.port.postMessage({ error: failureData(err), n: c.n });
        ctrl.error(err);
      }
    },
    cancel() {
      ctl.abort();
      d.port.postMessage('cancel');
    },
  });
}

// fedPlaintext is the file's stream from the page's chunk workers (d.feeds):
// chunk i's plaintext buffers arrive as {i, bufs} once the worker checked
// the chunk's sum and every segment's tag, in any order; they are saved in
// file order, holes as zeros, each reported to the page (progress, and how
// far ahead it may fetch). An error from a worker or the page errors the
// stream (the browser marks the download failed), as does a chunk of
// another length than the file list's.
function fedPlaintext(d) {
  const got = new Map(); // chunk index -> plaintext buffers, not yet saved
  let k = 0; // the next chunk to save
  let failed = null;
  let wake = null;
  const stop = () => { for (const f of d.feeds) f.close(); };
  const fail = (f) => {
    if (!failed) failed = f;
    if (wake) wake();
  };
  const onFeed = (ev) => {
    const m = ev.data || {};
    if (m.error) { fail({ error: m.error, n: (d.chunks[m.i] || {}).n }); return; }
    const c = d.chunks[m.i];
    if (!Number.isSafeInteger(m.i) || m.i < k || !c || c.hole || got.has(m.i) || !Array.isArray(m.bufs) ||
      !m.bufs.every((b) => b instanceof ArrayBuffer) || m.bufs.reduce((s, b) => s + b.byteLength, 0) !== c.n) {
      fail({ error: { kind: 'bug', detail: 'the download helper was handed a chunk it did not expect' } });
      return;
    }
    got.set(m.i, m.bufs);
    if (wake && m.i === k) wake();
  };
  for (const f of d.feeds) f.onmessage = onFeed;
  d.port.onmessage = (ev) => { if (ev.data && ev.data.error) fail({ error: ev.data.error }); };
  return new ReadableStream({
    async pull(ctrl) {
      if (k === d.chunks.length) {
        stop();
        ctrl.close();
        d.port.postMessage({ done: true });
        return;
      }
      const c = d.chunks[k];
      while (!c.hole && !got.has(k) && !failed) await new Promise((resolve) => { wake = resolve; });
      wake = null;
      if (failed) {
        stop();
        d.port.postMessage({ error: failed.error, n: failed.n });
        ctrl.error(new Error('the download stopped'));
        return;
      }
      const bufs = c.hole ? [new ArrayBuffer(c.n)] : got.get(k);
      got.delete(k);
      k++;
      for (const b of bufs) ctrl.enqueue(new Uint8Array(b));
      d.port.postMessage({ saved: c.n });
    },
    cancel() {
      stop();
      d.port.postMessage('cancel');
    },
  });
}

self.addEventListener('fetch', (e) => {
  const mm = new URL(e.request.url).pathname.match(/^\/s\/_\/dl\/([0-9a-f]{32})$/);
  if (!mm) return;
  const d = pending.get(mm[1]);
  if (!d) {
    e.respondWith(new Response('This download is no longer available: go back to the link page and click Download again.\n',
      { status: 404, headers: { 'Content-Type': 'text/plain; charset=utf-8' } }));
    return;
  }
  pending.delete(mm[1]);
  const headers = {
    'Content-Type': 'application/octet-stream',
    'Content-Disposition': "attachment; filename*=UTF-8''" + rfc5987(d.name),
    'Content-Security-Policy': "default-src 'none'",
    'X-Content-Type-Options': 'nosniff',
  };
  if (Number.isSafeInteger(d.size)) headers['Content-Length'] = String(d.size);
  e.respondWith(new Response(d.feeds ? fedPlaintext(d) : plaintext(d), { headers }));
});
