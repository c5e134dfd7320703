// Package s3 is a blob.Store on any S3-compatible object store (AWS S3, Ceph
// RGW, SeaweedFS, MinIO, versitygw), through minio-go. Objects are immutable
// single PUTs (a sealed chunk is at most a few MiB), reads use Range, the
// number of requests in flight is bounded, and transient failures (the store
// restarting, 5xx, throttling) are retried with backoff for a bounded time.
package s3

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"kumo/remote/blob"
)

// Defaults of the URL parameters.
const (
	DefaultMaxParallel = 16
	DefaultRetryFor    = 2 * time.Minute
	DefaultEndpoint    = "s3.amazonaws.com"
)

// openCheckFor bounds how long Open waits for the store to answer.
const openCheckFor = 30 * time.Second

// Backoff between attempts: doubled from minBackoff up to maxBackoff.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Store is a blob.Store in one bucket under a key prefix. It caches nothing:
// every call goes to the object store.
type Store struct {
	client   *minio.Client
	core     minio.Core
	bucket   string
	prefix   string // "" or ending in "/"
	sem      chan struct{}
	retryFor time.Duration
	log      *slog.Logger
	desc     string // for logs and errors: s3://bucket/prefix at endpoint
}

var _ blob.Store = (*Store)(nil)

// Config is what an s3:// URL says.
type Config struct {
	Bucket      string
	Prefix      string // without leading slash; "" or ending in "/"
	Endpoint    string // host[:port]
	Secure      bool   // https (default) or http (insecure=1)
	Region      string // "" lets the client ask the store
	PathStyle   bool   // path-style bucket addressing (most self-hosted stores want it)
	MaxParallel int
	RetryFor    time.Duration // total time a call keeps retrying transient failures

	// WrapTransport, if set, wraps the HTTP transport (for metrics or tracing).
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// ParseURL parses s3://BUCKET/PREFIX?endpoint=HOST:PORT&region=R&insecure=1&path_style=1&max_parallel=N&retry_for=2m.
// endpoint may also be given as http://HOST:PORT or https://HOST:PORT.
// Unknown parameters are an error, so a typo does not silently change behaviour.
func ParseURL(rawURL string) (Config, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return Config{}, fmt.Errorf("s3: bad blob URL: %w", err)
	}
	if u.Scheme != "s3" || u.Host == "" {
		return Config{}, fmt.Errorf("s3: bad blob URL %q: want s3://BUCKET/PREFIX?endpoint=HOST:PORT", rawURL)
	}
	if u.User != nil {
		return Config{}, fmt.Errorf("s3: bad blob URL: credentials do not belong in the URL; use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a credentials file")
	}
	c := Config{
		Bucket:      u.Host,
		Endpoint:    DefaultEndpoint,
		Secure:      true,
		MaxParallel: DefaultMaxParallel,
		RetryFor:    DefaultRetryFor,
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		c.Prefix = p + "/"
	}
	q := u.Query()
	for name, vals := range q {
		v := vals[len(vals)-1]
		switch name {
		case "endpoint":
			ep := v
			if strings.Contains(v, "://") {
				eu, err := url.Parse(v)
				if err != nil || eu.Host == "" || (eu.Scheme != "http" && eu.Scheme != "https") {
					return Config{}, fmt.Errorf("s3: bad endpoint %q", v)
				}
				ep = eu.Host
				c.Secure = eu.Scheme == "https"
			}
			if ep == "" {
				return Config{}, fmt.Errorf("s3: empty endpoint")
			}
			c.Endpoint = ep
		case "region":
			c.Region = v
		case "insecure":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Config{}, fmt.Errorf("s3: bad insecure=%q: %w", v, err)
			}
			c.Secure = !b
		case "path_style":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Config{}, fmt.Errorf("s3: bad path_style=%q: %w", v, err)
			}
			c.PathStyle = b
		case "max_parallel":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1024 {
				return Config{}, fmt.Errorf("s3: bad max_parallel=%q: want 1..1024", v)
			}
			c.MaxParallel = n
		case "retry_for":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return Config{}, fmt.Errorf("s3: bad retry_for=%q: want a duration like 2m", v)
			}
			c.RetryFor = d
		default:
			return Config{}, fmt.Errorf("s3: unknown blob URL parameter %q", name)
		}
	}
	return c, nil
}

