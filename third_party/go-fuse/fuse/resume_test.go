// Copyright 2026 the Go-FUSE Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package fuse

import (
	"encoding/binary"
	"encoding/json"
	"reflect"
	"syscall"
	"testing"
)

func testInitState() *InitState {
	s := &InitState{
		Kernel: InitIn{Major: 7, Minor: 45, MaxReadAhead: 128 << 10},
		Reply:  InitOut{Major: 7, Minor: _OUR_MINOR_VERSION, MaxWrite: 128 << 10, MaxPages: 32},
	}
	s.Kernel.Flags = CAP_ASYNC_READ | CAP_BIG_WRITES
	s.Kernel.Flags2 = uint32(CAP_HAS_RESEND >> 32)
	s.Reply.setFlags(CAP_ASYNC_READ | CAP_BIG_WRITES)
	return s
}

func TestInitStateCheck(t *testing.T) {
	if err := testInitState().check("/dev/fd/3"); err != nil {
		t.Fatalf("valid state: %v", err)
	}
	for name, c := range map[string]struct {
		mountPoint string
		change     func(*InitState)
	}{
		"mountpoint":  {"/mnt", func(*InitState) {}},
		"major":       {"/dev/fd/3", func(s *InitState) { s.Kernel.Major = 8 }},
		"reply major": {"/dev/fd/3", func(s *InitState) { s.Reply.Major = 0 }},
		"old minor":   {"/dev/fd/3", func(s *InitState) { s.Kernel.Minor = _MINIMUM_MINOR_VERSION - 1 }},
		"new minor":   {"/dev/fd/3", func(s *InitState) { s.Reply.Minor = _OUR_MINOR_VERSION + 1 }},
		"max write":   {"/dev/fd/3", func(s *InitState) { s.Reply.MaxWrite = 0 }},
	} {
		s := testInitState()
		c.change(s)
		if err := s.check(c.mountPoint); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestInitStateJSON(t *testing.T) {
	s := testInitState()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var got InitState
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, s) {
		t.Errorf("round trip: got %+v, want %+v", got, *s)
	}
	if !got.SupportsResend() || got.NegotiatedFlags()&CAP_BIG_WRITES == 0 {
		t.Errorf("flags lost: %s", b)
	}
}

func TestNotifyResend(t *testing.T) {
	var written [][]byte
	ms := &Server{}
	ms.fileSystem = NewDefaultRawFileSystem()
	ms.opts = &MountOptions{}
	ms.protocolServer.opts = ms.opts
	ms.writev = func(iov [][]byte) (int, syscall.Errno) {
		var all []byte
		for _, b := range iov {
			all = append(all, b...)
		}
		written = append(written, all)
		return len(all), 0
	}
	if st := ms.NotifyResend(); st != ENOSYS || len(written) != 0 {
		t.Fatalf("without CAP_HAS_RESEND: %v, %d writes", st, len(written))
	}
	ms.resume(testInitState())
	if st := ms.NotifyResend(); !st.Ok() {
		t.Fatalf("NotifyResend: %v", st)
	}
	if len(written) != 1 || len(written[0]) != int(sizeOfOutHeader) {
		t.Fatalf("wrote %v, want one bare header", written)
	}
	h := written[0]
	length, code, unique := binary.LittleEndian.Uint32(h), int32(binary.LittleEndian.Uint32(h[4:])), binary.LittleEndian.Uint64(h[8:])
	// The error field of a notification is the notify code of the
	// kernel, FUSE_NOTIFY_RESEND = 7; go-fuse's NOTIFY_* are negated.
	if length != uint32(sizeOfOutHeader) || code != -NOTIFY_RESEND || unique != 0 {
		t.Errorf("header: length %d, code %d, unique %d; want %d, %d, 0", length, code, unique, sizeOfOutHeader, -NOTIFY_RESEND)
	}
}

func TestContextResent(t *testing.T) {
	for _, c := range []struct {
		unique uint64
		want   bool
	}{{0x40, false}, {0x8000000000000040, true}} {
		ctx := &Context{Unique: c.unique}
		if got := ctx.Resent(); got != c.want {
			t.Errorf("Context{Unique: %#x}.Resent() = %v, want %v", c.unique, got, c.want)
		}
	}
}
