// Package volumecontext parses what kubelet hands to NodePublishVolume — the
// volume handle, the volume attributes (PV spec.csi.volumeAttributes plus
// podInfoOnMount entries) and the nodePublishSecretRef's data — once, into a
// typed Volume. Errors name the attribute or Secret key at fault and never
// quote a secret value.
//
// PVs written for Alibaba ACK's OSS driver (bucket, url, path, otherOpts,
// akId/akSecret) and for csi-s3 (volumeHandle "bucket/prefix", endpoint and
// region in the Secret, accessKeyID/secretAccessKey) parse unchanged; see
// docs/csi-driver.md for the mapping.
package volumecontext

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"rekey.dev/rekey/fuseserver/mountopts"
	"rekey.dev/rekey/fuseserver/s3client"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/keys"
)

// ErrInvalid is wrapped by every error of Parse.
var ErrInvalid = errors.New("volumecontext: invalid volume")

// PodInfo is the pod the volume is published for (podInfoOnMount).
type PodInfo struct {
	Name, Namespace, UID, ServiceAccount string
}

// Volume is one parsed, validated volume.
type Volume struct {
	// ID is the volume handle.
	ID string
	// Bucket and Prefix locate the data; Prefix has no leading or trailing '/'.
	Bucket, Prefix string
	// Endpoint is the normalised S3 URL; Region may be empty (server default).
	Endpoint, Region string
	// Options are the parsed otherOpts; RawOptions is their canonical text,
	// passed on to the FUSE server.
	Options    mountopts.Options
	RawOptions string
	// AuthType is contract.AuthTypeSecret, AuthTypeRRSA or AuthTypeIRSA.
	AuthType string
	// RoleARN, OIDCProviderARN, STSEndpoint and Audience configure rrsa/irsa.
	RoleARN, OIDCProviderARN, STSEndpoint, Audience string
	// Pod is empty unless the CSIDriver sets podInfoOnMount.
	Pod PodInfo
	// Ephemeral is true for an inline CSI volume.
	Ephemeral bool
	// Keys are the Secret's keys; zero when the Secret holds none (rrsa/irsa).
	Keys keys.Keys
	// Token is the service-account token of TokenAudience() that kubelet
	// passed (CSIDriver tokenRequests), for rrsa/irsa volumes; zero when
	// kubelet passed none. Secret.
	Token Token
}

var knownAttrs = map[string]bool{
	contract.VolumeAttrBucket: true, contract.VolumeAttrURL: true, contract.VolumeAttrPath: true,
	contract.VolumeAttrOtherOpts: true, contract.VolumeAttrRegion: true, contract.VolumeAttrAuthType: true,
	contract.VolumeAttrRoleARN: true, contract.VolumeAttrOIDCProviderARN: true,
	contract.VolumeAttrSTSEndpoint: true, contract.VolumeAttrAudience: true,
	contract.PodInfoName: true, contract.PodInfoNamespace: true, contract.PodInfoUID: true,
	contract.PodInfoServiceAccount: true, contract.PodInfoEphemeral: true, contract.PodInfoServiceAccountTokens: true,
}

