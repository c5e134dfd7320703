// Package server is the kumo cloud: accounts, the encrypted tree in badger,
// chunks in a blob store, quota and the change feed, served over HTTP /v1.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"kumo/internal/badgerlog"
	"kumo/internal/chunk"
	"kumo/internal/payment"
	"kumo/remote/blob"
)

// Config configures a Server.
type Config struct {
	DataDir      string        // badger metadata (and small chunks) under DataDir/meta, local blobs under DataDir/blobs
	Blobs        blob.Store    // nil: a local directory store under DataDir/blobs
	DefaultQuota int64         // bytes for new accounts
	SessionTTL   time.Duration // 0: 30 days
	GCGrace      time.Duration // unreferenced chunks older than this are deleted; 0: 1 hour
	GCInterval   time.Duration // 0: 10 minutes
	// HistoryDefault is how long every version of the tree and the chunks it
	// needs are kept (history.go), for accounts that set no window of their
	// own; 0: no history. HistoryMax caps what an account may set (0: no cap).
	HistoryDefault time.Duration
	HistoryMax     time.Duration
	SyncWrites     bool // fsync badger on every commit (survives power loss, not just kill -9)
	Logger         *slog.Logger
	// LoginLimit caps login attempts per account and per client address per minute; 0: 10.
	LoginLimit int
	// Signup says who may create an account: SignupOpen ("" too), SignupVoucher
	// (with an unused voucher code, spent on the new account) or SignupClosed.
	Signup SignupMode
	// SignupLimit caps signups per client address per hour; 0: 10.
	SignupLimit int
	// Payments configures Bitcoin top-ups (internal/payment); nil turns them
	// off (POST /v1/topup answers 501 payments_disabled). Its OnChange and
	// VoucherCredit are set by the server (a given OnChange is still called).
	// Vouchers work either way.
	Payments *payment.Config
	// NoBackground starts no background work (GC, orphan sweep, payment
	// watcher): for offline administration of a stopped server's data dir.
	NoBackground bool
	// SmallChunkMax: chunks of at most this many sealed bytes are kept in
	// the metadata store, recorded and stored in one transaction, instead
	// of the blob store. 0: DefaultSmallChunkMax; negative: every chunk
	// goes to the blob store. Changing it affects new uploads only: each
	// chunk's record says where its bytes are.
	SmallChunkMax int64
	// SmallMemory sizes the metadata store for a small footprint (memtables,
	// caches), for the embedded cloud that shares the drive's process.
	SmallMemory bool
	// NoReadVerify skips the SHA-256 check of whole blob-store chunks on
	// every GET (corruption is then caught only by the client's AEAD, as
	// EIO, and logged there, not here). For the embedded cloud, whose client
	// is on the same machine: the hash cost as much CPU as the decryption.
	NoReadVerify bool
	// MaxNodes caps the files and directories of one account; 0: DefaultMaxNodes.
	MaxNodes int64
}

// DefaultSmallChunkMax is one full sealed segment (a 64 KiB file's only
// chunk). Small files are where the blob store's fixed cost hurts: a blob is
// a pending-marker commit, a file fsync, a directory fsync and the record's
// commit, four device flushes for a few KiB; in the metadata store it is one
// commit, shared with concurrent ones. Above a segment that fixed cost is
// small against the transfer, and big chunks would only make the value log's
// garbage collection rewrite more live data.
const DefaultSmallChunkMax = chunk.SealedSegmentSize

// Server is a running cloud over one data directory.
type Server struct {
	cfg   Config
	db    *badger.DB
	blobs blob.Store
	// ownBlobs: the server made blobs (a local store) and closes it.
	ownBlobs bool
	log      *slog.Logger
	secret   []byte // server secret: fake salts and the auth-hash pepper derive from it
	pepper   []byte

	locks     accountLocks
	chunkMu   [256]sync.Mutex // striped per (account, chunk): blob upload vs GC
	small     smallQueues     // small chunk uploads waiting to commit, per account
	feed      feedNotifier
	limits    *loginLimiter
	feedKeep  uint64 // changes kept per account
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	// closeMu is held shared by every request and exclusively by Close, so the
	// metadata store is never closed under a running transaction.
	closeMu sync.RWMutex
	closed  bool

	pay        *payment.Service // nil without Config.Payments
	vouchers   *payment.Vouchers
	adminToken string
	stopPay    context.CancelFunc
}

const defaultFeedKeep = 100000

