package s3fs

import (
	"context"
	"encoding/base64"
	"net/url"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
)

// Extended attributes are kept as s3fs keeps them (with its use_xattr
// option): all in one user metadata value, x-amz-meta-xattr, a
// URL-encoded {"name":"base64 of value",...}. Changing one changes the
// object's metadata like chmod does (attrs.go): in the staged state, or
// with a server-side copy; a directory's go to its marker.

const metaXattr = "xattr"

// maxXattrValue bounds one value; user metadata is at most 2 KiB on S3.
const maxXattrValue = 1024

// parseXattrs reads the value of x-amz-meta-xattr. Pairs that do not parse
// are skipped, as s3fs skips them.
func parseXattrs(v string) map[string][]byte {
	out := map[string][]byte{}
	if v == "" {
		return out
	}
	dec, err := url.PathUnescape(v)
	if err != nil {
		dec = v
	}
	start, end := strings.IndexByte(dec, '{'), strings.LastIndexByte(dec, '}')
	if start < 0 || end <= start {
		return out
	}
	for pair := range strings.SplitSeq(dec[start+1:end], ",") {
		i := strings.LastIndexByte(pair, ':')
		if i < 0 {
			continue
		}
		name, val := strings.TrimSpace(pair[:i]), strings.TrimSpace(pair[i+1:])
		if len(name) < 2 || name[0] != '"' || name[len(name)-1] != '"' || len(val) < 2 || val[0] != '"' || val[len(val)-1] != '"' {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(val[1 : len(val)-1])
		if err != nil {
			continue
		}
		out[name[1:len(name)-1]] = b
	}
	return out
}

// buildXattrs writes xattrs as s3fs does ("" for none).
func buildXattrs(xattrs map[string][]byte) string {
	if len(xattrs) == 0 {
		return ""
	}
	names := make([]string, 0, len(xattrs))
	for n := range xattrs {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + n + `":"` + base64.StdEncoding.EncodeToString(xattrs[n]) + `"`)
	}
	b.WriteByte('}')
	return urlEncodePath(b.String())
}

