// Package mountopts parses FUSE mount options written the way ossfs and
// s3fs users write them — `-o uid=1000 -o allow_other` or
// `uid=1000,allow_other` — against an allowlist. An unknown option, a
// malformed value or an option given twice is an error that names it; the
// text never reaches a shell.
package mountopts

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults applied by Parse.
const (
	DefaultUmask         = 0o022
	DefaultStatCacheTTL  = 60 * time.Second
	DefaultStatCacheSize = 100000
	DefaultPartSizeMiB   = 16
	DefaultThresholdMiB  = 64
	DefaultReadAheadMiB  = 128
	MaxThresholdMiB      = 5 << 10
	MaxReadAheadMiB      = 4 << 10
	DefaultWriteCacheMiB = 256
	MaxWriteCacheMiB     = 64 << 10
	DefaultStagingMiB    = 1024
	MinStagingMiB        = 64
	MaxStagingMiB        = 1 << 20
	MinPartSizeMiB       = 5
	MaxPartSizeMiB       = 5 << 10
	maxOptionsLen        = 4096
)

// ErrUnknown is wrapped by errors about options outside the allowlist.
var ErrUnknown = errors.New("mountopts: unknown option")

// Options are the parsed mount options.
type Options struct {
	UID, GID uint32
	Umask    uint32 // permission bits removed from files and directories
	// UIDSet, GIDSet and UmaskSet say the option was given: as in s3fs, it
	// then applies to every entry, not only to objects without POSIX
	// metadata of their own.
	UIDSet, GIDSet, UmaskSet bool
	MountUmask               uint32 // permission bits removed from the mount root (mp_umask)
	AllowOther               bool
	ReadOnly                 bool
	PathStyle                bool          // use_path_request_style
	StatCacheTTL             time.Duration // stat_cache_expire (seconds); 0 disables caching
	StatCacheSize            int           // max_stat_cache_size
	PartSizeMiB              int           // multipart_size
	ThresholdMiB             int           // multipart_threshold: larger files upload in parts (streamed while written)
	ReadAheadMiB             int           // readahead_mb: memory for sequential read-ahead, all files together; 0 disables
	// ReaddirPlusAuto (readdirplus=auto) lets the kernel ask for entry
	// attributes with a listing only when the application stats what it
	// lists; the default (readdirplus=always) asks with every page.
	ReaddirPlusAuto bool
	// WriteCacheMiB (write_cache_mb) bounds the staging disk that keeps
	// files written through the mount after their upload, for reading them
	// back within stat_cache_expire without a request; 0 disables.
	WriteCacheMiB int
	// StagingMiB (staging_mb) bounds the staging disk of the mount: data
	// written and not uploaded yet plus the write cache. A write past it
	// fails with EDQUOT once the write cache is evicted and the uploads in
	// flight are done. There is no "unlimited": the node's administrator
	// caps it (rekey-csi --max-staging-mb).
	StagingMiB int
}

// Default returns the options in effect when none are given.
func Default() Options {
	return Options{
		Umask:         DefaultUmask,
		MountUmask:    DefaultUmask,
		StatCacheTTL:  DefaultStatCacheTTL,
		StatCacheSize: DefaultStatCacheSize,
		PartSizeMiB:   DefaultPartSizeMiB,
		ThresholdMiB:  DefaultThresholdMiB,
		ReadAheadMiB:  DefaultReadAheadMiB,
		WriteCacheMiB: DefaultWriteCacheMiB,
		StagingMiB:    DefaultStagingMiB,
	}
}

// option is one allowlist entry: it parses a value into o.
type option struct {
	flag  bool // takes no value
	apply func(o *Options, v string) error
	help  string
}