// DefaultCredentials are the usual AWS sources, in the usual order: the
// environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN),
// then the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or
// ~/.aws/credentials, profile AWS_PROFILE or "default").
func DefaultCredentials() *credentials.Credentials {
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{},
	})
}

// Open connects to the bucket named by rawURL (see ParseURL) with
// DefaultCredentials and checks that the bucket exists.
func Open(ctx context.Context, rawURL string, logger *slog.Logger) (*Store, error) {
	cfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return OpenConfig(ctx, cfg, DefaultCredentials(), logger)
}

// OpenConfig is Open with explicit settings and credentials.
func OpenConfig(ctx context.Context, cfg Config, creds *credentials.Credentials, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.MaxParallel < 1 {
		cfg.MaxParallel = DefaultMaxParallel
	}
	v, err := creds.GetWithContext(&credentials.CredContext{Client: http.DefaultClient})
	if err != nil || v.AccessKeyID == "" || v.SecretAccessKey == "" {
		return nil, fmt.Errorf("s3: no credentials for s3://%s: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "+
			"or put them in ~/.aws/credentials (or the file AWS_SHARED_CREDENTIALS_FILE names)", cfg.Bucket)
	}
	tr, err := minio.DefaultTransport(cfg.Secure)
	if err != nil {
		return nil, fmt.Errorf("s3: transport: %w", err)
	}
	tr.MaxIdleConnsPerHost = cfg.MaxParallel
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	var rt http.RoundTripper = tr
	if cfg.WrapTransport != nil {
		rt = cfg.WrapTransport(tr)
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        creds,
		Secure:       cfg.Secure,
		Transport:    rt,
		Region:       cfg.Region,
		BucketLookup: lookup,
		// A few quick retries inside minio-go; the longer outage budget
		// (RetryFor) is ours, so it is logged and bounded in one place.
		MaxRetries: 3,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: client for %s: %w", cfg.Endpoint, err)
	}
	scheme := "https"
	if !cfg.Secure {
		scheme = "http"
	}
	s := &Store{
		client:   client,
		core:     minio.Core{Client: client},
		bucket:   cfg.Bucket,
		prefix:   cfg.Prefix,
		sem:      make(chan struct{}, cfg.MaxParallel),
		retryFor: cfg.RetryFor,
		log:      logger,
		desc:     fmt.Sprintf("s3://%s/%s at %s://%s", cfg.Bucket, cfg.Prefix, scheme, cfg.Endpoint),
	}
	// A wrong endpoint should not keep the server from starting for the whole
	// RetryFor; a store that is briefly down at start is still waited for.
	checkCtx, cancel := context.WithTimeout(ctx, min(cfg.RetryFor, openCheckFor)+time.Second)
	defer cancel()
	var exists bool
	err = s.do(checkCtx, "check bucket", "", func(ctx context.Context) error {
		var err error
		exists, err = client.BucketExists(ctx, cfg.Bucket)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("s3: %s: %w", s.desc, err)
	}
	if !exists {
		return nil, fmt.Errorf("s3: bucket %q does not exist at %s://%s: create it first", cfg.Bucket, scheme, cfg.Endpoint)
	}
	return s, nil
}

// String describes the store for logs.
func (s *Store) String() string { return s.desc }

func (s *Store) object(key string) (string, error) {
	if !blob.ValidKey(key) { // the same rule as the local store
		return "", fmt.Errorf("%w: %q", blob.ErrBadKey, key)
	}
	return s.prefix + key, nil
}

// Put stores data under key in one PUT with Content-MD5, so the store rejects
// a body damaged on the way. S3 PUTs are atomic: readers see all or nothing.
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	obj, err := s.object(key)
	if err != nil {
		return err
	}
	return s.do(ctx, "put", key, func(ctx context.Context) error {
		_, err := s.client.PutObject(ctx, s.bucket, obj, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
			ContentType:      "application/octet-stream",
			SendContentMd5:   true,
			DisableMultipart: true,
		})
		return err
	})
}

