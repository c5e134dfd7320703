// Package blob stores sealed chunks for the server: a Store interface with a
// local-directory implementation (and an S3 one in blob/s3). Keys are
// "ACCOUNT/CHUNKID" (lower-case hex, one slash); stores reject anything else.
package blob

import (
	"context"
	"errors"
	"io"
)

// ErrNotFound is returned when a key does not exist.
var ErrNotFound = errors.New("blob: not found")

// ErrBadKey is returned for a key that is not ACCOUNT/CHUNKID in lower-case hex.
var ErrBadKey = errors.New("blob: invalid key")

// Store holds immutable blobs. Put is atomic: a reader never sees a partial blob,
// and a blob that Put acknowledged survives a crash of the process.
type Store interface {
	Put(ctx context.Context, key string, data []byte) error
	// Get reads length bytes at off; length < 0 reads to the end.
	Get(ctx context.Context, key string, off, length int64) ([]byte, error)
	Delete(ctx context.Context, key string) error
	// Size returns the stored size of a blob, or ErrNotFound.
	Size(ctx context.Context, key string) (int64, error)
}

// Ranger is implemented by stores that can hand out a byte range of a blob as
// a stream, so that the server copies it straight into its answer (for the
// embedded cloud: into the client's receive buffer, one pread) instead of
// reading it into a fresh buffer first and copying that.
type Ranger interface {
	// OpenRange opens length bytes at off with Get's rules (length < 0: to
	// the end; past the end: the bytes that exist; an offset beyond the size
	// is an error; ErrNotFound). The reader delivers n bytes; close it.
	OpenRange(ctx context.Context, key string, off, length int64) (r io.ReadCloser, n int64, err error)
}
