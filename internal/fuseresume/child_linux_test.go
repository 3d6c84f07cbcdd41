package fuseresume

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// childEnv selects the server mode of the test binary (TestMain).
const childEnv = "REKEY_FUSERESUME_CHILD"

// The descriptors a server child gets (exec.Cmd.ExtraFiles).
const (
	childFUSEFd    = 3 // /dev/fuse
	childEventsFd  = 4 // event pipe, JSON lines to the test
	childControlFd = 5 // control pipe: one startMsg from the test
)

// startMsg tells a child what to serve. The child reads it only once
// the test sends it, so it can be started while the mount still has a
// server (see startChild).
type startMsg struct {
	Dir    string          // backing directory
	Resume *fuse.InitState // nil for the first server
	Epoch  uint32          // fs.Options.FileHandleEpoch
	Gate   string          // see tree.gate
}

// event is a JSON line a child writes to the test.
type event struct {
	Event   string          `json:"event"`
	State   *fuse.InitState `json:"state,omitempty"`   // ready
	Status  int32           `json:"status,omitempty"`  // resend: the fuse.Status of NotifyResend
	Ino     uint64          `json:"ino,omitempty"`     // blocked, reopen, lookupnode, forget, resent
	Name    string          `json:"name,omitempty"`    // path below the backing directory
	Flags   uint32          `json:"flags,omitempty"`   // reopen
	Nlookup uint64          `json:"nlookup,omitempty"` // forget
	Unique  uint64          `json:"unique,omitempty"`  // resent
	Errno   int             `json:"errno,omitempty"`
	Error   string          `json:"error,omitempty"`
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(serveChild())
	}
	os.Exit(m.Run())
}

// reportingFS passes every request on to the node file system and
// reports what the test looks for: FORGETs (the node ID and the count
// the kernel forgets, which may be more than this server counted) and
// READs the kernel sent again after NOTIFY_RESEND.
type reportingFS struct {
	fuse.RawFileSystem
	report func(event)
}

// uniqueResend is FUSE_UNIQUE_RESEND, the bit the kernel sets in the
// unique of a request it sends again.
const uniqueResend = 1 << 63

func (r *reportingFS) Forget(nodeID, nlookup uint64) {
	r.report(event{Event: "forget", Ino: nodeID, Nlookup: nlookup})
	r.RawFileSystem.Forget(nodeID, nlookup)
}

func (r *reportingFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if in.Unique&uniqueResend != 0 {
		r.report(event{Event: "resent", Ino: in.NodeId, Unique: in.Unique})
	}
	return r.RawFileSystem.Read(cancel, in, buf)
}

// serveChild is the server process: it serves the FUSE descriptor it
// inherited until the connection ends or it is killed.
func serveChild() int {
	events := os.NewFile(childEventsFd, "events")
	var mu sync.Mutex
	enc := json.NewEncoder(events)
	report := func(ev event) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(ev)
	}
	fail := func(err error) int {
		report(event{Event: "error", Error: err.Error()})
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	var msg startMsg
	if err := json.NewDecoder(os.NewFile(childControlFd, "control")).Decode(&msg); err != nil {
		return fail(fmt.Errorf("read start message: %w", err))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(msg.Dir, &st); err != nil {
		return fail(fmt.Errorf("stat %s: %w", msg.Dir, err))
	}
	t := &tree{dir: msg.Dir, report: report, gate: msg.Gate}
	root := &node{t: t}
	raw := gofs.NewNodeFS(root, &gofs.Options{
		ExternalNodeID:  true,
		RootStableAttr:  &gofs.StableAttr{Ino: st.Ino},
		FileHandleEpoch: msg.Epoch,
	})
	srv, err := fuse.NewServer(&reportingFS{RawFileSystem: raw, report: report},
		fmt.Sprintf("/dev/fd/%d", childFUSEFd), &fuse.MountOptions{Resume: msg.Resume})
	if err != nil {
		return fail(fmt.Errorf("serve: %w", err))
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return fail(fmt.Errorf("wait mount: %w", err))
	}
	report(event{Event: "ready", State: srv.InitState()})
	if msg.Resume != nil {
		report(event{Event: "resend", Status: int32(srv.NotifyResend())})
	}
	srv.Wait()
	return 0
}
