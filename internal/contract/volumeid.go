package contract

import (
	"errors"
	"fmt"
	"strings"
)

// Volume handles of dynamically provisioned volumes. CreateVolume writes
// one, DeleteVolume (possibly of a newer rekey-controller) reads it back, so
// it carries a version and everything DeleteVolume needs: DeleteVolume
// receives nothing but the handle and the provisioner Secret.
//
// Version 1 is "rk1|<mode>|<style>|<bucket>|<prefix>|<region>|<endpoint>":
// mode is VolumeModePrefix (a prefix in a shared bucket) or
// VolumeModeBucket (a bucket rekey created for the volume); style is
// VolumeStylePath for path-style addressing, else empty; prefix has no
// leading or trailing '/' and is empty only in bucket mode; region may be
// empty. No field holds '|'. Handles of static PVs are never of this form.
const (
	// VolumeIDVersion1 starts every version-1 handle.
	VolumeIDVersion1 = "rk1"
	// VolumeModePrefix: a prefix of a shared bucket.
	VolumeModePrefix = "p"
	// VolumeModeBucket: a bucket created for the volume.
	VolumeModeBucket = "b"
	// VolumeStylePath: buckets are addressed as endpoint/bucket.
	VolumeStylePath = "path"
)

// ErrVolumeID is wrapped by every error of ParseVolumeID and String.
var ErrVolumeID = errors.New("contract: not a rekey provisioned volume handle")

// ProvisionedVolume is what a provisioned volume's handle encodes.
type ProvisionedVolume struct {
	// Mode is VolumeModePrefix or VolumeModeBucket.
	Mode string
	// PathStyle addresses the bucket as endpoint/bucket.
	PathStyle bool
	// Bucket and Prefix locate the data.
	Bucket, Prefix string
	// Region may be empty; Endpoint is the S3 URL.
	Region, Endpoint string
}

// String encodes v as a version-1 handle.
func (v ProvisionedVolume) String() (string, error) {
	if err := v.validate(); err != nil {
		return "", err
	}
	style := ""
	if v.PathStyle {
		style = VolumeStylePath
	}
	return strings.Join([]string{VolumeIDVersion1, v.Mode, style, v.Bucket, v.Prefix, v.Region, v.Endpoint}, "|"), nil
}

func (v ProvisionedVolume) validate() error {
	for name, f := range map[string]string{"bucket": v.Bucket, "prefix": v.Prefix, "region": v.Region, "endpoint": v.Endpoint} {
		if strings.Contains(f, "|") {
			return fmt.Errorf("%w: the %s contains '|'", ErrVolumeID, name)
		}
	}
	switch {
	case v.Mode != VolumeModePrefix && v.Mode != VolumeModeBucket:
		return fmt.Errorf("%w: unknown mode %q", ErrVolumeID, v.Mode)
	case v.Bucket == "" || v.Endpoint == "":
		return fmt.Errorf("%w: bucket and endpoint are required", ErrVolumeID)
	case v.Mode == VolumeModePrefix && v.Prefix == "":
		return fmt.Errorf("%w: a prefix volume needs a prefix", ErrVolumeID)
	case strings.HasPrefix(v.Prefix, "/") || strings.HasSuffix(v.Prefix, "/"):
		return fmt.Errorf("%w: the prefix starts or ends with '/'", ErrVolumeID)
	}
	return nil
}

// ParseVolumeID decodes a handle written by ProvisionedVolume.String.
// Handles of other versions or forms are refused with ErrVolumeID.
func ParseVolumeID(id string) (ProvisionedVolume, error) {
	f := strings.Split(id, "|")
	if len(f) == 0 || f[0] != VolumeIDVersion1 {
		return ProvisionedVolume{}, fmt.Errorf("%w: no %q version tag", ErrVolumeID, VolumeIDVersion1)
	}
	if len(f) != 7 {
		return ProvisionedVolume{}, fmt.Errorf("%w: %d fields, want 7", ErrVolumeID, len(f))
	}
	if f[2] != "" && f[2] != VolumeStylePath {
		return ProvisionedVolume{}, fmt.Errorf("%w: unknown addressing style %q", ErrVolumeID, f[2])
	}
	v := ProvisionedVolume{Mode: f[1], PathStyle: f[2] == VolumeStylePath, Bucket: f[3], Prefix: f[4], Region: f[5], Endpoint: f[6]}
	if err := v.validate(); err != nil {
		return ProvisionedVolume{}, err
	}
	return v, nil
}

// BucketMarkerKey is the object rekey-controller writes into every bucket
// it creates for a volume, right after creating it. DeleteVolume deletes a
// bucket only while this object is in it: a bucket without it was not
// created by rekey and is kept. Its content is BucketMarker as JSON.
const BucketMarkerKey = ".rekey-volume"

// BucketMarkerVersion1 is the Version of the markers this rekey writes.
const BucketMarkerVersion1 = 1

// BucketMarker is the content of BucketMarkerKey.
type BucketMarker struct {
	// Version is BucketMarkerVersion1.
	Version int `json:"version"`
	// Volume is the CreateVolume name (the PV name).
	Volume string `json:"volume"`
}