var allowlist = map[string]option{
	"uid":   {apply: func(o *Options, v string) error { o.UIDSet = true; return parseID(&o.UID, v) }, help: "owner UID of all files"},
	"gid":   {apply: func(o *Options, v string) error { o.GIDSet = true; return parseID(&o.GID, v) }, help: "owner GID of all files"},
	"umask": {apply: func(o *Options, v string) error { o.UmaskSet = true; return parseMask(&o.Umask, v) }, help: "octal permission bits removed from files and directories"},
	"mp_umask": {apply: func(o *Options, v string) error { return parseMask(&o.MountUmask, v) },
		help: "octal permission bits removed from the mount point"},
	"allow_other":            {flag: true, apply: func(o *Options, _ string) error { o.AllowOther = true; return nil }, help: "let users other than the mounter access the mount"},
	"ro":                     {flag: true, apply: func(o *Options, _ string) error { o.ReadOnly = true; return nil }, help: "read-only mount"},
	"use_path_request_style": {flag: true, apply: func(o *Options, _ string) error { o.PathStyle = true; return nil }, help: "path-style bucket addressing"},
	"stat_cache_expire": {apply: func(o *Options, v string) error {
		n, err := parseInt(v, 0, 86400)
		o.StatCacheTTL = time.Duration(n) * time.Second
		return err
	}, help: "seconds metadata stays cached (0 disables)"},
	"max_stat_cache_size": {apply: func(o *Options, v string) error {
		n, err := parseInt(v, 0, 10_000_000)
		o.StatCacheSize = n
		return err
	}, help: "entries kept in the metadata cache"},
	"multipart_size": {apply: func(o *Options, v string) error {
		n, err := parseInt(v, MinPartSizeMiB, MaxPartSizeMiB)
		o.PartSizeMiB = n
		return err
	}, help: "multipart part size in MiB"},
	"multipart_threshold": {apply: func(o *Options, v string) error {
		n, err := parseInt(v, MinPartSizeMiB, MaxThresholdMiB)
		o.ThresholdMiB = n
		return err
	}, help: "files larger than this many MiB upload with multipart, streamed while written"},
	"readahead_mb": {apply: func(o *Options, v string) error {
		n, err := parseInt(v, 0, MaxReadAheadMiB)
		o.ReadAheadMiB = n
		return err
	}, help: "MiB of memory for sequential read-ahead, shared by all open files (0 disables)"},
	"write_cache_mb": {apply: func(o *Options, v string) error {
		n, err := parseInt(v, 0, MaxWriteCacheMiB)
		o.WriteCacheMiB = n
		return err
	}, help: "MiB of staging disk keeping files written through the mount for reading back within stat_cache_expire (0 disables)"},
	"staging_mb": {apply: func(o *Options, v string) error {
		n, err := parseInt(v, MinStagingMiB, MaxStagingMiB)
		o.StagingMiB = n
		return err
	}, help: "MiB of staging disk the mount may use: data not uploaded yet and the write cache; writes past it fail with EDQUOT"},
	"readdirplus": {apply: func(o *Options, v string) error {
		switch v {
		case "auto":
			o.ReaddirPlusAuto = true
		case "always":
			o.ReaddirPlusAuto = false
		default:
			return fmt.Errorf("%q is neither auto nor always", printable(v))
		}
		return nil
	}, help: "always (attributes with every listing page) or auto (only when the application stats the entries it lists)"},
}

