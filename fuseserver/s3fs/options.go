package s3fs

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
)

// Defaults applied by New to zero fields of Options.
const (
	DefaultUmask              uint32 = 0o022
	DefaultStatCacheTTL              = 60 * time.Second
	DefaultStatCacheSize             = 100000
	DefaultMultipartThreshold int64  = 64 << 20
	DefaultPartSize           int64  = 16 << 20
	DefaultRequestTimeout            = 60 * time.Second
	DefaultReadAheadMemory    int64  = 128 << 20
	DefaultWriteCacheSize     int64  = 256 << 20
	DefaultWriteCacheFiles           = 1024
)

// MinPartSize is the smallest part S3 accepts in a multipart upload (all
// parts but the last).
const MinPartSize int64 = 5 << 20

// UmaskNone masks no permission bits when used as Options.Umask or Options.MountUmask
// (files 0666, directories 0777). A zero umask field means the default
// 022 instead, so that a zero Options is safe.
const UmaskNone uint32 = 0o10000

// maxParts is the S3 limit of parts in one multipart upload.
const maxParts = 10000

// maxKeyLen is the S3 limit on the length of an object key in bytes.
const maxKeyLen = 1024

// ErrInvalidOptions is wrapped by the errors New returns for bad Options.
var ErrInvalidOptions = errors.New("s3fs: invalid options")

// Options configure an FS. Zero fields take the defaults documented on them.
type Options struct {
	// Bucket is the bucket to serve. Required.
	Bucket string
	// Prefix is the folder inside the bucket that becomes the mount root,
	// e.g. "team/data". Leading and trailing slashes are ignored; New
	// normalises a non-empty prefix to end in "/". Empty serves the bucket.
	Prefix string

	// UID and GID own every file and directory.
	UID, GID uint32
	// Umask masks the permission bits of files (0666) and directories
	// (0777) like s3fs' umask option. Zero means DefaultUmask (022: files
	// 0644, directories 0755); use UmaskNone for no masking.
	Umask uint32
	// MountUmask (s3fs mp_umask) masks the permission bits (0777) of the
	// mount root directory. Zero means DefaultUmask; UmaskNone masks none.
	MountUmask uint32
	// ReadOnly makes every mutation fail with EROFS.
	ReadOnly bool
	// Objects keep POSIX metadata (mode, owner, times) in s3fs's
	// x-amz-meta-* names (posixmeta.go); UID, GID and Umask apply to
	// objects without it. ForceUID, ForceGID and ForceUmask make them
	// apply to every entry, as s3fs's uid, gid and umask options do when
	// given.
	ForceUID, ForceGID, ForceUmask bool

	// StatCacheTTL is how long the kernel (entry and attribute timeouts) and
	// the internal stat cache trust what they learnt about a name, including
	// that it does not exist. Zero means DefaultStatCacheTTL; a negative
	// value disables both caches.
	StatCacheTTL time.Duration
	// StatCacheSize bounds the entries of the internal stat cache (LRU).
	// Zero means DefaultStatCacheSize.
	StatCacheSize int

	// StagingDir is the local directory where written files are staged
	// until they are uploaded. Required; created with mode 0700 if missing.
	// Staged data of files that could not be uploaded stays there, with a
	// journal record each (package journal): New uploads what an earlier
	// process left there (journal.go).
	StagingDir string
	// OnRetained, optional, is called with staged data kept on the node
	// instead of uploaded (recovery conflicts, unrecognised staging files,
	// uploads that cannot complete). It must not block for long.
	OnRetained func([]Retained)
	// MultipartThreshold: files larger than this upload with multipart.
	// Zero means DefaultMultipartThreshold.
	MultipartThreshold int64
	// PartSize is the multipart part size (at least MinPartSize; raised
	// automatically for files that would need more than 10000 parts). It is
	// also the chunk size of downloads into staging. Zero means
	// DefaultPartSize.
	PartSize int64
	// RequestTimeout bounds each S3 request (one part of a multipart upload
	// is one request). Zero means DefaultRequestTimeout.
	RequestTimeout time.Duration

	// ReadAheadMemory bounds the buffers of sequential read-ahead, shared
	// by all open files, in bytes (rounded down to 8 MiB chunks; one
	// sequential reader uses up to 4 chunks, 32 MiB). Zero means
	// DefaultReadAheadMemory (128 MiB); negative disables read-ahead.
	ReadAheadMemory int64

	// ReaddirPlusAuto lets the kernel ask for the attributes of listed
	// entries (READDIRPLUS) with the first page of a listing only, and
	// with later pages only if the application stats the entries
	// (READDIRPLUS_AUTO). A plain listing (ls, find -name) then costs no
	// lookup and no inode per entry, but a stat of each entry after the
	// listing costs one LOOKUP round trip each, several times what
	// READDIRPLUS costs per entry. By default every page comes with
	// attributes (docs/performance.md, "Listings").
	ReaddirPlusAuto bool

	// WriteCacheSize bounds, in bytes, the files written through the mount
	// whose staging copy is kept after they were uploaded and closed, so
	// that reading them back (or rewriting them) within StatCacheTTL needs
	// no request (datacache.go). Only files up to MultipartThreshold are
	// kept. Zero means DefaultWriteCacheSize; negative disables it.
	WriteCacheSize int64
	// WriteCacheFiles bounds how many files the write cache keeps: each
	// holds an open descriptor of its staging copy. Zero means
	// DefaultWriteCacheFiles. Expired copies are also swept every
	// StatCacheTTL (at least every second), not only when the key is used.
	WriteCacheFiles int

	// StagingLimit bounds, in bytes, the staging disk of this mount: data
	// written and not uploaded yet, the unacknowledged parts of files
	// being streamed, and the write cache. The write cache is evicted
	// first; a write, truncate or staging download that still does not
	// fit waits for uploads in flight (at most RequestTimeout), then fails
	// with EDQUOT (space.go). Zero: no limit.
	StagingLimit int64
	// StagingReserve and StagingReservePercent keep free space on the
	// filesystem of StagingDir, shared by every mount staging there:
	// staging never grows past max(StagingReserve bytes,
	// StagingReservePercent of the filesystem's size) of free space left;
	// what would fails with ENOSPC, after the same eviction and wait.
	// Zero: no reserve.
	StagingReserve        int64
	StagingReservePercent int

	// Logger receives structured logs; per-operation debug logs are V(1).
	// The zero Logger discards.
	Logger logr.Logger

	// nodeHash replaces the hash behind node numbers (tests: collisions).
	nodeHash nodeHash
}

