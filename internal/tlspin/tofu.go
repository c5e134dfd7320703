package tlspin

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"

	"kumo/internal/atomicfile"
)

// HostPort returns the "host:port" a server URL connects to (port 443 or 80 by
// default), lower-cased: the key under which its pin is stored.
func HostPort(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("tlspin: bad server URL %q: %w", rawURL, err)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("tlspin: bad server URL %q: no host", rawURL)
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port), nil
}

// ParsePins decodes a pin file: one "host:port fingerprint" per line; blank
// lines and lines starting with # are ignored.
func ParsePins(data []byte) (map[string]string, error) {
	pins := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("tlspin: pin file line %d: want \"host:port fingerprint\"", n)
		}
		fp, err := NormalizeFingerprint(f[1])
		if err != nil {
			return nil, fmt.Errorf("tlspin: pin file line %d: %w", n, err)
		}
		pins[strings.ToLower(f[0])] = fp
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tlspin: pin file: %w", err)
	}
	return pins, nil
}

// LoadPins reads a pin file; a missing file holds no pins.
func LoadPins(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tlspin: read pins: %w", err)
	}
	pins, err := ParsePins(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pins, nil
}

// SavePin stores (or replaces) the pin of hostPort in the pin file.
func SavePin(path, hostPort, fingerprint string) error {
	fp, err := NormalizeFingerprint(fingerprint)
	if err != nil {
		return err
	}
	pins, err := LoadPins(path)
	if err != nil {
		return err
	}
	pins[strings.ToLower(hostPort)] = fp
	hosts := make([]string, 0, len(pins))
	for h := range pins {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	var b strings.Builder
	b.WriteString("# kumo server certificate pins: host:port sha256-fingerprint\n")
	for _, h := range hosts {
		fmt.Fprintf(&b, "%s %s\n", h, pins[h])
	}
	if err := atomicfile.WritePrivate(path, []byte(b.String())); err != nil {
		return fmt.Errorf("tlspin: save pin: %w", err)
	}
	return nil
}

// FetchFingerprint connects to hostPort without verifying anything and returns
// the fingerprint of the certificate the server presents, and whether that
// certificate also verifies against the system CAs for the host name.
func FetchFingerprint(ctx context.Context, hostPort string) (fp string, caValid bool, err error) {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return "", false, fmt.Errorf("tlspin: %q: %w", hostPort, err)
	}
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, ServerName: host, MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", hostPort)
	if err != nil {
		return "", false, fmt.Errorf("tlspin: connect to %s: %w", hostPort, err)
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", false, fmt.Errorf("tlspin: %s sent no certificate", hostPort)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, verr := certs[0].Verify(x509.VerifyOptions{DNSName: host, Intermediates: inter})
	return Fingerprint(certs[0]), verr == nil, nil
}

// ErrNotTrusted is returned by TOFU when the user declines the certificate.
var ErrNotTrusted = errors.New("tlspin: server certificate not trusted")

// TOFU returns the pin to use for the server at rawURL (an https URL), trusting
// on first use: a pin already stored in pinFile is returned as is (the
// handshake will then refuse any other certificate); otherwise the server's
// certificate is fetched and, if it does not verify against the system CAs,
// prompt is asked whether to trust its fingerprint; if yes, the pin is stored.
// A CA-valid certificate needs no pin and yields "".
func TOFU(ctx context.Context, pinFile, rawURL string, prompt func(fingerprint string) bool) (string, error) {
	hp, err := HostPort(rawURL)
	if err != nil {
		return "", err
	}
	pins, err := LoadPins(pinFile)
	if err != nil {
		return "", err
	}
	if pin, ok := pins[hp]; ok {
		return pin, nil
	}
	fp, caValid, err := FetchFingerprint(ctx, hp)
	if err != nil {
		return "", err
	}
	if caValid {
		return "", nil
	}
	if prompt == nil || !prompt(fp) {
		return "", fmt.Errorf("%w: %s presented certificate %s", ErrNotTrusted, hp, fp)
	}
	if err := SavePin(pinFile, hp, fp); err != nil {
		return "", err
	}
	return fp, nil
}

// PromptText is the question to show the user on first contact.
func PromptText(hostPort, fingerprint string) string {
	return fmt.Sprintf("The server %s presents a certificate that no certificate authority vouches for.\n"+
		"Its SHA-256 fingerprint is:\n  %s\n"+
		"Compare it with the one the server's operator published (kumo serve prints it).\n"+
		"Trust this certificate from now on? [y/N] ", hostPort, fingerprint)
}