// errShort marks a complete response that does not match the range asked
// for (a store ignoring Range, or a body shorter than its Content-Range says).
// A connection cut mid-body is a different, retried, error.
var errShort = errors.New("s3: response does not match the requested range")

// Get reads length bytes at off (length < 0: to the end). Like the local store,
// a range running past the end returns the bytes that exist, and an offset
// beyond the size is an error (wrapping io.ErrUnexpectedEOF).
func (s *Store) Get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	obj, err := s.object(key)
	if err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("s3: get %s: negative offset %d", key, off)
	}
	if length == 0 {
		// S3 cannot express an empty range; check existence and bounds instead.
		size, err := s.Size(ctx, key)
		if err != nil {
			return nil, err
		}
		if off > size {
			return nil, fmt.Errorf("s3: get %s: offset %d beyond size %d: %w", key, off, size, io.ErrUnexpectedEOF)
		}
		return []byte{}, nil
	}
	var out []byte
	err = s.do(ctx, "get", key, func(ctx context.Context) error {
		var opts minio.GetObjectOptions
		var rerr error
		switch {
		case length > 0:
			rerr = opts.SetRange(off, off+length-1)
		case off > 0:
			rerr = opts.SetRange(off, 0)
		}
		if rerr != nil {
			return fmt.Errorf("s3: get %s: %w", key, rerr)
		}
		body, _, hdr, err := s.core.GetObject(ctx, s.bucket, obj, opts)
		if err != nil {
			return err
		}
		defer body.Close()
		// A store that ignores Range sends the whole object: never return those
		// bytes as if they were the range. (A range from 0 may legitimately be
		// answered with the whole object; the length check below covers it.)
		if cr := hdr.Get("Content-Range"); off > 0 && !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-", off)) {
			return fmt.Errorf("%w: %s: asked for bytes at %d, got Content-Range %q", errShort, key, off, cr)
		}
		limit := length
		if limit < 0 {
			limit = 1 << 40
		}
		// Read one byte more than asked, so a longer answer is caught too.
		data, err := io.ReadAll(io.LimitReader(body, limit+1))
		if err != nil {
			return err
		}
		if length > 0 && int64(len(data)) != length {
			// Fewer bytes are fine only if the range was clipped at the end of
			// the object, as Content-Range ("bytes FIRST-LAST/TOTAL") tells.
			total, ok := rangeTotal(hdr.Get("Content-Range"))
			if int64(len(data)) > length || !ok || off+int64(len(data)) != total {
				return fmt.Errorf("%w: %s at %d: got %d of %d bytes (Content-Range %q)",
					errShort, key, off, len(data), length, hdr.Get("Content-Range"))
			}
		}
		out = data
		return nil
	})
	if err != nil && isInvalidRange(err) {
		// The range starts at or past the end. Reading "the rest" from exactly
		// the end is an empty read; anything else is past the end.
		size, serr := s.Size(ctx, key)
		if serr != nil {
			return nil, serr
		}
		if off == size {
			return []byte{}, nil
		}
		return nil, fmt.Errorf("s3: get %s: offset %d beyond size %d: %w", key, off, size, io.ErrUnexpectedEOF)
	}
	return out, err
}

// rangeTotal returns TOTAL from a Content-Range of the form "bytes FIRST-LAST/TOTAL".
func rangeTotal(cr string) (int64, bool) {
	_, total, ok := strings.Cut(cr, "/")
	if !ok || !strings.HasPrefix(cr, "bytes ") {
		return 0, false
	}
	n, err := strconv.ParseInt(total, 10, 64)
	return n, err == nil && n >= 0
}

// Delete removes key; deleting a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	obj, err := s.object(key)
	if err != nil {
		return err
	}
	err = s.do(ctx, "delete", key, func(ctx context.Context) error {
		return s.client.RemoveObject(ctx, s.bucket, obj, minio.RemoveObjectOptions{})
	})
	if errors.Is(err, blob.ErrNotFound) {
		return nil
	}
	return err
}

