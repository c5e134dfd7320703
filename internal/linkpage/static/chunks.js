// The link page's chunk worker: fetches sealed chunks of the link, several
// a request, and opens them (open.js) off the page's main thread, for the
// saves that go through the page (a temporary file, the save dialog, a
// Blob); the page runs a few, so fetching and the copies in and out of
// WebCrypto use more than one core. It gets, from the page only, the link id
// and each chunk's id, content key and sum, and answers each chunk's
// plaintext segments, transferred (not copied), once the chunk's sealed
// bytes matched its sum.
'use strict';
importScripts('/s/_/open.js');

const aborts = new Map(); // job number -> AbortController

// A chunk worker may instead be the page's file writer: it keeps the file
// being saved in the origin's private file system (OPFS) open with a
// synchronous handle, which only a worker can have, and writes the
// plaintext the page hands it at its offset. Its requests run one after the
// other, in order.
let file = null;
let writes = Promise.resolve();

async function fileRequest(m) {
  switch (m.type) {
    case 'file-open': {
      const root = await navigator.storage.getDirectory();
      const fh = await root.getFileHandle(m.name, { create: true });
      file = await fh.createSyncAccessHandle();
      file.truncate(0);
      return;
    }
    case 'file-write': {
      let at = m.at;
      for (const b of m.bufs) {
        const u = new Uint8Array(b);
        for (let off = 0; off < u.length;) off += file.write(u.subarray(off), { at: at + off });
        at += u.length;
      }
      return;
    }
    case 'file-close':
      if (file) {
        file.flush();
        file.close();
        file = null;
      }
  }
}

self.addEventListener('message', async (e) => {
  const m = e.data || {};
  if (typeof m.type === 'string' && m.type.startsWith('file-')) {
    writes = writes.then(() => fileRequest(m)).then(
      () => self.postMessage({ reply: m.reply }),
      (err) => self.postMessage({ reply: m.reply, error: String((err && err.message) || err) }));
    return;
  }
  if (m.type === 'abort') {
    for (const a of aborts.values()) a.abort();
    aborts.clear();
    return;
  }
  if (m.type !== 'batch') return;
  const ctl = new AbortController();
  aborts.set(m.job, ctl);
  try {
    // Each chunk's plaintext goes to the page as soon as it is open.
    await openBatch(m.link, m.chunks, ctl.signal, (i, bufs) => {
      if (!ctl.signal.aborted) self.postMessage({ job: m.job, i, bufs }, bufs);
    });
  } catch (err) {
    if (err && err.name === 'AbortError') return;
    self.postMessage({ job: m.job, error: failureData(err) });
  } finally {
    aborts.delete(m.job);
  }
});
