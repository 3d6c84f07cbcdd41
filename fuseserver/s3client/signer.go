package s3client

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// keySafeSigner signs with a v4.Signer that belongs to one secret key.
//
// The SDK's v4.Signer caches the derived signing key per service and region
// and checks only the access key ID and the day before reusing it, not the
// secret. After a swap to a new secret for the same access key ID (an
// operator fixing a wrong secret, or a server that rotates secrets in place)
// a shared signer would keep signing with the old secret and every request
// would fail with SignatureDoesNotMatch until midnight UTC. This wrapper
// starts a fresh signer, with an empty cache, whenever the secret changes.
type keySafeSigner struct {
	mu     sync.Mutex
	secret string
	signer *v4.Signer
}

var _ s3.HTTPSignerV4 = (*keySafeSigner)(nil)

func newKeySafeSigner() *keySafeSigner { return &keySafeSigner{signer: v4.NewSigner()} }

func (s *keySafeSigner) current(creds aws.Credentials) *v4.Signer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if creds.SecretAccessKey != s.secret {
		s.secret, s.signer = creds.SecretAccessKey, v4.NewSigner()
	}
	return s.signer
}

// SignHTTP implements s3.HTTPSignerV4.
func (s *keySafeSigner) SignHTTP(ctx context.Context, creds aws.Credentials, r *http.Request, payloadHash, service, region string,
	signingTime time.Time, optFns ...func(*v4.SignerOptions)) error {
	return s.current(creds).SignHTTP(ctx, creds, r, payloadHash, service, region, signingTime, optFns...)
}
