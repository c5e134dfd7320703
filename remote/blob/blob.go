// Package blob stores sealed chunks for the server: a Store interface with a
// local-directory implementation (and an S3 one in blob/s3). Keys are
// "ACCOUNT/CHUNKID" (lower-case hex, one slash); stores reject anything else.
package blob

import (
	"context"
	"errors"
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
