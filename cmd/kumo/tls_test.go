package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kumo/internal/tlspin"
	"kumo/remote/session"
)

// freeAddr returns a loopback address nobody listens on (for restarts on the same port).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func TestTLSSelfSignedPinning(t *testing.T) {
	bin := buildKumo(t)
	data, addr := t.TempDir(), freeAddr(t)
	p := serveAt(t, bin, data, addr, "--tls-self-signed")
	if !strings.HasPrefix(p.url, "https://") || len(p.fingerprint) != 64 {
		t.Fatalf("serve: url %q fingerprint %q", p.url, p.fingerprint)
	}
	if fp, err := tlspin.FingerprintFile(filepath.Join(data, "tls", tlspin.CertFileName)); err != nil || fp != p.fingerprint {
		t.Fatalf("DATA/tls certificate: %s %v, logged %s", fp, err, p.fingerprint)
	}
	cfg := t.TempDir()
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + cfg, "KUMO_PASSWORD=pw"}}
	sessFile := filepath.Join(cfg, "session.json")

	// No pin and no terminal to ask on: refused, nothing stored.
	r.fails("pass --fingerprint", "signup", "--server", p.url, "--email", "tls@example.com")
	// A wrong pin: the handshake fails before anything is sent.
	wrong := strings.Repeat("ab", 32)
	r.fails("does not match --fingerprint", "signup", "--server", p.url, "--email", "tls@example.com", "--fingerprint", wrong)
	if _, err := os.Stat(sessFile); !os.IsNotExist(err) {
		t.Fatalf("session after refused signups: %v", err)
	}
	// The right pin, as openssl prints it (upper case with colons).
	r.ok("signup", "--server", p.url, "--email", "tls@example.com", "--fingerprint", colons(p.fingerprint))
	s, err := session.Load(sessFile)
	if err != nil || s.Fingerprint != p.fingerprint {
		t.Fatalf("session pin %q (%v), want %s", s.Fingerprint, err, p.fingerprint)
	}
	src := filepath.Join(t.TempDir(), "f.txt")
	os.WriteFile(src, []byte("over tls"), 0o644)
	r.ok("put", src, "/f.txt")
	// Login again without --fingerprint: the stored pin is used, no question.
	r.ok("login", "--server", p.url, "--email", "tls@example.com")

	// The certificate is rotated behind the client's back.
	p.stop()
	// Read only after exit: the buffer is complete and no longer written.
	if !strings.Contains(p.stdout.String(), p.fingerprint) {
		t.Fatalf("fingerprint not on stdout: %q", p.stdout.String())
	}
	os.RemoveAll(filepath.Join(data, "tls"))
	p2 := serveAt(t, bin, data, addr, "--tls-self-signed")
	if p2.fingerprint == p.fingerprint || p2.url != p.url {
		t.Fatalf("restart: %s %s", p2.url, p2.fingerprint)
	}
	errs := r.fails("server certificate changed", "ls", "/")
	if !strings.Contains(errs, p2.fingerprint) || !strings.Contains(errs, "--fingerprint") {
		t.Fatalf("changed-certificate error does not say what to do: %s", errs)
	}
	r.fails("server certificate changed", "get", "/f.txt", filepath.Join(t.TempDir(), "x"))
	r.fails("server certificate changed", "login", "--server", p.url, "--email", "tls@example.com")
	// The operator publishes the new fingerprint; the user re-pins it.
	r.ok("login", "--server", p.url, "--email", "tls@example.com", "--fingerprint", p2.fingerprint)
	dst := filepath.Join(t.TempDir(), "f.txt")
	r.ok("get", "/f.txt", dst)
	if b, _ := os.ReadFile(dst); string(b) != "over tls" {
		t.Fatalf("get after re-pin: %q", b)
	}
}

func colons(hexfp string) string {
	var parts []string
	for i := 0; i < len(hexfp); i += 2 {
		parts = append(parts, strings.ToUpper(hexfp[i:i+2]))
	}
	return strings.Join(parts, ":")
}

// writeCA makes a CA and a server certificate it signed for 127.0.0.1.
func writeCA(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kumo test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return caFile, certFile, keyFile
}

