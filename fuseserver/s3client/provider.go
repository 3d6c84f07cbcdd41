package s3client

import (
	"context"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"

	"rekey.dev/rekey/internal/keys"
)

// Provider is an aws.CredentialsProvider whose keys are replaced atomically.
// It is handed to the S3 client directly, without the SDK's credentials
// cache, so no stale copy can outlive a swap.
type Provider struct {
	cur atomic.Pointer[generation]
}

type generation struct {
	creds aws.Credentials
	gen   uint64
}

var _ aws.CredentialsProvider = (*Provider)(nil)

// NewProvider returns a Provider holding k as generation 0.
func NewProvider(k keys.Keys) *Provider {
	p := &Provider{}
	p.Set(k, 0)
	return p
}

// Set replaces the keys. Requests signed after Set returns use k.
func (p *Provider) Set(k keys.Keys, gen uint64) {
	c := aws.Credentials{
		AccessKeyID:     k.AccessKeyID,
		SecretAccessKey: k.SecretAccessKey,
		SessionToken:    k.SessionToken,
		Source:          "rekey",
	}
	if !k.Expiration.IsZero() {
		c.CanExpire, c.Expires = true, k.Expiration
	}
	p.cur.Store(&generation{creds: c, gen: gen})
}

// Retrieve returns the keys in use.
func (p *Provider) Retrieve(context.Context) (aws.Credentials, error) {
	return p.cur.Load().creds, nil
}

// Generation returns the generation of the keys in use.
func (p *Provider) Generation() uint64 { return p.cur.Load().gen }

// snapshot identifies the keys in use: every Set stores a new pointer, so a
// request that compares snapshots taken before and after it ran can tell
// whether a swap happened while it was in flight.
func (p *Provider) snapshot() *generation { return p.cur.Load() }
