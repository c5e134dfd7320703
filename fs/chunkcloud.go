package fs

import "context"

// chunkCloud is the part of the cloud the fetcher (fetch.go) and the
// uploader (upload.go) use: sealed chunks in and out. The drive's client
// implements it; tests put one in front of it that refuses, delays or
// corrupts (core_cloud_test.go), without a server of their own.
type chunkCloud interface {
	// GetChunkInto reads length bytes at off of a sealed chunk (all of it
	// for length < 0), into buf's room if it fits.
	GetChunkInto(ctx context.Context, id string, off, length int64, buf []byte) ([]byte, error)
	// HaveChunks says which of ids the cloud holds.
	HaveChunks(ctx context.Context, ids []string) ([]bool, error)
	// PutChunk stores a sealed chunk (a no-op for one it holds).
	PutChunk(ctx context.Context, id string, sealed []byte) error
	// InProcess reports the embedded cloud, whose chunks are on this
	// machine already (see Drive.cachesChunks).
	InProcess() bool
}
