package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// Secret data keys; tls.crt and tls.key follow the kubernetes.io/tls layout.
const (
	KeyTLSCert = "tls.crt"
	KeyTLSKey  = "tls.key"
	KeyCACert  = "ca.crt" // bundle: the current CA first, then older unexpired CAs
	KeyCAKey   = "ca.key"
)

// ErrNoPEM means a PEM field held no block of the expected type.
var ErrNoPEM = errors.New("certs: no PEM block")

// keyPair is a certificate with its private key.
type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate key: %w", err)
	}
	return k, nil
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: serial: %w", err)
	}
	return n, nil
}

// newCA creates a self-signed CA valid from now for validity.
func newCA(commonName string, now time.Time, validity time.Duration) (keyPair, error) {
	key, err := newKey()
	if err != nil {
		return keyPair{}, err
	}
	sn, err := serial()
	if err != nil {
		return keyPair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	return sign(tmpl, tmpl, key, key)
}

// newServing creates a serving certificate for sans (DNS names or IPs)
// signed by ca. It never outlives ca.
func newServing(ca keyPair, sans []string, now time.Time, validity time.Duration) (keyPair, error) {
	key, err := newKey()
	if err != nil {
		return keyPair{}, err
	}
	sn, err := serial()
	if err != nil {
		return keyPair{}, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: sans[0]},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	return sign(tmpl, ca.cert, key, ca.key)
}

func sign(tmpl, parent *x509.Certificate, key crypto.Signer, parentKey crypto.Signer) (keyPair, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return keyPair{}, fmt.Errorf("certs: sign %s: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return keyPair{}, fmt.Errorf("certs: parse %s: %w", tmpl.Subject.CommonName, err)
	}
	return keyPair{cert: cert, key: key}, nil
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func encodeKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("certs: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseCerts decodes every CERTIFICATE block of data.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: CERTIFICATE", ErrNoPEM)
	}
	return out, nil
}

// parsePair decodes a certificate (the first of certPEM) and its key.
func parsePair(certPEM, keyPEM []byte) (keyPair, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return keyPair{}, err
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return keyPair{}, fmt.Errorf("%w: PRIVATE KEY", ErrNoPEM)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return keyPair{}, fmt.Errorf("certs: parse key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return keyPair{}, fmt.Errorf("certs: key of type %T cannot sign", k)
	}
	pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(signer.Public()) {
		return keyPair{}, errors.New("certs: key does not match certificate")
	}
	return keyPair{cert: certs[0], key: signer}, nil
}

// fresh reports whether c is valid at now and has more than a third of
// validity (the lifetime it was issued for) left.
func fresh(c *x509.Certificate, now time.Time, validity time.Duration) bool {
	return now.After(c.NotBefore) && c.NotAfter.Sub(now) > validity/3
}

// covers reports whether c names exactly sans.
func covers(c *x509.Certificate, sans []string) bool {
	var have []string
	have = append(have, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		have = append(have, ip.String())
	}
	want := slices.Clone(sans)
	for i, s := range want {
		if ip := net.ParseIP(s); ip != nil {
			want[i] = ip.String()
		}
	}
	slices.Sort(have)
	slices.Sort(want)
	return slices.Equal(have, want)
}

// bundle encodes ca followed by every unexpired certificate of old that is not
// ca itself, so serving certificates signed by a retired CA stay trusted
// until they expire.
func bundle(ca *x509.Certificate, old []*x509.Certificate, now time.Time) []byte {
	var buf bytes.Buffer
	buf.Write(encodeCert(ca))
	for _, c := range old {
		if c.Equal(ca) || now.After(c.NotAfter) {
			continue
		}
		buf.Write(encodeCert(c))
	}
	return buf.Bytes()
}
