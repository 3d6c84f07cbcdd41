package s3fs

import (
	"syscall"
	"testing"
	"time"
)

func TestParseMetaTime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"1000000000", time.Unix(1_000_000_000, 0), true},
		{"1000000000.123456789", time.Unix(1_000_000_000, 123456789), true},
		{"1000000000.5", time.Unix(1_000_000_000, 500_000_000), true}, // rclone's float
		{"1000000000.1234567891", time.Unix(1_000_000_000, 123456789), true},
		{" 12 ", time.Unix(12, 0), true},
		{"", time.Time{}, false},
		{"-5", time.Time{}, false},
		{"abc", time.Time{}, false},
		{"1.x", time.Time{}, false},
	} {
		got, ok := parseMetaTime(tc.in)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("parseMetaTime(%q) = %v %v, want %v %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	for _, tt := range []time.Time{time.Unix(1_000_000_000, 0), time.Unix(1_000_000_000, 1), time.Unix(5, 999_999_999)} {
		if got, ok := parseMetaTime(formatMetaTime(tt)); !ok || !got.Equal(tt) {
			t.Errorf("round trip of %v through %q: %v", tt, formatMetaTime(tt), got)
		}
	}
	if got := formatMetaTime(time.Unix(7, 0)); got != "7" {
		t.Errorf("whole seconds written as %q, want \"7\" (s3fs)", got)
	}
}

func TestEffectiveAttrs(t *testing.T) {
	t.Parallel()
	last := time.Unix(100, 0)
	u9, mask := uint32(9), uint32(0o077)
	def := attrOverrides{defUID: 1, defGID: 2, fileMode: 0o644, dirMode: 0o755}
	for _, tc := range []struct {
		name     string
		o        attrOverrides
		meta     map[string]string
		typ      uint32
		mode     uint32
		uid, gid uint32
		mtime    time.Time
	}{
		{"no metadata: defaults", def, nil, syscall.S_IFREG, syscall.S_IFREG | 0o644, 1, 2, last},
		{"s3fs file", def, map[string]string{"mode": "33152", "uid": "5", "gid": "6", "mtime": "50"},
			syscall.S_IFREG, syscall.S_IFREG | 0o600, 5, 6, time.Unix(50, 0)},
		{"mode without type bits", def, map[string]string{"mode": "384"}, syscall.S_IFREG, syscall.S_IFREG | 0o600, 1, 2, last},
		{"symlink", def, map[string]string{"mode": "41471"}, syscall.S_IFREG, syscall.S_IFLNK | 0o777, 1, 2, last},
		{"fifo", def, map[string]string{"mode": "4516"}, syscall.S_IFREG, syscall.S_IFIFO | 0o644, 1, 2, last},
		{"directory marker", def, map[string]string{"mode": "16877"}, syscall.S_IFDIR, syscall.S_IFDIR | 0o755, 1, 2, last},
		{"s3sync permissions", def, map[string]string{"permissions": "33188"}, syscall.S_IFREG, syscall.S_IFREG | 0o644, 1, 2, last},
		{"bad values ignored", def, map[string]string{"mode": "x", "uid": "-1", "mtime": "y"}, syscall.S_IFREG, syscall.S_IFREG | 0o644, 1, 2, last},
		{"forced uid and umask", attrOverrides{defUID: 1, defGID: 2, fileMode: 0o644, dirMode: 0o755, uid: &u9, umask: &mask},
			map[string]string{"mode": "33279", "uid": "5", "gid": "6"}, syscall.S_IFREG, syscall.S_IFREG | 0o700, 9, 6, last},
	} {
		mode, uid, gid, mtime, _, _ := tc.o.effective(parsePosix(tc.meta), tc.typ, last)
		if mode != tc.mode || uid != tc.uid || gid != tc.gid || !mtime.Equal(tc.mtime) {
			t.Errorf("%s: mode %#o uid %d gid %d mtime %v, want %#o %d %d %v", tc.name, mode, uid, gid, mtime, tc.mode, tc.uid, tc.gid, tc.mtime)
		}
	}
}

func TestWithPosix(t *testing.T) {
	t.Parallel()
	md := withPosix(map[string]string{"permissions": "1", "other": "kept"},
		posixAttrs{mode: 0o100600, hasMode: true, uid: 3, hasUID: true, mtime: time.Unix(9, 5), hasMtime: true})
	want := map[string]string{"mode": "33152", "uid": "3", "mtime": "9.000000005", "other": "kept"}
	if len(md) != len(want) {
		t.Fatalf("got %v, want %v", md, want)
	}
	for k, v := range want {
		if md[k] != v {
			t.Fatalf("got %v, want %v", md, want)
		}
	}
}
