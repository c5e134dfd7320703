package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"kumo/internal/metrics"
	"kumo/internal/netsim"
	"kumo/internal/payment"
	"kumo/internal/size"
	"kumo/internal/tlspin"
	"kumo/remote/blob"
	"kumo/remote/blob/s3"
	"kumo/remote/server"
)

// shutdownGrace is how long in-flight requests get to finish on SIGTERM.
const shutdownGrace = 20 * time.Second

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "run the kumo cloud server",
		UsageText: "kumo serve --data DIR [--listen 127.0.0.1:8080] [--quota 10GiB] [--tls-self-signed | --tls-cert F --tls-key F] [--metrics 127.0.0.1:9100] [--pprof 127.0.0.1:6060]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data", Usage: "data directory (metadata in DIR/meta, chunks in DIR/blobs)", EnvVars: []string{"KUMO_DATA"}, Required: true},
			&cli.StringFlag{Name: "blob", Usage: "chunk store `URL`: DATA/blobs by default, or s3://BUCKET/PREFIX?endpoint=HOST:PORT&region=R (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws/credentials; also insecure=1, path_style=1, max_parallel=N, retry_for=2m)", EnvVars: []string{"KUMO_BLOB"}},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8080", Usage: "address to listen on (host:port; port 0 picks a free one)", EnvVars: []string{"KUMO_LISTEN"}},
			&cli.StringFlag{Name: "quota", Value: "10GiB", Usage: "storage quota of new accounts (e.g. 500MB, 10GiB, 1T)"},
			&cli.BoolFlag{Name: "sync-writes", Usage: "fsync metadata on every commit (survives power loss, slower)"},
			&cli.DurationFlag{Name: "gc-grace", Value: time.Hour, Usage: "unreferenced chunks older than this are deleted"},
			&cli.StringFlag{Name: "history", Value: "30d", Usage: "how long every version of every file, and what was deleted, is kept (the default window of each account; 0: no history)"},
			&cli.StringFlag{Name: "history-max", Value: "365d", Usage: "the longest window an account may set (kumo history retention)"},
			&cli.DurationFlag{Name: "session-ttl", Value: 30 * 24 * time.Hour, Usage: "lifetime of login sessions"},
			&cli.IntFlag{Name: "login-limit", Value: 10, Usage: "login attempts per account and per client address per minute"},
			&cli.StringFlag{Name: "signup", Value: "open", Usage: "who may create an account: open (anyone), voucher (with an unused voucher code, spent on the new account: invitation by prepaid code) or closed", EnvVars: []string{"KUMO_SIGNUP"}},
			&cli.IntFlag{Name: "signup-limit", Value: 10, Usage: "signups per client address (IPv6: per /64) per hour"},
			&cli.Int64Flag{Name: "max-nodes", Value: server.DefaultMaxNodes, Usage: "files and directories one account may hold"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json"},
			&cli.BoolFlag{Name: "insecure", Usage: "allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy)"},
			&cli.StringFlag{Name: "tls-cert", Usage: "TLS certificate `FILE` (PEM, full chain)", EnvVars: []string{"KUMO_TLS_CERT"}},
			&cli.StringFlag{Name: "tls-key", Usage: "TLS private key `FILE` (PEM)", EnvVars: []string{"KUMO_TLS_KEY"}},
			&cli.BoolFlag{Name: "tls-self-signed", Usage: "serve TLS with a self-signed certificate created once and kept in DATA/tls (clients pin its fingerprint)"},
			&cli.StringSliceFlag{Name: "tls-host", Usage: "host name or IP the self-signed certificate is made for (repeatable; default localhost, loopback, this hostname)"},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics on `ADDR`/metrics (loopback only, e.g. 127.0.0.1:9100)"},
			&cli.StringFlag{Name: "pprof", Usage: "serve Go profiling on `ADDR`/debug/pprof/ (loopback only, e.g. 127.0.0.1:6060)"},
			// A simulated network for tests and benchmarks (internal/netsim).
			&cli.DurationFlag{Name: "sim-latency", Usage: "TESTING ONLY: delay every byte between clients and this server by this one-way latency (20ms = 40 ms round trip)"},
			&cli.StringFlag{Name: "sim-bandwidth", Usage: "TESTING ONLY: cap the link at this `RATE` per direction, one cap shared by all connections like one access link (e.g. 200Mbit, 25MB/s)"},
			// Bitcoin top-ups; off unless --btc-xpub is given.
			&cli.StringFlag{Name: "btc-xpub", Usage: "watch-only BIP84 account public `KEY` (zpub/xpub; vpub/tpub on test networks) to derive receive addresses from; enables top-ups", EnvVars: []string{"KUMO_BTC_XPUB"}},
			&cli.StringFlag{Name: "btc-network", Value: "mainnet", Usage: "mainnet, testnet, testnet4, signet, regtest or simnet"},
			&cli.StringFlag{Name: "btc-rpc", Value: "127.0.0.1:8332", Usage: "`HOST:PORT` of the node's JSON-RPC (bitcoind or btcd)"},
			&cli.StringFlag{Name: "btc-rpc-user", Usage: "node RPC user", EnvVars: []string{"KUMO_BTC_RPC_USER"}},
			&cli.StringFlag{Name: "btc-rpc-pass", Usage: "node RPC password (prefer $KUMO_BTC_RPC_PASS or --btc-rpc-pass-file: flags show in ps)", EnvVars: []string{"KUMO_BTC_RPC_PASS"}},
			&cli.StringFlag{Name: "btc-rpc-pass-file", Usage: "read the node RPC password from `FILE`"},
			&cli.BoolFlag{Name: "btc-rpc-tls", Usage: "speak HTTPS to the node (btcd serves RPC over TLS)"},
			&cli.StringFlag{Name: "btc-rpc-cert", Usage: "PEM `FILE` of the node's RPC certificate to trust with --btc-rpc-tls (btcd's rpc.cert)"},
			&cli.Int64Flag{Name: "btc-price-sat-per-gib-month", Value: 10_000, Usage: "price of 1 GiB for 1 month, in satoshis"},
			&cli.IntFlag{Name: "btc-confirmations", Value: 2, Usage: "confirmations before an invoice settles and quota is credited"},
			&cli.DurationFlag{Name: "btc-invoice-ttl", Value: time.Hour, Usage: "how long a new invoice accepts payment"},
			&cli.DurationFlag{Name: "btc-poll", Value: 15 * time.Second, Usage: "how often the node is polled"},
		},
		Action: runServe,
	}
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// serveTLS returns the server's TLS config (nil for plain HTTP) and the
// SHA-256 fingerprint of its certificate, which clients pin.
func serveTLS(c *cli.Context) (*tls.Config, string, error) {
	certFile, keyFile := c.String("tls-cert"), c.String("tls-key")
	self := c.Bool("tls-self-signed")
	switch {
	case self && (certFile != "" || keyFile != ""):
		return nil, "", errors.New("--tls-self-signed and --tls-cert/--tls-key exclude each other")
	case (certFile == "") != (keyFile == ""):
		return nil, "", errors.New("--tls-cert and --tls-key go together")
	case self:
		var err error
		certFile, keyFile, _, err = tlspin.SelfSigned(filepath.Join(c.String("data"), "tls"), c.StringSlice("tls-host"))
		if err != nil {
			return nil, "", err
		}
	case certFile == "":
		return nil, "", nil
	}
	cfg, err := tlspin.ServerConfig(certFile, keyFile)
	if err != nil {
		return nil, "", err
	}
	fp, err := tlspin.FingerprintFile(certFile)
	if err != nil {
		return nil, "", err
	}
	return cfg, fp, nil
}

