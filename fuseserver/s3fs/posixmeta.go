package s3fs

import (
	"maps"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// POSIX metadata lives in an object's user metadata under the names s3fs
// gives it, so that a bucket shared with s3fs (or ossfs, whose OSS
// endpoints present x-oss-meta-* as x-amz-meta-* through the S3 API) agrees
// on modes, owners and times:
//
//	x-amz-meta-mode   st_mode in decimal, file type bits included (33188 = 0100644)
//	x-amz-meta-uid    owner, decimal
//	x-amz-meta-gid    group, decimal
//	x-amz-meta-mtime  seconds since the epoch, "sec" or "sec.nnnnnnnnn"
//	x-amz-meta-ctime  the same, for the status change time
//	x-amz-meta-atime  the same, for the access time
//
// Objects without them (written by other tools) get the mount's defaults:
// the object's LastModified, Options.UID/GID and the umask modes. The AWS
// SDK hands user metadata over with the names lower-cased and without the
// x-amz-meta- prefix; these are the keys below.
const (
	metaMode  = "mode"
	metaUID   = "uid"
	metaGID   = "gid"
	metaMtime = "mtime"
	metaCtime = "ctime"
	metaAtime = "atime"
	// metaPermissions is s3sync's name for the mode, which s3fs reads too.
	metaPermissions = "permissions"
)

// posixAttrs is the POSIX metadata of an object; a field not set in the
// object is zero with its has flag false.
type posixAttrs struct {
	mode                uint32 // st_mode, type bits included when the writer set them
	uid, gid            uint32
	mtime, ctime, atime time.Time
	hasMode             bool
	hasUID, hasGID      bool
	hasMtime, hasCtime  bool
	hasAtime            bool
}

// parsePosix reads the POSIX metadata out of user metadata (keys as the
// SDK gives them). Values that do not parse are ignored, as s3fs does.
func parsePosix(md map[string]string) posixAttrs {
	var a posixAttrs
	if v, ok := md[metaMode]; ok {
		a.mode, a.hasMode = parseUint32(v)
	} else if v, ok := md[metaPermissions]; ok {
		a.mode, a.hasMode = parseUint32(v)
	}
	a.uid, a.hasUID = parseUint32(md[metaUID])
	a.gid, a.hasGID = parseUint32(md[metaGID])
	a.mtime, a.hasMtime = parseMetaTime(md[metaMtime])
	a.ctime, a.hasCtime = parseMetaTime(md[metaCtime])
	a.atime, a.hasAtime = parseMetaTime(md[metaAtime])
	return a
}

func parseUint32(v string) (uint32, bool) {
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}

// parseMetaTime parses "sec" or "sec.fraction" (s3fs writes nine digits;
// rclone writes a float).
func parseMetaTime(v string) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, false
	}
	secStr, fracStr, hasFrac := strings.Cut(v, ".")
	sec, err := strconv.ParseInt(secStr, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, false
	}
	var nsec int64
	if hasFrac && fracStr != "" {
		if len(fracStr) > 9 {
			fracStr = fracStr[:9]
		}
		f, err := strconv.ParseUint(fracStr, 10, 32)
		if err != nil {
			return time.Time{}, false
		}
		nsec = int64(f)
		for i := len(fracStr); i < 9; i++ {
			nsec *= 10
		}
	}
	return time.Unix(sec, nsec), true
}

// formatMetaTime writes t as s3fs does: "sec", or "sec.nnnnnnnnn" when it
// has a fraction.
func formatMetaTime(t time.Time) string {
	if t.Nanosecond() == 0 {
		return strconv.FormatInt(t.Unix(), 10)
	}
	return strconv.FormatInt(t.Unix(), 10) + "." + leftPad9(t.Nanosecond())
}

func leftPad9(n int) string {
	s := strconv.Itoa(n)
	return strings.Repeat("0", 9-len(s)) + s
}

// withPosix returns a copy of md (user metadata, may be nil) with a's set
// fields written in s3fs's names.
func withPosix(md map[string]string, a posixAttrs) map[string]string {
	out := make(map[string]string, len(md)+6)
	maps.Copy(out, md)
	if a.hasMode {
		out[metaMode] = strconv.FormatUint(uint64(a.mode), 10)
		delete(out, metaPermissions)
	}
	if a.hasUID {
		out[metaUID] = strconv.FormatUint(uint64(a.uid), 10)
	}
	if a.hasGID {
		out[metaGID] = strconv.FormatUint(uint64(a.gid), 10)
	}
	if a.hasMtime {
		out[metaMtime] = formatMetaTime(a.mtime)
	}
	if a.hasCtime {
		out[metaCtime] = formatMetaTime(a.ctime)
	}
	if a.hasAtime {
		out[metaAtime] = formatMetaTime(a.atime)
	}
	return out
}

// attrOverrides are the mount options that override what objects say:
// s3fs's uid, gid and umask options, when given.
type attrOverrides struct {
	uid, gid       *uint32
	umask          *uint32
	defUID, defGID uint32 // owner of objects without uid/gid metadata
	fileMode       uint32 // permission bits of files without a mode
	dirMode        uint32 // and of directories
}

// effective computes the mode (type bits included), owner and times a
// file or directory shows, from its POSIX metadata, the mount options and
// the object's LastModified (lastMod; zero for a directory without a
// marker). typ is the file type the object's kind gives (S_IFREG or
// S_IFDIR); a mode whose type bits say symlink, FIFO, socket or device
// keeps them.
func (o attrOverrides) effective(a posixAttrs, typ uint32, lastMod time.Time) (mode, uid, gid uint32, mtime, ctime, atime time.Time) {
	perm := o.fileMode
	if typ == syscall.S_IFDIR {
		perm = o.dirMode
	}
	mode = typ | perm
	if a.hasMode {
		mode = a.mode &^ syscall.S_IFMT & 0o7777
		switch t := a.mode & syscall.S_IFMT; {
		case t == 0:
			mode |= typ
		case typ == syscall.S_IFDIR || t == syscall.S_IFDIR:
			mode |= typ // the key decides between file and directory
		default:
			mode |= t
		}
	}
	if o.umask != nil {
		mode &^= *o.umask & 0o777
	}
	uid, gid = o.defUID, o.defGID
	if a.hasUID {
		uid = a.uid
	}
	if a.hasGID {
		gid = a.gid
	}
	if o.uid != nil {
		uid = *o.uid
	}
	if o.gid != nil {
		gid = *o.gid
	}
	mtime = lastMod
	if a.hasMtime {
		mtime = a.mtime
	}
	ctime, atime = mtime, mtime
	if a.hasCtime {
		ctime = a.ctime
	}
	if a.hasAtime {
		atime = a.atime
	}
	return mode, uid, gid, mtime, ctime, atime
}
