package server

import (
	"fmt"
	"testing"
	"time"

	"kumo/remote/api"
)

// BenchmarkTreeChurn measures what history costs the tree: batches of 200
// creates (each file with a small chunk), then an update of each, then
// unlinks, as the drive pushes them, with history off and on (the embedded
// cloud's settings: sync writes, small memory).
func BenchmarkTreeChurn(b *testing.B) {
	for _, h := range []time.Duration{0, 24 * time.Hour} {
		b.Run(fmt.Sprintf("history=%v", h > 0), func(b *testing.B) {
			e := newEnv(&testing.T{}, nil, func(c *Config) {
				c.HistoryDefault, c.SyncWrites, c.SmallMemory = h, true, true
				c.DataDir = b.TempDir()
			})
			defer e.stop()
			e.t = &testing.T{}
			u := e.signup("bench@example.com")
			const n = 200
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				chunks := make([]string, n)
				for i := range chunks {
					chunks[i] = u.putChunk(300)
				}
				b.StartTimer()
				var creates, updates, unlinks []api.BatchOp
				ids := make([]uint64, n)
				macs := make([]string, n)
				for i := range n {
					ids[i], macs[i] = randID(), randMAC()
					creates = append(creates, api.BatchOp{Op: api.OpCreate, Create: &api.CreateRequest{Parent: api.RootID, NameMAC: macs[i],
						Name: randBytes(30), ID: ids[i], Type: api.TypeFile, Attrs: randBytes(120)}})
					updates = append(updates, api.BatchOp{Op: api.OpUpdate, ID: ids[i], Update: &api.UpdateRequest{Version: 1, Attrs: randBytes(160), Chunks: []string{chunks[i]}}})
					unlinks = append(unlinks, api.BatchOp{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: api.RootID, NameMAC: macs[i]}})
				}
				for _, ops := range [][]api.BatchOp{creates, updates, unlinks} {
					var r api.BatchResponse
					u.must("POST", "/v1/batch", api.BatchRequest{Ops: ops}, &r)
				}
			}
		})
	}
}
