// The link page's chunk worker: fetches sealed chunks of the link and opens
// them (open.js) off the page's main thread, for the saves that go through
// the page (the save dialog, a Blob); the page runs a few, so fetching and
// the copies in and out of WebCrypto use more than one core. It gets, from
// the page only, the link id and each chunk's id and content key, and
// answers the plaintext segments, transferred (not copied).
'use strict';
importScripts('/s/_/open.js');

const aborts = new Map(); // job number -> AbortController

self.addEventListener('message', async (e) => {
  const m = e.data || {};
  if (m.type === 'abort') {
    for (const a of aborts.values()) a.abort();
    aborts.clear();
    return;
  }
  if (m.type !== 'chunk') return;
  const ctl = new AbortController();
  aborts.set(m.job, ctl);
  try {
    const bufs = await openChunk(m.link, m.chunk, ctl.signal);
    self.postMessage({ job: m.job, bufs }, bufs);
  } catch (err) {
    if (err && err.name === 'AbortError') return;
    self.postMessage({ job: m.job, error: failureData(err) });
  } finally {
    aborts.delete(m.job);
  }
});
