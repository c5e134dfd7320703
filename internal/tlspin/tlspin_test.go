package tlspin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
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
)

// startTLS serves "hello" over TLS with the given certificate on a loopback port.
func startTLS(t *testing.T, cert tls.Certificate) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func selfSignedPair(t *testing.T, dir string) (tls.Certificate, string) {
	t.Helper()
	certFile, keyFile, fp, err := SelfSigned(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return pair, fp
}

func get(cfg *tls.Config, url string) (string, error) {
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestSelfSignedReused(t *testing.T) {
	dir := t.TempDir()
	c1, k1, fp1, err := SelfSigned(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2, k2, fp2, err := SelfSigned(dir, []string{"other.example"})
	if err != nil {
		t.Fatal(err)
	}
	if c1 != c2 || k1 != k2 || fp1 != fp2 {
		t.Fatalf("second call made a new certificate: %s vs %s", fp1, fp2)
	}
	if got, err := FingerprintFile(c1); err != nil || got != fp1 {
		t.Fatalf("FingerprintFile = %s, %v; want %s", got, err, fp1)
	}
	if len(fp1) != 64 || strings.ToLower(fp1) != fp1 {
		t.Fatalf("fingerprint %q is not lower-case hex SHA-256", fp1)
	}
	st, err := os.Stat(k1)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", st.Mode().Perm())
	}
	pair, err := tls.LoadX509KeyPair(c1, k1)
	if err != nil {
		t.Fatal(err)
	}
	leaf := pair.Leaf
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Fatalf("key type %T, want ECDSA", leaf.PublicKey)
	}
	for _, h := range []string{"localhost", "127.0.0.1"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("certificate not valid for %s: %v", h, err)
		}
	}
	// A different directory gets a different certificate.
	_, _, fp3, err := SelfSigned(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if fp3 == fp1 {
		t.Fatal("two directories share a certificate")
	}
	// Garbage in place of the certificate is reported, not silently replaced
	// (replacing would break every client's pin).
	if err := os.WriteFile(c1, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := SelfSigned(dir, nil); err == nil {
		t.Fatal("a corrupt certificate file was accepted")
	}
}

func TestPinnedOK(t *testing.T) {
	pair, fp := selfSignedPair(t, t.TempDir())
	srv := startTLS(t, pair)
	// Pasted in openssl's colon-separated upper-case form.
	var colon []string
	for i := 0; i < len(fp); i += 2 {
		colon = append(colon, strings.ToUpper(fp[i:i+2]))
	}
	for _, pin := range []string{fp, strings.Join(colon, ":")} {
		body, err := get(ClientConfig(pin), srv.URL)
		if err != nil || body != "hello" {
			t.Fatalf("pinned %s: %q, %v", pin, body, err)
		}
	}
	// Without a pin the self-signed certificate is refused by normal verification.
	if _, err := get(ClientConfig(""), srv.URL); err == nil {
		t.Fatal("self-signed certificate accepted without a pin")
	}
}

func TestChangedCertRefused(t *testing.T) {
	_, oldFP := selfSignedPair(t, t.TempDir())
	pair, newFP := selfSignedPair(t, t.TempDir()) // the server now has another certificate
	srv := startTLS(t, pair)
	_, err := get(ClientConfig(oldFP), srv.URL)
	var ce *ChangedError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a ChangedError", err)
	}
	if ce.Got != newFP || ce.Pinned != oldFP {
		t.Fatalf("ChangedError %+v, want got=%s pinned=%s", ce, newFP, oldFP)
	}
	want := "server certificate changed: got " + newFP + ", pinned " + oldFP
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--fingerprint") {
		t.Fatalf("error text %q lacks %q / --fingerprint hint", err, want)
	}
	// A malformed pin fails closed.
	if _, err := get(ClientConfig("not-a-fingerprint"), srv.URL); err == nil {
		t.Fatal("malformed pin accepted a certificate")
	}
}

// testCA makes a CA and a leaf it signed for 127.0.0.1.
func testCA(t *testing.T) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
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
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestCAVerificationWithoutPin(t *testing.T) {
	pool, pair := testCA(t)
	srv := startTLS(t, pair)
	cfg := ClientConfig("")
	cfg.RootCAs = pool
	if body, err := get(cfg, srv.URL); err != nil || body != "hello" {
		t.Fatalf("CA-signed server: %q, %v", body, err)
	}
	// The wrong name is still refused: verification is real.
	cfg = ClientConfig("")
	cfg.RootCAs = pool
	cfg.ServerName = "elsewhere.example"
	if _, err := get(cfg, srv.URL); err == nil {
		t.Fatal("certificate accepted for a name it does not carry")
	}
	// And an unknown CA is refused.
	if _, err := get(ClientConfig(""), srv.URL); err == nil {
		t.Fatal("certificate from an unknown CA accepted")
	}
}

