// Package server is the kumo cloud: accounts, the encrypted tree in badger,
// chunks in a blob store, quota and the change feed, served over HTTP /v1.
package server

import (
	"log/slog"
	"net/http"
	"time"

	"kumo/remote/blob"
)

// Config configures a Server.
type Config struct {
	DataDir      string        // badger metadata under DataDir/meta, local blobs under DataDir/blobs
	Blobs        blob.Store    // nil: a local directory store under DataDir/blobs
	DefaultQuota int64         // bytes for new accounts
	SessionTTL   time.Duration // 0: 30 days
	GCGrace      time.Duration // unreferenced chunks older than this are deleted; 0: 1 hour
	GCInterval   time.Duration // 0: 10 minutes
	SyncWrites   bool          // fsync badger on every commit (survives power loss, not just kill -9)
	Logger       *slog.Logger
	// LoginLimit caps login attempts per account and per client address per minute; 0: 10.
	LoginLimit int
}

// Server is a running cloud over one data directory.
type Server struct{}

// New opens (or creates) the data directory and starts background work (GC).
func New(cfg Config) (*Server, error) { panic("TODO") }

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler { panic("TODO") }

// Close stops background work and closes the metadata store.
func (s *Server) Close() error { panic("TODO") }
