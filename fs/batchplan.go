package fs

// Batch planning of the pusher, as pure functions of the queued ops and the
// size bound: which journal ops share a /v1/batch request (planBatch), how
// many of them go in one request (batchCut), how a request the cloud refused
// as too large shrinks (shrinkBatch), and how many journal ops a partly done
// batch acks (ackedPrefix). pushOnce does the I/O around them.

import "kumo/remote/api"

// maxBatchBytes bounds the encoded size of one /v1/batch request: under
// the server's api.MaxJSONBody, with room to spare for the estimate
// (opBytes). A 413 answer halves the bound for the rest of the mount (a
// proxy in front of the cloud may take less), down to minBatchBytes.
const (
	maxBatchBytes = api.MaxJSONBody * 3 / 4
	minBatchBytes = 64 << 10
)

// opBytes is an upper bound of op's size in a JSON batch request: byte
// fields go out as base64, ids and MACs as hex strings.
func opBytes(op api.BatchOp) int {
	b64 := func(b []byte) int { return (len(b) + 2) / 3 * 4 }
	ids := func(s []string) (n int) {
		for _, id := range s {
			n += len(id) + 3
		}
		return n
	}
	n := 256 // field names, numbers, punctuation
	if c := op.Create; c != nil {
		n += b64(c.Attrs) + b64(c.Name) + len(c.NameMAC) + ids(c.Chunks)
	}
	if u := op.Update; u != nil {
		n += b64(u.Attrs) + ids(u.Chunks)
	}
	if r := op.Rename; r != nil {
		n += b64(r.Name) + b64(r.SrcName) + len(r.SrcNameMAC) + len(r.DstNameMAC)
	}
	if l := op.Link; l != nil {
		n += b64(l.Name) + len(l.NameMAC)
	}
	if u := op.Unlink; u != nil {
		n += len(u.NameMAC)
	}
	return n
}

// batchCut is how many ops of batch go in one request of at most limit
// bytes: at least one.
func batchCut(batch []api.BatchOp, limit int) int {
	size := 0
	for i, op := range batch {
		size += opBytes(op)
		if size > limit && i > 0 {
			return i
		}
	}
	return len(batch)
}

func batchBytes(batch []api.BatchOp) (n int) {
	for _, op := range batch {
		n += opBytes(op)
	}
	return n
}

// shrinkBatch is what to send after the cloud refused batch[:cut] as too
// large (413): half as many ops at most, under a bound halved from that
// request's size (never above limit, never below minBatchBytes). ok is false
// when cut is a single op: no request can carry it, and limit stays.
func shrinkBatch(batch []api.BatchOp, cut, limit int) (newCut, newLimit int, ok bool) {
	if cut <= 1 {
		return cut, limit, false
	}
	newLimit = max(minBatchBytes, min(limit, batchBytes(batch[:cut])/2))
	return min(cut/2, batchCut(batch, newLimit)), newLimit, true
}

// opCancelled stands, in the ops planBatch gets, for a journal op the cloud
// never needs (unsent.go): it is left out and acked with what precedes it.
const opCancelled = "cancelled"

// planBatch turns the journal ops ops (in order, conflict renames already
// applied) into the ops of one batch request. need[i] is the index of the
// batch entry that must succeed before ops[i] may be acked (-1: nothing).
//
// An update carries a node's whole state (attributes and chunk list), so an
// update followed by another update of the same node later in ops is left
// out (it waits for the one that replaces it), and an update of a node
// created earlier in the batch is folded into that create (into a copy: ops
// are kept by the push loop). The update left is based on the version
// versionOf reports, the one the cloud last reported; ok false means the
// node was deleted here after the update was queued (its unlink follows in
// the journal): the update is dropped, since sending it would turn the
// deleted file into a conflict copy, and acked with what precedes it.
func planBatch(ops []api.BatchOp, versionOf func(id uint64) (v uint64, ok bool)) (batch []api.BatchOp, need []int) {
	lastUpdate := map[uint64]int{} // node -> index in ops of its last update
	for i, op := range ops {
		if op.Op == api.OpUpdate {
			lastUpdate[op.ID] = i
		}
	}
	const superseded = -2
	need = make([]int, 0, len(ops))
	created := map[uint64]int{} // node -> batch index of its create
	for i, op := range ops {
		if op.Op == opCancelled {
			need = append(need, len(batch)-1) // acked with what precedes it
			continue
		}
		if op.Op == api.OpUpdate {
			if lastUpdate[op.ID] != i {
				need = append(need, superseded) // resolved below
				continue
			}
			if b, ok := created[op.ID]; ok {
				c := *batch[b].Create
				c.Attrs, c.Chunks = op.Update.Attrs, op.Update.Chunks
				batch[b].Create = &c
				need = append(need, b)
				continue
			}
			v, ok := versionOf(op.ID)
			if !ok {
				need = append(need, len(batch)-1)
				continue
			}
			u := *op.Update
			u.Version = v
			op.Update = &u
		}
		if op.Op == api.OpCreate {
			created[op.Create.ID] = len(batch)
		}
		need = append(need, len(batch))
		batch = append(batch, op)
	}
	// A superseded update waits for the update that replaces it.
	for i := range need {
		if need[i] == superseded {
			need[i] = need[lastUpdate[ops[i].ID]]
		}
	}
	return batch, need
}

// ackedPrefix is how many journal ops may be acked once the first done
// entries of the batch succeeded: the longest prefix whose needed entries
// are all done.
func ackedPrefix(need []int, done int) int {
	n, maxNeed := 0, -1
	for n < len(need) {
		maxNeed = max(maxNeed, need[n])
		if maxNeed >= done {
			break
		}
		n++
	}
	return n
}
