package sidecar

import (
	"time"

	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/sts"
)

// Assumer exchanges a web identity token for temporary keys (internal/sts).
type Assumer = sts.Assumer

// NewAssumer returns the STS client of an rrsa or irsa source.
func NewAssumer(src contract.Source, sessionName string, duration time.Duration) (Assumer, error) {
	return sts.New(sts.Config{Kind: src.AuthType, Endpoint: src.STSEndpoint, Region: src.Region,
		RoleARN: src.RoleARN, OIDCProviderARN: src.OIDCProviderARN, SessionName: sessionName, Duration: duration})
}