func TestRequireTLS(t *testing.T) {
	cases := []struct {
		url      string
		insecure bool
		ok       bool
	}{
		{"https://drive.example.com", false, true},
		{"https://10.0.0.5:8443", false, true},
		{"http://127.0.0.1:8080", false, true},
		{"http://127.8.9.10:8080", false, true},
		{"http://[::1]:8080", false, true},
		{"http://localhost:8080", false, true},
		{"http://LOCALHOST.:8080", false, true},
		{"http://drive.example.com", false, false},
		{"http://10.0.0.5:8080", false, false},
		{"http://128.0.0.1", false, false},
		{"http://localhost.example.com", false, false},
		{"http://[::2]:80", false, false},
		{"http://drive.example.com", true, true},
		{"ftp://127.0.0.1", true, false},
		{"://bad", true, false},
	}
	for _, c := range cases {
		err := RequireTLS(c.url, c.insecure)
		if (err == nil) != c.ok {
			t.Errorf("RequireTLS(%q, %v) = %v, want ok=%v", c.url, c.insecure, err, c.ok)
		}
	}
	if err := RequireTLS("http://drive.example.com", false); err == nil || !strings.Contains(err.Error(), "--insecure") {
		t.Errorf("error should mention --insecure: %v", err)
	}
}

func TestTOFU(t *testing.T) {
	pair, fp := selfSignedPair(t, t.TempDir())
	srv := startTLS(t, pair)
	pinFile := filepath.Join(t.TempDir(), "sub", "pins")
	ctx := context.Background()

	// Declined: nothing stored.
	var asked string
	_, err := TOFU(ctx, pinFile, srv.URL, func(got string) bool { asked = got; return false })
	if !errors.Is(err, ErrNotTrusted) || asked != fp {
		t.Fatalf("declined TOFU: err=%v asked=%q want fp %s", err, asked, fp)
	}
	if pins, err := LoadPins(pinFile); err != nil || len(pins) != 0 {
		t.Fatalf("pins after decline: %v, %v", pins, err)
	}

	// Accepted: stored and returned, and works with ClientConfig.
	pin, err := TOFU(ctx, pinFile, srv.URL, func(string) bool { return true })
	if err != nil || pin != fp {
		t.Fatalf("TOFU = %q, %v; want %s", pin, err, fp)
	}
	if body, err := get(ClientConfig(pin), srv.URL); err != nil || body != "hello" {
		t.Fatalf("get with TOFU pin: %q, %v", body, err)
	}

	// Later contact: no prompt, the stored pin is returned.
	pin, err = TOFU(ctx, pinFile, srv.URL, func(string) bool { t.Fatal("asked again"); return false })
	if err != nil || pin != fp {
		t.Fatalf("second TOFU = %q, %v", pin, err)
	}

	// The server's certificate changes: the stored pin is still required, and
	// the handshake refuses the new certificate.
	srv.Close()
	pair2, _ := selfSignedPair(t, t.TempDir())
	srv2 := httptest.NewUnstartedServer(srv.Config.Handler)
	srv2.Listener.Close()
	l, err := net.Listen("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Skipf("cannot rebind %s: %v", srv.Listener.Addr(), err)
	}
	srv2.Listener = l
	srv2.TLS = &tls.Config{Certificates: []tls.Certificate{pair2}}
	srv2.StartTLS()
	defer srv2.Close()
	pin, err = TOFU(ctx, pinFile, srv2.URL, func(string) bool { t.Fatal("asked about a changed certificate"); return true })
	if err != nil || pin != fp {
		t.Fatalf("TOFU after change = %q, %v; want the old pin", pin, err)
	}
	var ce *ChangedError
	if _, err := get(ClientConfig(pin), srv2.URL); !errors.As(err, &ce) {
		t.Fatalf("changed certificate: %v, want ChangedError", err)
	}
}

func TestPinFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pins")
	a := strings.Repeat("ab", 32)
	b := strings.Repeat("cd", 32)
	if err := SavePin(path, "Host.Example:443", a); err != nil {
		t.Fatal(err)
	}
	if err := SavePin(path, "other:8443", b); err != nil {
		t.Fatal(err)
	}
	if err := SavePin(path, "host.example:443", b); err != nil {
		t.Fatal(err)
	}
	pins, err := LoadPins(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) != 2 || pins["host.example:443"] != b || pins["other:8443"] != b {
		t.Fatalf("pins %v", pins)
	}
	if err := SavePin(path, "x:1", "zz"); err == nil {
		t.Fatal("bad fingerprint saved")
	}
	if _, err := ParsePins([]byte("host:1 " + a + " extra\n")); err == nil {
		t.Fatal("malformed line accepted")
	}
	for in, want := range map[string]string{
		"https://Host.Example/x": "host.example:443",
		"http://h":               "h:80",
		"https://[::1]:8443":     "[::1]:8443",
	} {
		if got, err := HostPort(in); err != nil || got != want {
			t.Errorf("HostPort(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func FuzzParsePins(f *testing.F) {
	f.Add([]byte("# c\nhost:443 " + strings.Repeat("0", 64) + "\n\n"))
	f.Add([]byte("h AB:CD"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pins, err := ParsePins(data)
		if err != nil {
			return
		}
		for h, fp := range pins {
			if n, err := NormalizeFingerprint(fp); err != nil || n != fp {
				t.Fatalf("pin %s=%q not canonical", h, fp)
			}
		}
	})
}
