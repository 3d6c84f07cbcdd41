// Package storageclass parses the parameters of a StorageClass whose
// provisioner is s3.rekey.dev, as CreateVolume receives them, into a typed
// Class, and expands the templates (${pvc.namespace}, ${pvc.name},
// ${pv.name}, ${pvc.annotations['key']}) of pathPattern and of the
// standard csi.storage.k8s.io secret parameters. Parameter names of csi-s3
// (yandex k8s-csi-s3) and of Alibaba ACK's OSS driver are accepted where
// they mean the same thing; docs/provisioning.md has the mapping.
package storageclass

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
)

// StorageClass parameters.
const (
	ParamURL         = "url"
	ParamRegion      = "region"
	ParamBucket      = "bucket"
	ParamPathPattern = "pathPattern"
	ParamOtherOpts   = "otherOpts"
	// ParamOptions is csi-s3's name for mount options; rekey reads it as
	// otherOpts.
	ParamOptions = "options"
	// ParamMounter is csi-s3's choice of FUSE program: ignored (rekey has one).
	ParamMounter = "mounter"
	// ParamVolumeAs and ParamPath are ACK OSS's: volumeAs "subpath" gives
	// each volume the prefix <path>/<pv name>.
	ParamVolumeAs = "volumeAs"
	ParamPath     = "path"
)

// Metadata the provisioner adds to CreateVolume's parameters, named as
// external-provisioner's --extra-create-metadata names them.
const (
	MetaPVCName      = "csi.storage.k8s.io/pvc/name"
	MetaPVCNamespace = "csi.storage.k8s.io/pvc/namespace"
	MetaPVName       = "csi.storage.k8s.io/pv/name"
)

// Standard secret parameters of a StorageClass (external-provisioner's
// names). The provisioner resolves them; they never reach CreateVolume.
const (
	ProvisionerSecretName      = "csi.storage.k8s.io/provisioner-secret-name"       //nolint:gosec // a parameter name, not a credential
	ProvisionerSecretNamespace = "csi.storage.k8s.io/provisioner-secret-namespace"  //nolint:gosec // a parameter name, not a credential
	NodePublishSecretName      = "csi.storage.k8s.io/node-publish-secret-name"      //nolint:gosec // a parameter name, not a credential
	NodePublishSecretNamespace = "csi.storage.k8s.io/node-publish-secret-namespace" //nolint:gosec // a parameter name, not a credential
)

// DefaultPathPattern gives every volume of a shared bucket the prefix of
// its PV name, which is unique in the cluster.
const DefaultPathPattern = "${pv.name}"

const (
	reservedPrefix           = "csi.storage.k8s.io/"
	maxPrefixLen             = 512
	volumeAsSubpath          = "subpath"
	ackPathPatternForSubpath = "${pv.name}"
)

// passThrough are parameters copied unchanged into the volume attributes;
// the node plugin validates them as it does for static PVs.
var passThrough = []string{contract.VolumeAttrAuthType, contract.VolumeAttrRoleARN, contract.VolumeAttrOIDCProviderARN,
	contract.VolumeAttrSTSEndpoint, contract.VolumeAttrAudience}

// ignored are parameters of other drivers that rekey accepts and ignores.
var ignored = map[string]string{
	ParamMounter: "rekey has one FUSE server",
	"sigVersion": "rekey always signs with Signature V4",
	"encrypted":  "server-side encryption is the bucket's setting",
	"capacity":   "a bucket has no capacity",
}

// ErrInvalid is wrapped by every error of Parse and Expand.
var ErrInvalid = errors.New("storageclass: invalid parameters")

// Class is one parsed StorageClass.
type Class struct {
	// Endpoint is the normalised S3 URL; empty when the provisioner Secret
	// names it (csi-s3's "endpoint" key).
	Endpoint string
	// Region may be empty.
	Region string
	// Bucket is the shared bucket (prefix mode); empty: a bucket per volume.
	Bucket string
	// PathPattern is the prefix template (prefix mode).
	PathPattern string
	// Options are the parsed otherOpts; RawOptions their canonical text.
	Options    mountopts.Options
	RawOptions string
	// Attributes are copied into every volume's attributes (authType, roleArn...).
	Attributes map[string]string
	// Warnings name parameters that were accepted but ignored.
	Warnings []string
}

// BucketMode reports whether each volume gets a bucket of its own.
func (c Class) BucketMode() bool { return c.Bucket == "" }

