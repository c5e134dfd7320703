package cache

import (
	"testing"
	"time"
)

// TestAckQueuesBehind checks that acking the journal does not wait for the
// write-behind applier (it used to drain it and scan badger under the lock
// every Apply takes, so each push stalled every create and close), that
// acked ops are gone at once and after a crash or a reopen, and that the
// ops after them stay pending in order.
func TestAckQueuesBehind(t *testing.T) {
	live := t.TempDir()
	s := openTest(t, live, 0)
	for i := range uint64(4) {
		must(s.Apply(smallFileMutation(i)))
	}
	must(s.behind.drain())

	s.behind.applying.Lock()            // the applier is busy: Ack must not wait for it
	must(s.Apply(smallFileMutation(4))) // queued behind it
	done := make(chan error, 1)
	go func() { done <- s.Ack(3) }()
	select {
	case err := <-done:
		must(err)
	case <-time.After(10 * time.Second):
		s.behind.applying.Unlock()
		t.Fatal("Ack waited for the write-behind applier")
	}
	if n, _ := s.PendingCount(); n != 2 {
		t.Fatalf("pending %d after acking 3 of 5", n)
	}
	snap := t.TempDir()
	copyTree(t, live, snap) // kill -9 with the ack still queued
	s.behind.applying.Unlock()

	for _, r := range []*Store{s, openTest(t, snap, 0)} {
		ops, err := r.Pending(100)
		if err != nil || len(ops) != 2 || ops[0].Seq != 4 || ops[1].Seq != 5 {
			t.Fatalf("pending after ack: %+v %v", ops, err)
		}
		if n, _ := r.PendingCount(); n != 2 {
			t.Fatalf("pending count %d", n)
		}
		// Acking the rest, and a new op after it, works from the reopened state.
		must(r.Ack(5))
		must(r.Apply(smallFileMutation(9)))
		if ops, err := r.Pending(100); err != nil || len(ops) != 1 || ops[0].Seq != 6 {
			t.Fatalf("after acking all: %+v %v", ops, err)
		}
		must(r.Ack(100)) // past the last op: acks what there is
		if ops, err := r.Pending(100); err != nil || len(ops) != 0 {
			t.Fatalf("after acking past the end: %+v %v", ops, err)
		}
		must(r.Close())
	}
	r := openTest(t, live, 0)
	defer r.Close()
	if ops, err := r.Pending(100); err != nil || len(ops) != 0 {
		t.Fatalf("reopened: %+v %v", ops, err)
	}
	must(r.Apply(smallFileMutation(10)))
	if ops, err := r.Pending(100); err != nil || len(ops) != 1 || ops[0].Seq != 7 {
		t.Fatalf("reopened, new op: %+v %v", ops, err)
	}
}
