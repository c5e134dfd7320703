package cache

import (
	"testing"

	"kumo/internal/keys"
	"kumo/remote/api"
)

// BenchmarkPendingDrain reads 30,000 queued unlinks as the pusher does, 300
// at a time.
func BenchmarkPendingDrain(b *testing.B) {
	s, err := Open(Options{Dir: b.TempDir(), Key: keys.Key{1}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 30000; i++ {
		if err := s.Apply(Mutation{Journal: []api.BatchOp{{Op: api.OpUnlink, Unlink: &api.UnlinkRequest{Parent: 1, NameMAC: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Node: uint64(i + 5)}}}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		var after uint64
		n := 0
		for {
			ops, err := s.PendingAfter(after, 300)
			if err != nil {
				b.Fatal(err)
			}
			if len(ops) == 0 {
				break
			}
			n += len(ops)
			after = ops[len(ops)-1].Seq
		}
		if n != 30000 {
			b.Fatal(n)
		}
	}
}
