package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"kumo/remote/api"
	"kumo/remote/blob"
)

// testGCRace runs the GC continuously (grace ~0) while clients drop and
// re-reference the same chunks and re-upload them when collected. Afterwards
// every referenced chunk must be stored (record and bytes) and counted.
func testGCRace(t *testing.T, nb func(t *testing.T) blob.Store) {
	e := newEnv(t, nb, nil)
	e.s.cfg.GCGrace = time.Nanosecond
	u := e.signup("gc@example.com")
	chunks := map[string][]byte{}
	var ids []string
	for i := 0; i < 4; i++ {
		id := randMAC()
		chunks[id] = randBytes(1000 + i)
		u.must("PUT", "/v1/chunks/"+id, chunks[id], nil)
		ids = append(ids, id)
	}
	stop := make(chan struct{})
	var gcWG sync.WaitGroup
	gcWG.Add(1)
	go func() {
		defer gcWG.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := e.s.RunGC(context.Background()); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			f := u.create(api.RootID, api.TypeFile)
			version := f.Node.Version
			for i := 0; i < 60; i++ {
				var list []string
				if i%2 == 0 {
					list = []string{ids[(w+i)%len(ids)], ids[(w+i+1)%len(ids)]}
				}
				var n api.Node
				st, code := u.call("PUT", fmt.Sprintf("/v1/nodes/%d", f.Node.ID), api.UpdateRequest{Version: version, Attrs: randBytes(8), Chunks: list}, &n)
				if code == api.CodeBadRequest {
					for _, id := range list { // collected meanwhile: upload again and retry
						reupload(u, id, chunks[id])
					}
					i--
					continue
				}
				if code != "" {
					t.Errorf("update: %d %s", st, code)
					return
				}
				version = n.Version
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	gcWG.Wait()
	checkConsistent(t, e.s, u.id)
	for _, en := range u.list(api.RootID) {
		for _, id := range en.Node.Chunks {
			if !chunkStored(t, e.s, u.id, id) {
				t.Errorf("referenced chunk %s is not stored", id)
			}
			var data []byte
			u.must("GET", "/v1/chunks/"+id, nil, &data)
			if string(data) != string(chunks[id]) {
				t.Errorf("chunk %s changed", id)
			}
		}
	}
}

// reupload puts a chunk again. versitygw's posix backend can refuse a PUT
// ("Existing Object is a directory", 500 here) while it deletes another
// object of the same directory (the account's) at the same moment: such a
// 500 is retried, as a client would. Anything else fails the test.
func reupload(u *user, id string, data []byte) {
	u.e.t.Helper()
	for try := 0; ; try++ {
		st, code := u.call("PUT", "/v1/chunks/"+id, data, nil)
		if code == "" {
			return
		}
		if st != 500 || try == 5 {
			u.e.t.Fatalf("PUT chunk %s: %d %s", id, st, code)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