// loopbackListen reports whether a listen address only accepts local clients.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && tlspin.IsLoopback(host)
}

func runServe(c *cli.Context) error {
	log, err := newLogger(c.String("log-level"), c.String("log-format"))
	if err != nil {
		return err
	}
	quota, err := size.Parse(c.String("quota"))
	if err != nil {
		return fmt.Errorf("--quota: %w", err)
	}
	tlsCfg, fingerprint, err := serveTLS(c)
	if err != nil {
		return err
	}
	addr := c.String("listen")
	if tlsCfg == nil && !loopbackListen(addr) && !c.Bool("insecure") {
		return fmt.Errorf("refusing plain HTTP on %s: passwords-derived keys and session tokens would cross the network in clear; "+
			"listen on 127.0.0.1, enable TLS, or pass --insecure if a TLS proxy is in front", addr)
	}

	pay, err := paymentConfig(c)
	if err != nil {
		return err
	}
	signup, err := server.ParseSignupMode(c.String("signup"))
	if err != nil {
		return fmt.Errorf("--signup: %w", err)
	}
	if c.Int("signup-limit") < 1 {
		return fmt.Errorf("--signup-limit %d: want at least 1 (use --signup closed to take no signups)", c.Int("signup-limit"))
	}
	var blobs blob.Store
	if u := c.String("blob"); u != "" {
		if !strings.HasPrefix(u, "s3://") {
			return fmt.Errorf("--blob %q: want s3://BUCKET/PREFIX?endpoint=HOST:PORT (leave it out for DATA/blobs)", u)
		}
		octx, cancel := context.WithTimeout(c.Context, time.Minute)
		st, err := s3.Open(octx, u, log)
		cancel()
		if err != nil {
			return fmt.Errorf("--blob: %w", err)
		}
		blobs = st
	}
	history, err := parseSpan(c.String("history"))
	if err != nil {
		return fmt.Errorf("--history: %w", err)
	}
	historyMax, err := parseSpan(c.String("history-max"))
	if err != nil {
		return fmt.Errorf("--history-max: %w", err)
	}
	if historyMax > 0 && history > historyMax {
		return fmt.Errorf("--history %s is longer than --history-max %s", c.String("history"), c.String("history-max"))
	}
	srv, err := server.New(server.Config{
		HistoryDefault: history,
		HistoryMax:     historyMax,
		Blobs:          blobs,
		Payments:       pay,
		DataDir:        c.String("data"),
		DefaultQuota:   quota,
		SessionTTL:     c.Duration("session-ttl"),
		GCGrace:        c.Duration("gc-grace"),
		SyncWrites:     c.Bool("sync-writes"),
		Logger:         log,
		LoginLimit:     c.Int("login-limit"),
		MaxNodes:       c.Int64("max-nodes"),
		Signup:         signup,
		SignupLimit:    c.Int("signup-limit"),
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := srv.Close(); err != nil {
			log.Error("close server", "err", err)
		}
	}()

	if pay != nil {
		log.Info("bitcoin top-ups on", "network", pay.Network, "rpc", pay.RPCHost,
			"price_sat_per_gib_month", pay.PriceSatPerGiBMonth, "confirmations", pay.Confirmations, "invoice_ttl", pay.InvoiceLifetime)
	}
	link, err := simLink(c)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if link != (netsim.Link{}) {
		ln = netsim.Listen(ln, link)
		log.Warn("simulated network on (testing only)", "one_way_latency", link.Latency, "bytes_per_s", link.BytesPerS)
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Long polls of the change feed end at once on shutdown instead of holding
	// it up for their whole wait; other requests get shutdownGrace to finish.
	pollCtx, endPolls := context.WithCancel(context.Background())
	defer endPolls()
	handler := endLongPolls(pollCtx, srv.Handler())
	if a := c.String("metrics"); a != "" {
		reg := metrics.New()
		registerServerGauges(reg, srv, log)
		handler = reg.Instrument(handler)
		maddr, err := metrics.Serve(ctx, a, reg.Handler(), log)
		if err != nil {
			return fmt.Errorf("--metrics: %w", err)
		}
		log.Info("metrics listening", "metrics_url", "http://"+maddr.String()+"/metrics")
	}
	if a := c.String("pprof"); a != "" {
		paddr, err := metrics.Serve(ctx, a, metrics.PprofHandler(), log)
		if err != nil {
			return fmt.Errorf("--pprof: %w", err)
		}
		log.Info("pprof listening", "pprof_url", "http://"+paddr.String()+"/debug/pprof/")
	}
	hs := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			errc <- hs.ServeTLS(ln, "", "")
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	if fingerprint != "" {
		// On stdout too: the operator publishes it, clients pass it as --fingerprint.
		fmt.Printf("kumo serve: TLS certificate SHA-256 fingerprint %s\n", fingerprint)
		log.Info("TLS certificate", "fingerprint", fingerprint)
	}
	blobDesc := filepath.Join(c.String("data"), "blobs")
	if c.String("blob") != "" {
		blobDesc = c.String("blob")
	}
	log.Info("kumo serve listening", "addr", ln.Addr().String(), "url", scheme+"://"+ln.Addr().String(),
		"data", c.String("data"), "blob", blobDesc, "quota", quota, "sync_writes", c.Bool("sync-writes"))

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	endPolls()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("requests still running at shutdown; closing them", "err", err)
		hs.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

// simLink is the simulated network of --sim-latency and --sim-bandwidth.
func simLink(c *cli.Context) (netsim.Link, error) {
	bw, err := parseBandwidth(c.String("sim-bandwidth"))
	if err != nil {
		return netsim.Link{}, fmt.Errorf("--sim-bandwidth: %w", err)
	}
	if c.Duration("sim-latency") < 0 {
		return netsim.Link{}, errors.New("--sim-latency must not be negative")
	}
	return netsim.Link{Latency: c.Duration("sim-latency"), BytesPerS: bw}, nil
}

// endLongPolls cancels the change-feed requests when ctx ends.
func endLongPolls(ctx context.Context, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/changes" {
			rctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			stop := context.AfterFunc(ctx, cancel)
			defer stop()
			r = r.WithContext(rctx)
		}
		h.ServeHTTP(w, r)
	})
}