var (
	bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$`)
	regionName = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)
)

// Parse validates the parameters of CreateVolume. Every problem is
// reported, each naming its parameter.
func Parse(params map[string]string) (Class, error) {
	var errs field.ErrorList
	p := field.NewPath("parameters")
	c := Class{Attributes: map[string]string{}}
	known := map[string]bool{ParamURL: true, ParamRegion: true, ParamBucket: true, ParamPathPattern: true,
		ParamOtherOpts: true, ParamOptions: true, ParamVolumeAs: true, ParamPath: true}
	for _, k := range passThrough {
		known[k] = true
		if v := params[k]; v != "" {
			c.Attributes[k] = v
		}
	}
	var unknown []string
	for k := range params {
		switch {
		case known[k] || strings.HasPrefix(k, reservedPrefix):
		case ignored[k] != "":
			c.Warnings = append(c.Warnings, fmt.Sprintf("parameter %s is ignored: %s", k, ignored[k]))
		default:
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	sort.Strings(c.Warnings)
	for _, k := range unknown {
		errs = append(errs, field.NotSupported(p.Key(k), params[k], supported()))
	}

	if raw := params[ParamURL]; raw != "" {
		if u, err := s3client.ParseEndpoint(raw); err != nil {
			errs = append(errs, field.Invalid(p.Key(ParamURL), raw, strings.TrimPrefix(err.Error(), "s3client: ")))
		} else {
			c.Endpoint = u.String()
		}
	}
	c.Region = params[ParamRegion]
	if c.Region != "" && !regionName.MatchString(c.Region) {
		errs = append(errs, field.Invalid(p.Key(ParamRegion), c.Region, "1-64 lowercase letters, digits and '-'"))
	}
	c.Bucket = strings.TrimSpace(params[ParamBucket])
	if c.Bucket != "" && !bucketName.MatchString(c.Bucket) {
		errs = append(errs, field.Invalid(p.Key(ParamBucket), c.Bucket, "3-63 characters: lowercase letters, digits, '.', '-', '_'"))
	}

	c.PathPattern = params[ParamPathPattern]
	switch va := params[ParamVolumeAs]; va {
	case "":
		if params[ParamPath] != "" {
			errs = append(errs, field.Invalid(p.Key(ParamPath), params[ParamPath], "path is ACK's base path for volumeAs: subpath; use pathPattern"))
		}
	case volumeAsSubpath:
		if c.PathPattern != "" {
			errs = append(errs, field.Invalid(p.Key(ParamVolumeAs), va, "volumeAs: subpath and pathPattern exclude each other"))
		}
		c.PathPattern = ackPathPatternForSubpath
		if base := strings.Trim(params[ParamPath], "/"); base != "" {
			c.PathPattern = base + "/" + ackPathPatternForSubpath
		}
	default:
		errs = append(errs, field.NotSupported(p.Key(ParamVolumeAs), va, []string{volumeAsSubpath}))
	}
	if c.PathPattern == "" {
		c.PathPattern = DefaultPathPattern
	}
	if c.Bucket == "" && (params[ParamPathPattern] != "" || params[ParamVolumeAs] != "") {
		errs = append(errs, field.Required(p.Key(ParamBucket), "pathPattern and volumeAs place volumes in a shared bucket: name it"))
	}
	if err := checkTemplate(c.PathPattern, pathVars); err != nil {
		errs = append(errs, field.Invalid(p.Key(ParamPathPattern), c.PathPattern, err.Error()))
	}

	rawOpts, optsKey := params[ParamOtherOpts], ParamOtherOpts
	if rawOpts == "" && params[ParamOptions] != "" {
		rawOpts, optsKey = params[ParamOptions], ParamOptions
	} else if rawOpts != "" && params[ParamOptions] != "" {
		errs = append(errs, field.Invalid(p.Key(ParamOptions), params[ParamOptions], "set otherOpts or options, not both"))
	}
	opts, err := mountopts.Parse(rawOpts)
	if err != nil {
		errs = append(errs, field.Invalid(p.Key(optsKey), rawOpts, strings.TrimPrefix(err.Error(), "mountopts: ")))
	}
	c.Options, c.RawOptions = opts, opts.String()
	if len(errs) > 0 {
		return Class{}, fmt.Errorf("%w: %w", ErrInvalid, errs.ToAggregate())
	}
	return c, nil
}

func supported() []string {
	s := []string{ParamURL, ParamRegion, ParamBucket, ParamPathPattern, ParamOtherOpts, ParamOptions, ParamVolumeAs, ParamPath}
	s = append(s, passThrough...)
	for k := range ignored {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// Prefix resolves the class's pathPattern for one volume. meta holds the
// CreateVolume parameters (the provisioner's pvc/pv metadata); name is the
// CreateVolume name, used for ${pv.name} when the metadata lacks it.
func (c Class) Prefix(name string, meta map[string]string) (string, error) {
	vars := Vars{PVName: meta[MetaPVName], PVCName: meta[MetaPVCName], PVCNamespace: meta[MetaPVCNamespace]}
	if vars.PVName == "" {
		vars.PVName = name
	}
	s, err := Expand(c.PathPattern, vars, pathVars)
	if err != nil {
		return "", fmt.Errorf("%w: pathPattern: %w", ErrInvalid, err)
	}
	s = strings.Trim(s, "/")
	switch {
	case s == "":
		return "", fmt.Errorf("%w: pathPattern %q gives an empty prefix", ErrInvalid, c.PathPattern)
	case len(s) > maxPrefixLen:
		return "", fmt.Errorf("%w: pathPattern gives a prefix of %d bytes, at most %d", ErrInvalid, len(s), maxPrefixLen)
	case strings.ContainsAny(s, "|\x00\n\\") || strings.Contains(s, "//"):
		return "", fmt.Errorf("%w: pathPattern gives prefix %q: no '|', '\\', NUL, newline or empty segment", ErrInvalid, s)
	}
	for _, seg := range strings.Split(s, "/") {
		if seg == "." || seg == ".." {
			return "", fmt.Errorf("%w: pathPattern gives prefix %q: no '.' or '..' segment", ErrInvalid, s)
		}
	}
	return s, nil
}

// BucketName derives the S3 bucket name of a bucket-mode volume from its
// name (the PV name, "pvc-<uid>"): lowercase; characters S3 does not allow
// become '-'; at most 63 characters; starting and ending with a letter or
// digit.
func BucketName(name string) (string, error) {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := b.String()
	for strings.Contains(s, "..") {
		s = strings.ReplaceAll(s, "..", ".")
	}
	if len(s) > 63 {
		s = s[:63]
	}
	s = strings.Trim(s, "-.")
	if !bucketName.MatchString(s) || ipLike.MatchString(s) || strings.HasPrefix(s, "xn--") {
		return "", fmt.Errorf("%w: volume name %q does not give a valid bucket name", ErrInvalid, name)
	}
	return s, nil
}

var ipLike = regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$`)