// urlEncodePath percent-encodes all but unreserved characters and "/", as
// s3fs's urlEncodePath does.
func urlEncodePath(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.~/", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// xattrTarget is a node whose extended attributes live in object metadata.
type xattrTarget struct {
	f     *FS
	key   string // without trailing slash
	isDir bool
}

func (x xattrTarget) entry(ctx context.Context) (statEntry, syscall.Errno) {
	ent, errno := x.f.stat(ctx, x.key)
	if errno != 0 {
		return ent, errno
	}
	if (ent.kind == kindDir) != x.isDir {
		return ent, syscall.ENOENT
	}
	return ent, 0
}

func (x xattrTarget) get(ctx context.Context, name string, dest []byte) (uint32, syscall.Errno) {
	if name == "security.capability" {
		// The kernel asks before every write; files here carry none.
		return 0, syscall.ENODATA
	}
	ent, errno := x.entry(ctx)
	if errno != 0 {
		return 0, errno
	}
	v, ok := parseXattrs(ent.meta[metaXattr])[name]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (x xattrTarget) list(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	ent, errno := x.entry(ctx)
	if errno != 0 {
		return 0, errno
	}
	xattrs := parseXattrs(ent.meta[metaXattr])
	names := make([]string, 0, len(xattrs))
	for n := range xattrs {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf []byte
	for _, n := range names {
		buf = append(append(buf, n...), 0)
	}
	if len(dest) < len(buf) {
		return uint32(len(buf)), syscall.ERANGE
	}
	return uint32(copy(dest, buf)), 0
}

// set changes the attribute name to value, or removes it if value is nil.
func (x xattrTarget) set(ctx context.Context, name string, value []byte, flags uint32) syscall.Errno {
	f := x.f
	if f.opts.ReadOnly {
		return syscall.EROFS
	}
	if name == "" || strings.ContainsAny(name, `",:{}`) {
		return syscall.EINVAL
	}
	if len(value) > maxXattrValue {
		return syscall.E2BIG
	}
	ent, errno := x.entry(ctx)
	if errno != 0 {
		return errno
	}
	if ent.meta == nil && !x.isDir {
		if ent, errno = x.fresh(ctx); errno != 0 {
			return errno
		}
	}
	cur := parseXattrs(ent.meta[metaXattr])
	_, exists := cur[name]
	switch {
	case value == nil && !exists:
		return syscall.ENODATA
	case value != nil && flags&xattrCreate != 0 && exists:
		return syscall.EEXIST
	case value != nil && flags&xattrReplace != 0 && !exists:
		return syscall.ENODATA
	}
	change := func(m map[string]string) map[string]string {
		xs := parseXattrs(m[metaXattr])
		if value == nil {
			delete(xs, name)
		} else {
			xs[name] = value
		}
		out := withPosix(m, posixAttrs{ctime: time.Now(), hasCtime: true})
		if v := buildXattrs(xs); v != "" {
			out[metaXattr] = v
		} else {
			delete(out, metaXattr)
		}
		return out
	}
	if x.isDir {
		return f.changeDirMeta(ctx, x.key, ent, change)
	}
	return f.changeMeta(ctx, x.key, ent, change, nil)
}

// fresh looks the object up with HEAD, for its metadata.
func (x xattrTarget) fresh(ctx context.Context) (statEntry, syscall.Errno) {
	ent, err := x.f.headFile(ctx, x.key)
	if err != nil {
		return ent, Errno(err)
	}
	return ent, 0
}

// setxattr(2) flags.
const (
	xattrCreate  = 1
	xattrReplace = 2
)

var (
	_ fs.NodeGetxattrer    = (*fileNode)(nil)
	_ fs.NodeSetxattrer    = (*fileNode)(nil)
	_ fs.NodeListxattrer   = (*fileNode)(nil)
	_ fs.NodeRemovexattrer = (*fileNode)(nil)
	_ fs.NodeGetxattrer    = (*dirNode)(nil)
	_ fs.NodeSetxattrer    = (*dirNode)(nil)
	_ fs.NodeListxattrer   = (*dirNode)(nil)
	_ fs.NodeRemovexattrer = (*dirNode)(nil)
)

func (n *fileNode) xattrs() (xattrTarget, syscall.Errno) {
	key, ok := n.key()
	if !ok {
		return xattrTarget{}, syscall.ENOENT
	}
	return xattrTarget{f: n.fsys, key: key}, 0
}

// Getxattr reads an extended attribute (xattrTarget).
func (n *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	x, errno := n.xattrs()
	if errno != 0 {
		return 0, errno
	}
	return x.get(ctx, attr, dest)
}

// Listxattr lists the names of the extended attributes (xattrTarget).
func (n *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	x, errno := n.xattrs()
	if errno != 0 {
		return 0, errno
	}
	return x.list(ctx, dest)
}

// Setxattr sets an extended attribute (xattrTarget).
func (n *fileNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	x, errno := n.xattrs()
	if errno != 0 {
		return errno
	}
	if data == nil {
		data = []byte{}
	}
	return x.set(ctx, attr, data, flags)
}

// Removexattr removes an extended attribute (xattrTarget).
func (n *fileNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	x, errno := n.xattrs()
	if errno != 0 {
		return errno
	}
	return x.set(ctx, attr, nil, 0)
}

func (d *dirNode) xattrs() (xattrTarget, syscall.Errno) {
	dk, ok := d.dirKey()
	if !ok {
		return xattrTarget{}, syscall.ENOENT
	}
	if d.IsRoot() {
		return xattrTarget{}, syscall.ENOTSUP // the mount root has no object
	}
	return xattrTarget{f: d.fsys, key: strings.TrimSuffix(dk, "/"), isDir: true}, 0
}

// Getxattr reads an extended attribute (xattrTarget).
func (d *dirNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if d.IsRoot() {
		return 0, syscall.ENODATA
	}
	x, errno := d.xattrs()
	if errno != 0 {
		return 0, errno
	}
	return x.get(ctx, attr, dest)
}

// Listxattr lists the names of the extended attributes (xattrTarget).
func (d *dirNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if d.IsRoot() {
		return 0, 0
	}
	x, errno := d.xattrs()
	if errno != 0 {
		return 0, errno
	}
	return x.list(ctx, dest)
}

// Setxattr sets an extended attribute (xattrTarget).
func (d *dirNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	x, errno := d.xattrs()
	if errno != 0 {
		return errno
	}
	if data == nil {
		data = []byte{}
	}
	return x.set(ctx, attr, data, flags)
}

// Removexattr removes an extended attribute (xattrTarget).
func (d *dirNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	x, errno := d.xattrs()
	if errno != 0 {
		return errno
	}
	return x.set(ctx, attr, nil, 0)
}
