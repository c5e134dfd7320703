package fs

import "sync/atomic"

// readCounts counts the reads that reach the drive, per 64 KiB segment (the
// kernel's page cache answers the rest without the drive seeing them). A hit
// is served on this machine without asking the cloud: data written and not
// uploaded yet (the write-back layers), a chunk still in memory, the chunk
// cache. A miss asks the cloud (for the embedded cloud, its store on this
// disk). Holes of sparse files are neither.
type readCounts struct{ hits, misses atomic.Uint64 }