// gaugeCacheTTL bounds how often a scrape walks all accounts.
const gaugeCacheTTL = 30 * time.Second

// registerServerGauges exports account totals, read from the server at most
// every gaugeCacheTTL (a scrape must not scan a big account table each time).
func registerServerGauges(reg *metrics.Registry, srv *server.Server, log *slog.Logger) {
	var mu sync.Mutex
	var at time.Time
	var count, used, limit float64
	refresh := func() {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) < gaugeCacheTTL {
			return
		}
		accts, err := srv.Accounts()
		if err != nil {
			log.Warn("metrics: list accounts", "err", err)
			return
		}
		at = time.Now()
		count, used, limit = float64(len(accts)), 0, 0
		for _, a := range accts {
			used += float64(a.QuotaUsed)
			limit += float64(a.QuotaLimit)
		}
	}
	get := func(v *float64) func() float64 {
		return func() float64 { refresh(); mu.Lock(); defer mu.Unlock(); return *v }
	}
	reg.GaugeFunc("kumo_accounts", "Accounts on this server.", get(&count))
	reg.GaugeFunc("kumo_quota_used_bytes", "Bytes stored, summed over all accounts (deduplicated per account).", get(&used))
	reg.GaugeFunc("kumo_quota_limit_bytes", "Quota, summed over all accounts.", get(&limit))
}

