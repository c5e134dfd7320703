// The link page's password worker: derives a password link's keys with the
// project's own Go code compiled to WebAssembly (pw.wasm, built from
// ./pwwasm: internal/link.KeysWithPassword, Argon2id from
// golang.org/x/crypto/argon2), off the page's thread. wasm_exec.js is Go's
// own loader for it, from the Go release that built pw.wasm. This worker's
// policy allows compiling WebAssembly ('wasm-unsafe-eval'); the page's
// does not.
'use strict';
importScripts('/s/_/wasm_exec.js');

const ready = (async () => {
  const go = new Go();
  const r = await fetch('/s/_/pw.wasm', { credentials: 'omit', referrerPolicy: 'no-referrer' });
  if (!r.ok) throw new Error('the password code did not load (HTTP ' + r.status + ')');
  const { instance } = await WebAssembly.instantiate(await r.arrayBuffer(), go.importObject);
  go.run(instance); // main registers kumoLinkKeys and waits for calls
})();

self.addEventListener('message', async (e) => {
  const m = e.data || {};
  try {
    await ready;
    const out = self.kumoLinkKeys(m.id, m.secret, m.password, m.salt, m.time, m.memory, m.threads);
    m.password.fill(0);
    if (out.error) self.postMessage({ error: out.error });
    else self.postMessage({ key: out.key, auth: out.auth }, [out.key.buffer, out.auth.buffer]);
  } catch (err) {
    self.postMessage({ error: String((err && err.message) || err) });
  }
});
