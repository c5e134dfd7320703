// The link page's chunk worker: fetches sealed chunks of the link, several
// a request, and opens them (open.js) off the page's main thread, for the
// service worker's download (the plaintext goes to it through a port, see
// sw.js) or the saves that go through the page (a temporary file, the save dialog, a
// Blob); the page runs a few, so fetching and the copies in and out of
// WebCrypto use more than one core. It gets, from the page only, the link id
// and each chunk's id, content key and sum, and answers each chunk's
// plaintext segments, transferred (not copied), once the chunk's sealed
// bytes matched its sum.
'use strict';
importScripts('/s/_/open.js');

const aborts = new Map(); // job number -> AbortController
const feeds = new Map(); // download id -> MessagePort to the service worker

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
  if (m.type === 'feed') {
    // A port to the download service worker (sw.js): the plaintext of the
    // batches sent with feed: m.dl goes there, not to the page.
    if (e.ports[0]) feeds.set(m.dl, e.ports[0]);
    return;
  }
  if (m.type === 'unfeed') {
    const port = feeds.get(m.dl);
    feeds.delete(m.dl);
    if (port) port.close();
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
  // feed: the service worker's port for this download, where each chunk's
  // plaintext goes (as chunk m.at[i] of the file), the page only told
  // that it went.
  const feed = m.feed ? feeds.get(m.feed) : null;
  try {
    if (m.feed && !feed) throw new Failure('bug', { detail: 'no port to the download helper' });
    // Each chunk's plaintext goes on as soon as it is open and checked.
    await openBatch(m.link, m.chunks, ctl.signal, (i, bufs) => {
      if (ctl.signal.aborted) return;
      if (feed) {
        feed.postMessage({ i: m.at[i], bufs }, bufs);
        self.postMessage({ job: m.job, i, bufs: [] });
      } else {
        self.postMessage({ job: m.job, i, bufs }, bufs);
      }
    });
  } catch (err) {
    if (err && err.name === 'AbortError') return;
    // The service worker hears it first: its stream errors, so the
    // browser never marks the download complete.
    if (feed) feed.postMessage({ error: failureData(err), i: m.at[0] });
    self.postMessage({ job: m.job, error: failureData(err) });
  } finally {
    aborts.delete(m.job);
  }
});