// A certificate a trusted CA signed needs no pin and no question. The CA is
// made trusted through SSL_CERT_FILE, which Go reads as the system roots.
func TestTLSCAVerified(t *testing.T) {
	bin := buildKumo(t)
	caFile, certFile, keyFile := writeCA(t, t.TempDir())
	p := serveAt(t, bin, t.TempDir(), "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(p.url, "https://") {
		t.Fatalf("url %q", p.url)
	}
	cfg := t.TempDir()
	untrusted := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + cfg, "KUMO_PASSWORD=pw", "SSL_CERT_FILE=" + filepath.Join(cfg, "none.pem")}}
	untrusted.fails("pass --fingerprint", "signup", "--server", p.url, "--email", "ca@example.com")

	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + cfg, "KUMO_PASSWORD=pw", "SSL_CERT_FILE=" + caFile}}
	r.ok("signup", "--server", p.url, "--email", "ca@example.com")
	s, err := session.Load(filepath.Join(cfg, "session.json"))
	if err != nil || s.Fingerprint != "" {
		t.Fatalf("CA-verified session pinned %q (%v)", s.Fingerprint, err)
	}
	r.ok("ls", "/")
	// Without the CA the same session is refused: it verifies, it does not trust blindly.
	untrusted.fails("certificate", "ls", "/")
}

// nonLoopbackIP returns an address of this machine that is not loopback, "" if none.
func nonLoopbackIP() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	return ""
}

func TestPlainHTTPOffLoopback(t *testing.T) {
	bin := buildKumo(t)
	cfg := t.TempDir()
	r := &runner{t: t, bin: bin, env: []string{"KUMO_CONFIG_DIR=" + cfg, "KUMO_PASSWORD=pw"}}
	// Refused before any connection is made (TEST-NET-1 address, routes nowhere).
	r.fails("refusing plain http", "signup", "--server", "http://192.0.2.1:8080", "--email", "h@example.com")
	r.fails("refusing plain http", "login", "--server", "http://192.0.2.1:8080", "--email", "h@example.com")

	ip := nonLoopbackIP()
	if ip == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no non-loopback address to test --insecure with")
		}
		t.Skip("no non-loopback address")
	}
	p := serveAt(t, bin, t.TempDir(), ip+":0", "--insecure")
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(p.url, "http://"))
	url := "http://" + net.JoinHostPort(ip, port)
	r.fails("refusing plain http", "signup", "--server", url, "--email", "h@example.com")
	r.ok("signup", "--server", url, "--email", "h@example.com", "--insecure")
	// The choice is kept in the session: later commands work without the flag.
	r.ok("ls", "/")
}

// The trust-on-first-use question, answered in-process.
func TestTOFUPrompt(t *testing.T) {
	hs := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer hs.Close()
	want := tlspin.Fingerprint(hs.Certificate())
	pins := filepath.Join(t.TempDir(), "pins")
	ctx := context.Background()

	asked := 0
	no := func(hp, fp string) (bool, error) { asked++; return false, nil }
	if _, err := resolvePin(ctx, hs.URL, "", pins, no); !errors.Is(err, tlspin.ErrNotTrusted) || asked != 1 {
		t.Fatalf("declined: %v (asked %d)", err, asked)
	}
	yes := func(hp, fp string) (bool, error) {
		asked++
		if fp != want {
			t.Errorf("asked about %s, server has %s", fp, want)
		}
		return true, nil
	}
	if pin, err := resolvePin(ctx, hs.URL, "", pins, yes); err != nil || pin != want || asked != 2 {
		t.Fatalf("accepted: %q %v (asked %d)", pin, err, asked)
	}
	// Stored: not asked again.
	if pin, err := resolvePin(ctx, hs.URL, "", pins, no); err != nil || pin != want || asked != 2 {
		t.Fatalf("second contact: %q %v (asked %d)", pin, err, asked)
	}
	// The pin works with a real handshake, and a different pin is refused.
	for _, tc := range []struct {
		pin string
		ok  bool
	}{{want, true}, {strings.Repeat("0", 64), false}} {
		cl, err := session.NewClient(hs.URL, tc.pin, false)
		if err != nil {
			t.Fatal(err)
		}
		err = cl.Health(ctx)
		var ce *tlspin.ChangedError
		if tc.ok && err != nil || !tc.ok && !errors.As(err, &ce) {
			t.Fatalf("pin %s: %v", tc.pin, err)
		}
	}

	for in, ok := range map[string]bool{"y\n": true, "YES\n": true, "\n": false, "n\n": false, "": false, "yep\n": false} {
		if got := askTrust(strings.NewReader(in), io.Discard, "h:1", want); got != ok {
			t.Errorf("answer %q: trusted=%v", in, got)
		}
	}
	if _, err := resolvePin(ctx, "http://127.0.0.1:1", want, pins, no); err == nil {
		t.Error("--fingerprint accepted for plain http")
	}
	if _, err := resolvePin(ctx, hs.URL, "xyz", pins, no); err == nil {
		t.Error("malformed --fingerprint accepted")
	}
}