// New opens (or creates) the data directory and starts background work (GC).
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("server: no data directory")
	}
	if cfg.MaxNodes < 0 {
		return nil, fmt.Errorf("server: the node cap (--max-nodes) must be 1 or more (0: the default), not %d", cfg.MaxNodes)
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 30 * 24 * time.Hour
	}
	if cfg.GCGrace <= 0 {
		cfg.GCGrace = time.Hour
	}
	if cfg.GCInterval <= 0 {
		cfg.GCInterval = 10 * time.Minute
	}
	if cfg.LoginLimit <= 0 {
		cfg.LoginLimit = 10
	}
	if cfg.SignupLimit <= 0 {
		cfg.SignupLimit = 10
	}
	if cfg.Signup == "" {
		cfg.Signup = SignupOpen
	}
	if _, err := ParseSignupMode(string(cfg.Signup)); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if cfg.SmallChunkMax == 0 {
		cfg.SmallChunkMax = DefaultSmallChunkMax
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: create data dir: %w", err)
	}
	s := &Server{
		cfg:      cfg,
		blobs:    cfg.Blobs,
		log:      cfg.Logger,
		limits:   newLoginLimiter(cfg.LoginLimit, cfg.SignupLimit),
		feedKeep: defaultFeedKeep,
		closing:  make(chan struct{}),
	}
	s.locks.m = map[string]*sync.Mutex{}
	s.feed.m = map[string]chan struct{}{}
	s.small.m = map[string]*smallQueue{}
	if s.blobs == nil {
		l, err := blob.NewLocal(filepath.Join(cfg.DataDir, "blobs"))
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		s.blobs, s.ownBlobs = l, true
	}
	db, err := badger.Open(badgerOptions(filepath.Join(cfg.DataDir, "meta"), cfg))
	if err != nil {
		return nil, fmt.Errorf("server: open metadata: %w", err)
	}
	s.db = db
	if err := s.loadSecret(); err != nil {
		db.Close()
		return nil, err
	}
	if s.adminToken, err = loadAdminToken(cfg.DataDir); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.migrateUsage(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.indexShareTrash(); err != nil { // history_share.go
		db.Close()
		return nil, fmt.Errorf("server: index the trash of shared folders: %w", err)
	}
	if err := s.stampMemberAccepted(); err != nil { // history_share.go
		db.Close()
		return nil, fmt.Errorf("server: stamp shared folders' members with an acceptance time: %w", err)
	}
	s.vouchers = payment.NewVouchers(db, s.creditVoucher)
	if cfg.Payments != nil {
		pc := *cfg.Payments
		userOnChange := pc.OnChange
		pc.OnChange = func(acct string) {
			s.paymentChanged(acct)
			if userOnChange != nil {
				userOnChange(acct)
			}
		}
		pc.VoucherCredit = s.creditVoucher
		if s.pay, err = payment.New(db, pc, s.creditInvoice, cfg.Logger); err != nil {
			db.Close()
			return nil, fmt.Errorf("server: %w", err)
		}
		s.vouchers = s.pay.Vouchers
	}
	if cfg.NoBackground {
		return s, nil
	}
	s.wg.Add(1)
	go s.gcLoop()
	if s.pay != nil {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopPay = cancel
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.pay.Run(ctx)
		}()
	}
	return s, nil
}

// AdminToken is the bearer token of the /v1/admin endpoints (kept in
// DATA/admin-token).
func (s *Server) AdminToken() string { return s.adminToken }

// Payments is the Bitcoin payment service, or nil when top-ups are off.
func (s *Server) Payments() *payment.Service { return s.pay }

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler { return s.routes() }

// Close stops background work, wakes long-polls, and closes the metadata store.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closing)
		if s.stopPay != nil {
			s.stopPay()
		}
		s.wg.Wait()
		s.closeMu.Lock()
		defer s.closeMu.Unlock()
		s.closed = true
		err = s.db.Close()
		if err != nil {
			err = fmt.Errorf("server: close metadata: %w", err)
		}
		if c, ok := s.blobs.(io.Closer); ok && s.ownBlobs {
			if cerr := c.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("server: close blob store: %w", cerr)
			}
		}
	})
	return err
}

// badgerOptions are the metadata store's options. Values over 1 KiB (small
// chunks' bytes, the occasional big node record) go to the value log, so the
// LSM tree holds keys and small records only and compactions never rewrite
// chunk bytes. Checksums are verified on every read, of value log entries
// and of table blocks (so also of chunks under 1 KiB, which stay in the
// tree): corrupted metadata or chunk bytes are an error, never served.
func badgerOptions(dir string, cfg Config) badger.Options {
	o := badger.DefaultOptions(dir).
		WithSyncWrites(cfg.SyncWrites).
		WithLogger(badgerlog.Logger{L: cfg.Logger}).
		WithValueThreshold(1 << 10).
		WithVerifyValueChecksum(true).
		WithChecksumVerificationMode(options.OnBlockRead).
		WithValueLogFileSize(64 << 20).
		WithBlockCacheSize(32 << 20).
		WithMemTableSize(32 << 20)
	if cfg.SmallMemory {
		o = smallMemoryOptions(o)
	}
	return o
}

// gcLoop deletes unreferenced chunks every GCInterval until Close.
func (s *Server) gcLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-s.closing:
				case <-ctx.Done():
				}
				cancel()
			}()
			if n, err := s.sweepLinks(ctx); err != nil { // links.go; unpins before the GC looks
				s.log.Error("link sweep failed", "err", err)
			} else if n > 0 {
				s.log.Info("expired links deleted", "links", n)
			}
			n, freed, err := s.RunGC(ctx)
			if err != nil {
				s.log.Error("gc failed", "err", err)
			} else if n > 0 {
				s.log.Info("gc", "chunks", n, "bytes", freed)
			}
			s.valueLogGC(ctx)
			cancel()
		}
	}
}

// valueLogGC gives back the value log space of deleted small chunks and
// rewritten records: badger rewrites each value log file whose garbage share
// (known once compactions have dropped the deleted keys) is at least half.
func (s *Server) valueLogGC(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.db.RunValueLogGC(0.5)
		if err == nil {
			continue // a file was rewritten: try the next one
		}
		if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
			s.log.Warn("value log gc", "err", err)
		}
		return
	}
}