// Names lists the allowed options, for error messages and docs.
func Names() []string {
	names := make([]string, 0, len(allowlist))
	for n := range allowlist {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Parse reads an option string such as `-o uid=1000 -o allow_other,ro` or
// `uid=1000,allow_other` and returns Default() with the options applied.
func Parse(s string) (Options, error) {
	o := Default()
	if len(s) > maxOptionsLen {
		return o, fmt.Errorf("mountopts: options are %d bytes, at most %d allowed", len(s), maxOptionsLen)
	}
	seen := map[string]bool{}
	fields := strings.Fields(s)
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		switch {
		case f == "-o":
			if i+1 == len(fields) {
				return o, errors.New("mountopts: -o at the end has no option list")
			}
			i++
			f = fields[i]
		case strings.HasPrefix(f, "-o"):
			f = f[2:]
		case strings.HasPrefix(f, "-"):
			return o, fmt.Errorf("mountopts: %q is not allowed, only -o option lists are", f)
		}
		for _, kv := range strings.Split(f, ",") {
			if kv == "" {
				continue
			}
			name, value, hasValue := strings.Cut(kv, "=")
			opt, ok := allowlist[name]
			if !ok {
				return o, fmt.Errorf("%w %q (allowed: %s)", ErrUnknown, printable(name), strings.Join(Names(), ", "))
			}
			if seen[name] {
				return o, fmt.Errorf("mountopts: option %q given twice", name)
			}
			seen[name] = true
			if opt.flag && hasValue {
				return o, fmt.Errorf("mountopts: option %q takes no value", name)
			}
			if !opt.flag && (!hasValue || value == "") {
				return o, fmt.Errorf("mountopts: option %q needs a value", name)
			}
			if err := opt.apply(&o, value); err != nil {
				return o, fmt.Errorf("mountopts: option %q: %w", name, err)
			}
		}
	}
	if o.StagingMiB < o.PartSizeMiB {
		return o, fmt.Errorf("mountopts: staging_mb=%d is below multipart_size=%d: a streamed upload stages at least one part", o.StagingMiB, o.PartSizeMiB)
	}
	return o, nil
}

// String renders o as an option list Parse reads back, listing only what
// differs from Default.
func (o Options) String() string {
	d := Default()
	var out []string
	if o.UID != d.UID || o.UIDSet {
		out = append(out, "uid="+strconv.FormatUint(uint64(o.UID), 10))
	}
	if o.GID != d.GID || o.GIDSet {
		out = append(out, "gid="+strconv.FormatUint(uint64(o.GID), 10))
	}
	if o.Umask != d.Umask || o.UmaskSet {
		out = append(out, fmt.Sprintf("umask=%04o", o.Umask))
	}
	if o.MountUmask != d.MountUmask {
		out = append(out, fmt.Sprintf("mp_umask=%04o", o.MountUmask))
	}
	if o.AllowOther {
		out = append(out, "allow_other")
	}
	if o.ReadOnly {
		out = append(out, "ro")
	}
	if o.PathStyle {
		out = append(out, "use_path_request_style")
	}
	if o.StatCacheTTL != d.StatCacheTTL {
		out = append(out, "stat_cache_expire="+strconv.Itoa(int(o.StatCacheTTL/time.Second)))
	}
	if o.StatCacheSize != d.StatCacheSize {
		out = append(out, "max_stat_cache_size="+strconv.Itoa(o.StatCacheSize))
	}
	if o.PartSizeMiB != d.PartSizeMiB {
		out = append(out, "multipart_size="+strconv.Itoa(o.PartSizeMiB))
	}
	if o.ThresholdMiB != d.ThresholdMiB {
		out = append(out, "multipart_threshold="+strconv.Itoa(o.ThresholdMiB))
	}
	if o.ReadAheadMiB != d.ReadAheadMiB {
		out = append(out, "readahead_mb="+strconv.Itoa(o.ReadAheadMiB))
	}
	if o.ReaddirPlusAuto {
		out = append(out, "readdirplus=auto")
	}
	if o.WriteCacheMiB != d.WriteCacheMiB {
		out = append(out, "write_cache_mb="+strconv.Itoa(o.WriteCacheMiB))
	}
	if o.StagingMiB != d.StagingMiB {
		out = append(out, "staging_mb="+strconv.Itoa(o.StagingMiB))
	}
	return strings.Join(out, ",")
}

func parseID(dst *uint32, v string) error {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == math.MaxUint32 {
		return fmt.Errorf("%q is not a valid ID", printable(v))
	}
	*dst = uint32(n)
	return nil
}

func parseMask(dst *uint32, v string) error {
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n > 0o777 {
		return fmt.Errorf("%q is not an octal mask between 000 and 777", printable(v))
	}
	*dst = uint32(n)
	return nil
}

func parseInt(v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%q is not a number between %d and %d", printable(v), lo, hi)
	}
	return n, nil
}

// printable cuts and quotes user text for an error message.
func printable(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	q := strconv.QuoteToASCII(s)
	return q[1 : len(q)-1]
}