// normalize validates o and fills in defaults.
func (o Options) normalize() (Options, error) {
	if o.Bucket == "" {
		return o, fmt.Errorf("%w: bucket is required", ErrInvalidOptions)
	}
	if strings.Contains(o.Bucket, "/") {
		return o, fmt.Errorf("%w: bucket %q contains '/'", ErrInvalidOptions, o.Bucket)
	}
	prefix := strings.Trim(o.Prefix, "/")
	if prefix != "" {
		for _, seg := range strings.Split(prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return o, fmt.Errorf("%w: prefix %q has an empty, '.' or '..' segment", ErrInvalidOptions, o.Prefix)
			}
		}
		prefix += "/"
	}
	if len(prefix) >= maxKeyLen {
		return o, fmt.Errorf("%w: prefix is longer than %d bytes", ErrInvalidOptions, maxKeyLen)
	}
	o.Prefix = prefix

	var err error
	if o.Umask, err = normUmask("umask", o.Umask); err != nil {
		return o, err
	}
	if o.MountUmask, err = normUmask("mount umask", o.MountUmask); err != nil {
		return o, err
	}
	switch {
	case o.StatCacheTTL == 0:
		o.StatCacheTTL = DefaultStatCacheTTL
	case o.StatCacheTTL < 0:
		o.StatCacheTTL = 0
	}
	if o.StatCacheSize < 0 {
		return o, fmt.Errorf("%w: stat cache size %d is negative", ErrInvalidOptions, o.StatCacheSize)
	}
	if o.StatCacheSize == 0 {
		o.StatCacheSize = DefaultStatCacheSize
	}
	if o.StagingDir == "" {
		return o, fmt.Errorf("%w: staging dir is required", ErrInvalidOptions)
	}
	if o.MultipartThreshold < 0 {
		return o, fmt.Errorf("%w: multipart threshold %d is negative", ErrInvalidOptions, o.MultipartThreshold)
	}
	if o.MultipartThreshold == 0 {
		o.MultipartThreshold = DefaultMultipartThreshold
	}
	if o.PartSize == 0 {
		o.PartSize = DefaultPartSize
	}
	if o.PartSize < MinPartSize {
		return o, fmt.Errorf("%w: part size %d is below the S3 minimum %d", ErrInvalidOptions, o.PartSize, MinPartSize)
	}
	if o.RequestTimeout < 0 {
		return o, fmt.Errorf("%w: request timeout %s is negative", ErrInvalidOptions, o.RequestTimeout)
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.WriteCacheFiles < 0 {
		return o, fmt.Errorf("%w: write cache files %d is negative", ErrInvalidOptions, o.WriteCacheFiles)
	}
	if o.WriteCacheFiles == 0 {
		o.WriteCacheFiles = DefaultWriteCacheFiles
	}
	switch {
	case o.WriteCacheSize == 0:
		o.WriteCacheSize = DefaultWriteCacheSize
	case o.WriteCacheSize < 0:
		o.WriteCacheSize = 0
	}
	if o.StagingLimit < 0 || o.StagingReserve < 0 {
		return o, fmt.Errorf("%w: staging limit %d or reserve %d is negative", ErrInvalidOptions, o.StagingLimit, o.StagingReserve)
	}
	if o.StagingReservePercent < 0 || o.StagingReservePercent > 90 {
		return o, fmt.Errorf("%w: staging reserve of %d%% is not between 0 and 90", ErrInvalidOptions, o.StagingReservePercent)
	}
	switch {
	case o.ReadAheadMemory == 0:
		o.ReadAheadMemory = DefaultReadAheadMemory
	case o.ReadAheadMemory < 0:
		o.ReadAheadMemory = 0
	}
	if o.Logger.GetSink() == nil {
		o.Logger = logr.Discard()
	}
	if err := os.MkdirAll(o.StagingDir, 0o700); err != nil {
		return o, fmt.Errorf("s3fs: create staging dir: %w", err)
	}
	return o, nil
}

func normUmask(name string, v uint32) (uint32, error) {
	switch {
	case v == 0:
		return DefaultUmask, nil
	case v == UmaskNone:
		return 0, nil
	case v&^0o777 != 0:
		return 0, fmt.Errorf("%w: %s %#o has bits outside 0777", ErrInvalidOptions, name, v)
	}
	return v, nil
}