// Size returns the stored size of key.
func (s *Store) Size(ctx context.Context, key string) (int64, error) {
	obj, err := s.object(key)
	if err != nil {
		return 0, err
	}
	var size int64
	err = s.do(ctx, "stat", key, func(ctx context.Context) error {
		info, err := s.client.StatObject(ctx, s.bucket, obj, minio.StatObjectOptions{})
		size = info.Size
		return err
	})
	return size, err
}

// do runs op with a parallelism slot, retrying transient failures with
// exponential backoff until RetryFor has passed or ctx ends. A missing object
// becomes blob.ErrNotFound.
func (s *Store) do(ctx context.Context, op, key string, fn func(context.Context) error) error {
	start := time.Now()
	backoff := minBackoff
	for attempt := 1; ; attempt++ {
		err := s.attempt(ctx, fn)
		if err == nil {
			if attempt > 1 {
				s.log.Info("s3 request succeeded after retries", "op", op, "key", key, "attempts", attempt, "store", s.desc)
			}
			return nil
		}
		if isNotFound(err) {
			return fmt.Errorf("%w: %s", blob.ErrNotFound, key)
		}
		if ctx.Err() != nil {
			// The caller gave up (client gone, deadline): not a store failure.
			return fmt.Errorf("s3: %s %s: %w (last error: %v)", op, key, ctx.Err(), err)
		}
		if !retryable(ctx, err) {
			if !isInvalidRange(err) && !errors.Is(err, errShort) {
				s.log.Error("s3 request failed", "op", op, "key", key, "store", s.desc, "err", err)
			}
			return fmt.Errorf("s3: %s %s: %w", op, key, err)
		}
		if time.Since(start)+backoff > s.retryFor {
			s.log.Error("s3 request failed, giving up", "op", op, "key", key, "attempts", attempt,
				"after", time.Since(start).Round(time.Millisecond), "store", s.desc, "err", err)
			return fmt.Errorf("s3: %s %s: giving up after %d attempts in %v: %w",
				op, key, attempt, time.Since(start).Round(time.Millisecond), err)
		}
		s.log.Warn("s3 request failed, retrying", "op", op, "key", key, "attempt", attempt, "in", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("s3: %s %s: %w (last error: %v)", op, key, ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// attempt holds one of the MaxParallel slots for the duration of one try, not
// during backoff, so waiting callers can use the store meanwhile.
func (s *Store) attempt(ctx context.Context, fn func(context.Context) error) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.sem }()
	return fn(ctx)
}

func isNotFound(err error) bool {
	var er minio.ErrorResponse
	if !errors.As(err, &er) {
		return false
	}
	switch er.Code {
	case "NoSuchKey", "NotFound":
		return true
	}
	return er.StatusCode == http.StatusNotFound && er.Code != "NoSuchBucket"
}

func isInvalidRange(err error) bool {
	var er minio.ErrorResponse
	return errors.As(err, &er) && (er.Code == "InvalidRange" || er.StatusCode == http.StatusRequestedRangeNotSatisfiable)
}

// retryable reports whether err may go away by itself: network failures,
// short bodies, 5xx, throttling and timeouts. Client errors (bad credentials,
// missing bucket, bad request) do not.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, errShort) {
		return false
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch er.Code {
		case "RequestTimeout", "RequestTimeTooSkewed", "SlowDown", "SlowDownRead", "SlowDownWrite",
			"Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled",
			"InternalError", "ServiceUnavailable", "XMinioServerNotInitialized":
			return true
		}
		return er.StatusCode >= 500 || er.StatusCode == http.StatusTooManyRequests ||
			er.StatusCode == http.StatusRequestTimeout
	}
	// Everything else is a transport failure (refused, reset, timeout, EOF),
	// except TLS set-up mistakes, which waiting does not fix.
	return !isTLSConfigError(err)
}

func isTLSConfigError(err error) bool {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	return errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}
