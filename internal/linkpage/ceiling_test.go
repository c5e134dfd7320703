package linkpage_test

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"kumo/internal/linkpage/browsertest"
)

// TestChromiumCeiling measures what headless chromium itself costs on this
// machine for the parts of the link page's 1 GiB download, with no kumo
// code: a bare Go server answers sealed 4 MiB chunks (AES-256-GCM in 64 KiB
// segments, as the link format seals them) and a page without any policy
// times each part alone (docs/BENCH.md, "Links in a browser"):
//   - plain: the browser's own download of 1 GiB, no JavaScript touching it;
//   - fetch: fetching 1 GiB into two workers' JavaScript as the page does
//     (3 fetches in flight each, a BYOB reader into reused buffers), one
//     chunk a request, and 8 chunks a request;
//   - decrypt: WebCrypto opening 1 GiB of segments in two workers, no fetch.
//
// Not part of make test:
// KUMO_LINK_BENCH=1 go test -run TestChromiumCeiling -v -timeout 20m ./internal/linkpage
func TestChromiumCeiling(t *testing.T) {
	if os.Getenv("KUMO_LINK_BENCH") == "" {
		t.Skip("set KUMO_LINK_BENCH=1 to measure chromium's own costs (1 GiB transfers, a few minutes)")
	}
	const (
		chunkSize = 4 << 20
		seg       = 65536
		chunks    = 256 // 1 GiB
	)
	key := make([]byte, 32)
	rand.Read(key)
	pt := make([]byte, chunkSize)
	rand.Read(pt)
	blk, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(blk)
	if err != nil {
		t.Fatal(err)
	}
	var sealed []byte // one chunk: its 64 segments, sealed as docs/FORMAT.md says
	for i := 0; i*seg < chunkSize; i++ {
		iv := make([]byte, 12)
		for b, v := 10, i; b >= 0 && v > 0; b, v = b-1, v/256 {
			iv[b] = byte(v % 256)
		}
		if (i+1)*seg >= chunkSize {
			iv[11] = 1
		}
		sealed = gcm.Seal(sealed, iv, pt[i*seg:(i+1)*seg], nil)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /c", func(w http.ResponseWriter, r *http.Request) { // k sealed chunks back to back
		k, _ := strconv.Atoi(r.URL.Query().Get("k"))
		w.Header().Set("Content-Length", strconv.Itoa(k*len(sealed)))
		for range k {
			w.Write(sealed)
		}
	})
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(chunks*chunkSize))
		for range chunks {
			w.Write(pt)
		}
	})
	page := func(name, typ, body string) {
		mux.HandleFunc("GET /"+name, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", typ)
			w.Write([]byte(body))
		})
	}
	page("ceiling.html", "text/html; charset=utf-8", `<!doctype html><meta charset="utf-8"><body>`+
		`<a id="plain" href="/big" download="plain.bin">plain</a><script src="/ceiling.js"></script>`)
	page("ceiling.js", "text/javascript", fmt.Sprintf(ceilingJS, hex.EncodeToString(key), len(sealed), chunks))
	page("ceiling-worker.js", "text/javascript", ceilingWorkerJS)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	b := browsertest.Start(t)
	p := b.Open(srv.URL + "/ceiling.html")
	// run starts a measurement in the page and polls for its result (Eval
	// gives up after 30 s, a slow run takes longer).
	run := func(js string) float64 {
		p.Eval(`window.res = null; `+js+`.then((s) => { window.res = s; }, (e) => { window.res = String(e); }); true`, new(bool))
		deadline := time.Now().Add(5 * time.Minute)
		for time.Now().Before(deadline) {
			var res any
			p.Eval(`window.res`, &res)
			switch v := res.(type) {
			case float64:
				return v
			case string:
				t.Fatalf("%s: %s", js, v)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: no result after 5 minutes", js)
		return 0
	}
	median := func(d []float64) float64 { slices.Sort(d); return d[len(d)/2] }
	measure := func(what string, do func() float64) {
		var secs, cpus []float64
		for range 3 {
			cpu0 := b.CPU()
			secs = append(secs, do())
			cpus = append(cpus, (b.CPU() - cpu0).Seconds())
		}
		t.Logf("%-48s %.2f s (%.0f MiB/s), chromium CPU %.1f s (runs %.2f, %.2f, %.2f s)", what+":",
			median(slices.Clone(secs)), 1024/median(slices.Clone(secs)), median(cpus), secs[0], secs[1], secs[2])
	}
	measure("plain download, no JavaScript", func() float64 {
		start := time.Now()
		path, _ := p.Download("#plain", 5*time.Minute)
		os.Remove(path)
		return time.Since(start).Seconds()
	})
	measure("fetch into 2 workers, 1 chunk a request", func() float64 { return run(`fetchAll(1)`) })
	measure("fetch into 2 workers, 8 chunks a request", func() float64 { return run(`fetchAll(8)`) })
	measure("WebCrypto decrypt in 2 workers, no fetch", func() float64 { return run(`decryptAll()`) })
	measure("fetch and decrypt in 2 workers", func() float64 { return run(`fetchAll(1, true)`) })
}

// ceilingJS runs the workers (key, sealed chunk length, chunks in 1 GiB).
const ceilingJS = `'use strict';
const KEY = '%s', SEALED = %d, N = %d;
function workers(msg) {
  const t0 = performance.now();
  const ws = [new Worker('/ceiling-worker.js'), new Worker('/ceiling-worker.js')];
  return Promise.all(ws.map((w, j) => new Promise((resolve, reject) => {
    w.onmessage = (e) => (e.data.error ? reject(new Error(e.data.error)) : resolve());
    w.postMessage(Object.assign({ j, key: KEY, sealedLen: SEALED, n: N / 2 }, msg));
  }))).then(() => { ws.forEach((w) => w.terminate()); return (performance.now() - t0) / 1000; });
}
function fetchAll(k, decrypt) { return workers({ type: 'fetch', k, decrypt: !!decrypt }); }
function decryptAll() { return workers({ type: 'decrypt' }); }
`

// ceilingWorkerJS fetches its half of the chunks (3 requests in flight, a
// BYOB reader into reused buffers, as open.js reads) or decrypts a chunk
// over and over, and answers when done.
const ceilingWorkerJS = `'use strict';
const SEG = 65536, TAG = 16;
function segNonce(i, final) {
  const iv = new Uint8Array(12); let v = i;
  for (let b = 10; b >= 0 && v > 0; b--) { iv[b] = v % 256; v = Math.floor(v / 256); }
  iv[11] = final ? 1 : 0; return iv;
}
function hexDecode(s) { const o = new Uint8Array(s.length / 2); for (let i = 0; i < o.length; i++) o[i] = parseInt(s.substr(2 * i, 2), 16); return o; }
const spare = [];
async function readAll(body, want) {
  let buf = spare.pop() || new ArrayBuffer(want); let got = 0;
  const rd = body.getReader({ mode: 'byob' });
  while (got < want) {
    const { done, value } = await rd.read(new Uint8Array(buf, got, want - got));
    if (done) break;
    buf = value.buffer; got += value.byteLength;
  }
  if (got !== want) throw new Error('short body: ' + got);
  return buf;
}
function open(key, buf, chunks, sealedLen) {
  const ops = [];
  const segs = sealedLen / (SEG + TAG);
  for (let c = 0; c < chunks; c++) {
    for (let i = 0; i < segs; i++) {
      ops.push(crypto.subtle.decrypt({ name: 'AES-GCM', iv: segNonce(i, i === segs - 1) }, key,
        new Uint8Array(buf, c * sealedLen + i * (SEG + TAG), SEG + TAG)));
    }
  }
  return Promise.all(ops);
}
onmessage = async (e) => {
  const m = e.data;
  try {
    const key = await crypto.subtle.importKey('raw', hexDecode(m.key), 'AES-GCM', false, ['decrypt']);
    if (m.type === 'decrypt') {
      const buf = await (await fetch('/c?k=1', { cache: 'no-store' })).arrayBuffer();
      const inflight = [];
      for (let i = 0; i < m.n; i++) {
        inflight.push(open(key, buf, 1, m.sealedLen));
        if (inflight.length >= 3) await inflight.shift();
      }
      await Promise.all(inflight);
    } else {
      let left = m.n / m.k;
      const one = async () => {
        while (left > 0) {
          left--;
          const r = await fetch('/c?k=' + m.k, { cache: 'no-store', credentials: 'omit' });
          const buf = await readAll(r.body, m.k * m.sealedLen);
          if (m.decrypt) await open(key, buf, m.k, m.sealedLen);
          spare.push(buf);
        }
      };
      await Promise.all([one(), one(), one()]);
    }
    postMessage({});
  } catch (err) {
    postMessage({ error: String(err && err.message || err) });
  }
};
`
