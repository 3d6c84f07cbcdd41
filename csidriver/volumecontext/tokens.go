package volumecontext

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"rekey.dev/rekey/internal/contract"
)

// Limits on the service-account tokens kubelet passes (PodInfoServiceAccountTokens).
const (
	maxTokensJSON = 256 << 10
	maxAudiences  = 16
	maxTokenLen   = 16 << 10
)

var (
	// audienceName allows what audiences look like: hostnames, URLs, ARNs.
	audienceName = regexp.MustCompile(`^[A-Za-z0-9._:/@+=~%-]{1,253}$`)
	// jwtChars is base64url with the dots of a JWS compact serialisation.
	jwtChars = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*){2}$`)
)

// ErrTokens is wrapped by every error of ParseTokens. The errors name the
// audience at fault, never a token.
var ErrTokens = errors.New("volumecontext: invalid service-account tokens")

// Token is a service-account token kubelet requested for the volume. Its
// String, GoString and Format hide the value, so it cannot reach a log by
// accident.
type Token struct {
	// Audience is the audience kubelet requested the token for.
	Audience string
	// Value is the token (a JWT). Secret.
	Value string
	// Expiration is when the token expires.
	Expiration time.Time
}

// String hides the token.
func (t Token) String() string {
	return "token(audience=" + t.Audience + ", expires=" + t.Expiration.UTC().Format(time.RFC3339) + ")"
}

// GoString hides the token.
func (t Token) GoString() string { return t.String() }

// Format hides the token from every fmt verb.
func (t Token) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(t.String())) }

// MarshalJSON hides the token.
func (t Token) MarshalJSON() ([]byte, error) { return json.Marshal(t.String()) }

// IsZero reports whether t holds no token.
func (t Token) IsZero() bool { return t.Value == "" }

// ParseTokens parses the value of PodInfoServiceAccountTokens:
// {"<audience>": {"token": "<JWT>", "expirationTimestamp": "<RFC 3339>"}}.
// Fields other than token and expirationTimestamp are ignored. Audiences
// must match audienceName, tokens be JWT-shaped and at most 16 KiB.
func ParseTokens(raw string) (map[string]Token, error) {
	if len(raw) > maxTokensJSON {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrTokens, maxTokensJSON)
	}
	var in map[string]struct {
		Token               *string `json:"token"`
		ExpirationTimestamp *string `json:"expirationTimestamp"`
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
	if err := dec.Decode(&in); err != nil || dec.More() || in == nil {
		// The decoder's message may quote the input: say what is expected instead.
		return nil, fmt.Errorf(`%w: not a JSON object {"<audience>": {"token": "...", "expirationTimestamp": "..."}}`, ErrTokens)
	}
	if len(in) > maxAudiences {
		return nil, fmt.Errorf("%w: %d audiences, at most %d", ErrTokens, len(in), maxAudiences)
	}
	out := make(map[string]Token, len(in))
	for aud, e := range in {
		if !audienceName.MatchString(aud) {
			return nil, fmt.Errorf("%w: an audience is not 1-253 characters of [A-Za-z0-9._:/@+=~%%-]", ErrTokens)
		}
		switch {
		case e.Token == nil || *e.Token == "":
			return nil, fmt.Errorf("%w: audience %q: token is missing", ErrTokens, aud)
		case len(*e.Token) > maxTokenLen:
			return nil, fmt.Errorf("%w: audience %q: token is longer than %d bytes", ErrTokens, aud, maxTokenLen)
		case !jwtChars.MatchString(*e.Token):
			return nil, fmt.Errorf("%w: audience %q: token is not a JWT (three base64url parts)", ErrTokens, aud)
		case e.ExpirationTimestamp == nil:
			return nil, fmt.Errorf("%w: audience %q: expirationTimestamp is missing", ErrTokens, aud)
		}
		exp, err := time.Parse(time.RFC3339, *e.ExpirationTimestamp)
		if err != nil {
			return nil, fmt.Errorf("%w: audience %q: expirationTimestamp is not an RFC 3339 time", ErrTokens, aud)
		}
		out[aud] = Token{Audience: aud, Value: *e.Token, Expiration: exp}
	}
	return out, nil
}

// TokenAudience is the token audience a volume exchanges at STS: the audience
// attribute, else the provider's default (sts.aliyuncs.com for rrsa,
// sts.amazonaws.com for irsa).
func (v Volume) TokenAudience() string {
	switch {
	case v.Audience != "":
		return v.Audience
	case v.AuthType == contract.AuthTypeRRSA:
		return contract.DefaultAudienceRRSA
	case v.AuthType == contract.AuthTypeIRSA:
		return contract.DefaultAudienceIRSA
	}
	return ""
}

// pickToken returns the token of the volume's audience from the tokens
// attribute, or the zero Token when kubelet passed none.
func pickToken(v Volume, raw string, present bool) (Token, error) {
	if !present {
		return Token{}, nil
	}
	tokens, err := ParseTokens(raw)
	if err != nil {
		return Token{}, err
	}
	aud := v.TokenAudience()
	if t, ok := tokens[aud]; ok {
		return t, nil
	}
	have := make([]string, 0, len(tokens))
	for a := range tokens {
		have = append(have, a)
	}
	sort.Strings(have)
	return Token{}, fmt.Errorf("%w: no token for audience %q (kubelet passed %s): add {audience: %s} to the CSIDriver's tokenRequests or set the volume attribute audience",
		ErrTokens, aud, orNone(strings.Join(have, ", ")), aud)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
