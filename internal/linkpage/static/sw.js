// The link page's download helper: a service worker whose only job is to
// answer /s/_/dl/{id} with a stream of plaintext the link page hands it, so
// the browser saves a big file to disk without holding it in memory. It
// fetches nothing and sees no key.
'use strict';

const pending = new Map(); // download id -> {port, name, size}

self.addEventListener('install', () => self.skipWaiting());

self.addEventListener('message', (e) => {
  const m = e.data;
  if (!m || m.type !== 'download') return; // pings only keep the worker awake
  const port = e.ports[0];
  if (!port || typeof m.id !== 'string' || !/^[0-9a-f]{32}$/.test(m.id)) return;
  pending.set(m.id, { port, name: String(m.name), size: m.size });
  port.postMessage('ready');
});

// rfc5987 encodes a file name for Content-Disposition's filename*.
function rfc5987(s) {
  return encodeURIComponent(s).replace(/['()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
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
  const stream = new ReadableStream({
    pull(ctrl) {
      return new Promise((resolve) => {
        d.port.onmessage = (ev) => {
          const r = ev.data || {};
          if (r.error) ctrl.error(new Error(r.error));
          else if (r.done) ctrl.close();
          else for (const b of r.bufs) ctrl.enqueue(new Uint8Array(b));
          resolve();
        };
        d.port.postMessage('pull');
      });
    },
    cancel() { d.port.postMessage('cancel'); },
  });
  const headers = {
    'Content-Type': 'application/octet-stream',
    'Content-Disposition': "attachment; filename*=UTF-8''" + rfc5987(d.name),
    'Content-Security-Policy': "default-src 'none'",
    'X-Content-Type-Options': 'nosniff',
  };
  if (Number.isSafeInteger(d.size)) headers['Content-Length'] = String(d.size);
  e.respondWith(new Response(stream, { headers }));
});