// IgnoredAttributes lists the attributes of attrs that Parse does not use,
// sorted (for example csi-s3's "mounter" and "capacity", ACK's "encrypted"),
// so callers can log them.
func IgnoredAttributes(attrs map[string]string) []string {
	var out []string
	for k := range attrs {
		if !knownAttrs[k] && !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// bucketName is the S3/OSS bucket naming rule, relaxed to what every
// provider accepts: 3-63 lowercase letters, digits, '.', '-' and '_'.
var (
	bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$`)
	regionName = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)
	podUID     = regexp.MustCompile(`^[a-zA-Z0-9-]{1,64}$`)
)

// Parse validates the volume handle, attributes and Secret data of one
// NodePublishVolume. Every problem is reported, each naming its attribute
// or Secret key; secret values are never quoted.
func Parse(volumeID string, attrs, secrets map[string]string) (Volume, error) {
	var errs field.ErrorList
	attr := field.NewPath("volumeAttributes")
	sec := field.NewPath("secrets")
	v := Volume{ID: volumeID}
	if volumeID == "" {
		errs = append(errs, field.Required(field.NewPath("volumeId"), ""))
	}

	v.Bucket = strings.TrimSpace(attrs[contract.VolumeAttrBucket])
	v.Prefix = attrs[contract.VolumeAttrPath]
	if v.Bucket == "" {
		// csi-s3 static PVs name the bucket (and prefix) in the handle.
		if b, p, _ := strings.Cut(volumeID, "/"); bucketName.MatchString(b) {
			v.Bucket = b
			if v.Prefix == "" {
				v.Prefix = p
			}
		}
	}
	switch {
	case v.Bucket == "":
		errs = append(errs, field.Required(attr.Key(contract.VolumeAttrBucket), "the bucket name"))
	case !bucketName.MatchString(v.Bucket):
		errs = append(errs, field.Invalid(attr.Key(contract.VolumeAttrBucket), v.Bucket,
			"3-63 characters: lowercase letters, digits, '.', '-', '_'"))
	}
	v.Prefix = strings.Trim(v.Prefix, "/")
	if len(v.Prefix) > 900 || strings.Contains(v.Prefix, "..") || strings.ContainsAny(v.Prefix, "\x00\n") {
		errs = append(errs, field.Invalid(attr.Key(contract.VolumeAttrPath), v.Prefix,
			"at most 900 bytes, no '..', NUL or newline"))
	}

	rawURL, urlField := attrs[contract.VolumeAttrURL], attr.Key(contract.VolumeAttrURL)
	shownURL := ShownURL(rawURL)
	if rawURL == "" && secrets[contract.SecretKeyEndpoint] != "" {
		rawURL, urlField = secrets[contract.SecretKeyEndpoint], sec.Key(contract.SecretKeyEndpoint)
		shownURL = "(the Secret's value, not shown)"
	}
	if rawURL == "" {
		errs = append(errs, field.Required(attr.Key(contract.VolumeAttrURL),
			"the S3 endpoint URL (or \"endpoint\" in the Secret)"))
	} else if u, err := s3client.ParseEndpoint(rawURL); err != nil {
		errs = append(errs, field.Invalid(urlField, shownURL, strings.TrimPrefix(err.Error(), "s3client: ")))
	} else {
		v.Endpoint = u.String()
	}
	v.Region = strings.TrimSpace(attrs[contract.VolumeAttrRegion])
	if v.Region == "" {
		v.Region = strings.TrimSpace(secrets[contract.SecretKeyRegion])
	}
	if v.Region != "" && !regionName.MatchString(v.Region) {
		errs = append(errs, field.Invalid(attr.Key(contract.VolumeAttrRegion), v.Region, "lowercase letters, digits and '-'"))
	}

	opts, err := mountopts.Parse(attrs[contract.VolumeAttrOtherOpts])
	if err != nil {
		errs = append(errs, field.Invalid(attr.Key(contract.VolumeAttrOtherOpts), attrs[contract.VolumeAttrOtherOpts],
			strings.TrimPrefix(err.Error(), "mountopts: ")))
	}
	v.Options, v.RawOptions = opts, opts.String()

	v.AuthType = attrs[contract.VolumeAttrAuthType]
	if v.AuthType == "" {
		v.AuthType = contract.AuthTypeSecret
	}
	v.RoleARN = attrs[contract.VolumeAttrRoleARN]
	v.OIDCProviderARN = attrs[contract.VolumeAttrOIDCProviderARN]
	v.STSEndpoint = attrs[contract.VolumeAttrSTSEndpoint]
	v.Audience = attrs[contract.VolumeAttrAudience]
	switch v.AuthType {
	case contract.AuthTypeSecret:
	case contract.AuthTypeRRSA, contract.AuthTypeIRSA:
		if v.RoleARN == "" {
			errs = append(errs, field.Required(attr.Key(contract.VolumeAttrRoleARN), "authType "+v.AuthType+" assumes a role"))
		}
		if v.AuthType == contract.AuthTypeRRSA && v.OIDCProviderARN == "" {
			errs = append(errs, field.Required(attr.Key(contract.VolumeAttrOIDCProviderARN), "authType rrsa needs the OIDC provider ARN"))
		}
		if v.STSEndpoint != "" {
			if _, err := s3client.ParseEndpoint(v.STSEndpoint); err != nil {
				errs = append(errs, field.Invalid(attr.Key(contract.VolumeAttrSTSEndpoint), ShownURL(v.STSEndpoint),
					strings.TrimPrefix(err.Error(), "s3client: ")))
			}
		}
		if v.Audience != "" && !audienceName.MatchString(v.Audience) {
			errs = append(errs, field.Invalid(attr.Key(contract.VolumeAttrAudience), v.Audience,
				"1-253 characters of [A-Za-z0-9._:/@+=~%-]"))
		}
		raw, present := attrs[contract.PodInfoServiceAccountTokens]
		if tok, err := pickToken(v, raw, present); err != nil {
			// The message names audiences only; the value is never quoted.
			errs = append(errs, &field.Error{Type: field.ErrorTypeInvalid, Field: attr.Key(contract.PodInfoServiceAccountTokens).String(),
				BadValue: field.OmitValueType{}, Detail: strings.TrimPrefix(err.Error(), ErrTokens.Error()+": ")})
		} else {
			v.Token = tok
		}
	default:
		errs = append(errs, field.NotSupported(attr.Key(contract.VolumeAttrAuthType), v.AuthType,
			[]string{contract.AuthTypeSecret, contract.AuthTypeRRSA, contract.AuthTypeIRSA}))
	}

	v.Pod = PodInfo{Name: attrs[contract.PodInfoName], Namespace: attrs[contract.PodInfoNamespace],
		UID: attrs[contract.PodInfoUID], ServiceAccount: attrs[contract.PodInfoServiceAccount]}
	if v.Pod.UID != "" && !podUID.MatchString(v.Pod.UID) {
		errs = append(errs, field.Invalid(attr.Key(contract.PodInfoUID), v.Pod.UID, "not a pod UID"))
	}
	v.Ephemeral = attrs[contract.PodInfoEphemeral] == "true"

	if hasKeys(secrets) || v.AuthType == contract.AuthTypeSecret {
		k, err := keys.FromSecret(secrets)
		if err == nil {
			err = k.Validate()
		}
		if err != nil {
			// keys errors name the Secret key, never its value.
			errs = append(errs, &field.Error{Type: field.ErrorTypeInvalid, Field: sec.String(),
				BadValue: field.OmitValueType{}, Detail: strings.TrimPrefix(err.Error(), "keys: ")})
		}
		v.Keys = k
	}
	if len(errs) > 0 {
		return Volume{}, fmt.Errorf("%w: %w", ErrInvalid, errs.ToAggregate())
	}
	return v, nil
}

func hasKeys(secrets map[string]string) bool {
	for _, k := range []string{contract.SecretKeyAkID, contract.SecretKeyAkSecret, contract.SecretKeyAccessKeyID,
		contract.SecretKeySecretAccessKey, contract.SecretKeySTSAccessKeyID, contract.SecretKeySTSSecret} {
		if _, ok := secrets[k]; ok {
			return true
		}
	}
	return false
}

// SecretRef is how the volume's keys are named in Status and Events:
// "namespace/pod" of the consuming pod, since CSI does not tell the node
// plugin the Secret's name.
func (v Volume) SecretRef() string {
	if v.Pod.Namespace == "" {
		return ""
	}
	return v.Pod.Namespace + "/" + v.Pod.Name
}

// ShownURL is raw as an error may quote it: nothing of a URL with an "@"
// (user info is a credential, and where it ends is anyone's guess in a URL
// that does not parse), and bounded.
func ShownURL(raw string) string {
	if strings.Contains(raw, "@") {
		return "(a URL with user info, not shown)"
	}
	if len(raw) > 200 {
		return raw[:200] + "…"
	}
	return raw
}
