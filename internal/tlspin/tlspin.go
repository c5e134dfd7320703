// Package tlspin is kumo's transport security: a self-signed server certificate
// that is created once and kept, client configs that pin a certificate by its
// SHA-256 fingerprint (or verify it against CAs when no pin is set),
// trust-on-first-use with a stored pin, and the rule that plain HTTP is only
// for loopback servers.
package tlspin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"kumo/internal/atomicfile"
)

// File names SelfSigned keeps in its directory.
const (
	CertFileName = "tls-cert.pem"
	KeyFileName  = "tls-key.pem"
)

// selfSignedValidity is long on purpose: clients pin the exact certificate, so
// every renewal forces every client to re-pin.
const selfSignedValidity = 10 * 365 * 24 * time.Hour

// DefaultHosts are the names a self-signed certificate is valid for when the
// operator names none: localhost, the loopback addresses and this machine's hostname.
func DefaultHosts() []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		hosts = append(hosts, h)
	}
	return hosts
}

// SelfSigned returns the self-signed certificate kept in dir, creating it (an
// ECDSA P-256 key, valid for hosts, or DefaultHosts when hosts is empty) on
// first use. An existing certificate is reused as long as it has not expired,
// even if hosts changed: its fingerprint is what clients pin, so it must stay
// stable. Delete the two files to rotate it.
func SelfSigned(dir string, hosts []string) (certFile, keyFile, fingerprint string, err error) {
	certFile = filepath.Join(dir, CertFileName)
	keyFile = filepath.Join(dir, KeyFileName)
	if pair, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		if pair.Leaf != nil && time.Now().Before(pair.Leaf.NotAfter) {
			return certFile, keyFile, Fingerprint(pair.Leaf), nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", "", "", fmt.Errorf("tlspin: existing certificate in %s is unusable (delete %s and %s to create a new one): %w",
			dir, CertFileName, KeyFileName, err)
	}
	if len(hosts) == 0 {
		hosts = DefaultHosts()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", "", fmt.Errorf("tlspin: create %s: %w", dir, err)
	}
	certPEM, keyPEM, leaf, err := newSelfSigned(hosts)
	if err != nil {
		return "", "", "", err
	}
	// Key first: a certificate file without its key would be reported as unusable.
	if err := atomicfile.Write(keyFile, keyPEM, 0o600); err != nil {
		return "", "", "", err
	}
	if err := atomicfile.Write(certFile, certPEM, 0o644); err != nil {
		return "", "", "", err
	}
	return certFile, keyFile, Fingerprint(leaf), nil
}

func newSelfSigned(hosts []string) (certPEM, keyPEM []byte, leaf *x509.Certificate, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tlspin: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tlspin: serial number: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "kumo " + hosts[0], Organization: []string{"kumo self-signed"}},
		NotBefore:             now.Add(-time.Hour), // tolerate clients with a slightly slow clock
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tlspin: create certificate: %w", err)
	}
	leaf, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tlspin: parse new certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tlspin: marshal key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, leaf, nil
}

// Fingerprint is the SHA-256 of the certificate's DER encoding in lower-case hex
// (the same value `openssl x509 -fingerprint -sha256` prints, without colons).
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// FingerprintFile returns the fingerprint of the first certificate in a PEM
// file, so an operator with a CA-issued certificate can publish it too.
func FingerprintFile(certFile string) (string, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return "", fmt.Errorf("tlspin: read certificate: %w", err)
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return "", fmt.Errorf("tlspin: no certificate in %s", certFile)
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return "", fmt.Errorf("tlspin: parse certificate in %s: %w", certFile, err)
		}
		return Fingerprint(cert), nil
	}
}

// ErrBadFingerprint is returned for a fingerprint that is not a SHA-256 in hex.
var ErrBadFingerprint = errors.New("tlspin: a fingerprint is 64 hex characters (SHA-256), optionally with colons")

// NormalizeFingerprint accepts the forms people paste (upper case, colon
// separated as openssl prints it, an optional "sha256:" prefix) and returns the
// canonical lower-case hex form.
func NormalizeFingerprint(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(s, "sha256:")
	s = strings.TrimPrefix(s, "sha256 fingerprint=")
	s = strings.NewReplacer(":", "", " ", "").Replace(s)
	if len(s) != 2*sha256.Size {
		return "", ErrBadFingerprint
	}
	if _, err := hex.DecodeString(s); err != nil {
		return "", ErrBadFingerprint
	}
	return s, nil
}

// ChangedError is returned by a pinned TLS handshake when the server presents a
// certificate other than the pinned one.
type ChangedError struct {
	Got, Pinned string
}

func (e *ChangedError) Error() string {
	return fmt.Sprintf("server certificate changed: got %s, pinned %s — if the operator rotated it, "+
		"run kumo login again with --fingerprint NEW (the new fingerprint, as the operator published it)",
		e.Got, e.Pinned)
}

// ClientConfig returns the client TLS config for a server. With an empty pin
// the certificate is verified the usual way (system CAs, host name); set
// RootCAs on the result to trust a private CA. With a pin, exactly the pinned
// certificate is accepted, whoever signed it and whatever names it carries.
func ClientConfig(pin string) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if pin == "" {
		return cfg
	}
	want, err := NormalizeFingerprint(pin)
	if err != nil {
		want = pin // compares unequal to every real fingerprint: fail closed
	}
	// Chain and name checks are replaced by the pin. VerifyConnection (unlike
	// VerifyPeerCertificate) also runs on resumed sessions.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("tlspin: server sent no certificate")
		}
		if got := Fingerprint(cs.PeerCertificates[0]); got != want {
			return &ChangedError{Got: got, Pinned: want}
		}
		return nil
	}
	return cfg
}

// ServerConfig loads a certificate and key for `kumo serve`.
func ServerConfig(certFile, keyFile string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlspin: load %s / %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}, nil
}

// IsLoopback reports whether host (a name or an IP, without port) is this machine:
// "localhost", 127.0.0.0/8 or ::1.
func IsLoopback(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// RequireTLS checks a server URL: https is always fine; plain http only to a
// loopback host, unless insecure is set (the user's explicit --insecure).
func RequireTLS(rawURL string, insecure bool) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("tlspin: bad server URL %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if IsLoopback(u.Hostname()) || insecure {
			return nil
		}
		return fmt.Errorf("refusing plain http to %s: it is not a loopback address, so everything sent "+
			"(session tokens included) could be read or changed on the way; use https://, or --insecure if you really mean it",
			u.Host)
	default:
		return fmt.Errorf("tlspin: bad server URL %q: scheme must be http or https", rawURL)
	}
}