// paymentConfig returns the Bitcoin top-up configuration, nil without --btc-xpub.
func paymentConfig(c *cli.Context) (*payment.Config, error) {
	key := c.String("btc-xpub")
	if key == "" {
		for _, f := range []string{"btc-rpc-user", "btc-rpc-pass", "btc-rpc-pass-file", "btc-rpc-cert"} {
			if c.IsSet(f) {
				return nil, fmt.Errorf("--%s given without --btc-xpub: top-ups need the watch-only account key", f)
			}
		}
		return nil, nil
	}
	if _, err := payment.NetParams(c.String("btc-network")); err != nil {
		return nil, fmt.Errorf("--btc-network: %w", err)
	}
	pass := c.String("btc-rpc-pass")
	if f := c.String("btc-rpc-pass-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--btc-rpc-pass-file: %w", err)
		}
		pass = strings.TrimSpace(string(b))
	}
	if c.Int64("btc-price-sat-per-gib-month") <= 0 {
		return nil, errors.New("--btc-price-sat-per-gib-month must be positive")
	}
	if c.Int("btc-confirmations") < 1 {
		return nil, errors.New("--btc-confirmations must be at least 1")
	}
	return &payment.Config{
		AccountKey:          key,
		Network:             c.String("btc-network"),
		RPCHost:             c.String("btc-rpc"),
		RPCUser:             c.String("btc-rpc-user"),
		RPCPassword:         pass,
		RPCTLS:              c.Bool("btc-rpc-tls"),
		RPCCertFile:         c.String("btc-rpc-cert"),
		PriceSatPerGiBMonth: c.Int64("btc-price-sat-per-gib-month"),
		Confirmations:       c.Int("btc-confirmations"),
		InvoiceLifetime:     c.Duration("btc-invoice-ttl"),
		PollInterval:        c.Duration("btc-poll"),
	}, nil
}
