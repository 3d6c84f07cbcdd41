//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/go-logr/logr"
	"github.com/opencontainers/runtime-spec/specs-go"
	mountutils "k8s.io/mount-utils"
)

// Cgroups below the base cgroup (the supervisor's own on v1, its
// container's on v2).
const (
	// serverCgroupPrefix + mount ID: one FUSE server, limited to its
	// budget. It outlives the server's deaths (a resumed server goes back
	// in) and is removed with the mount's state.
	serverCgroupPrefix = "rekey-fuse-"
	// supervisorLeaf (v2 only) holds the supervisor, the container's init
	// and whatever else ran in the container's cgroup: cgroup v2 lets a
	// cgroup hand the memory controller to its children only while it
	// holds no process itself.
	supervisorLeaf = "rekey-supervisor"
)

// memoryCgroups makes a memory cgroup for each FUSE server below a base
// cgroup, with the server's budget as its hard limit (v1
// memory.limit_in_bytes; v2 memory.max, with memory.oom.group so that an
// OOM kills that server and only it).
type memoryCgroups struct {
	dir string // the base cgroup's directory
	// rel is the base's path below the mount (v2: below mountpoint; v1:
	// below the memory hierarchy's root), starting with "/".
	rel string
	// v2: the unified hierarchy's mount point and the base's manager.
	mountpoint string
	v2         *cgroup2.Manager
	// v1: the memory hierarchy.
	v1 cgroup1.Hierarchy
}

// ownCgroup is where a process's memory cgroup is: the cgroupfs mount that
// shows it and its path below that mount's root.
type ownCgroup struct {
	v2         bool
	mountpoint string
	rel        string // relative to mountpoint, "." for the mount's root
	readOnly   bool
}

func (o ownCgroup) dir() string { return filepath.Join(o.mountpoint, o.rel) }

// findOwnCgroup reads a process's memory cgroup from its /proc/<pid>/cgroup
// and /proc/<pid>/mountinfo: the v1 memory hierarchy if it has one, else
// the v2 unified hierarchy. The path in the cgroup file is taken relative
// to the mount's root, so that it is right both in a cgroup namespace and
// in a container that shows the host's paths (v1 without cgroupns).
func findOwnCgroup(cgroupFile, mountinfoFile string) (ownCgroup, error) {
	v1, unified, err := cgroups.ParseCgroupFileUnified(cgroupFile)
	if err != nil {
		return ownCgroup{}, fmt.Errorf("supervisor: cgroups: %w", err)
	}
	mounts, err := mountutils.ParseMountInfo(mountinfoFile)
	if err != nil {
		return ownCgroup{}, fmt.Errorf("supervisor: cgroups: %w", err)
	}
	path, v2 := v1["memory"], false
	if path == "" {
		if unified == "" {
			return ownCgroup{}, errors.New("supervisor: cgroups: this process is in no memory cgroup (neither a v1 memory hierarchy nor cgroup v2)")
		}
		path, v2 = unified, true
	}
	for _, m := range mounts {
		isMemory := m.FsType == "cgroup" && slices.Contains(m.SuperOptions, "memory")
		if v2 && m.FsType != "cgroup2" || !v2 && !isMemory {
			continue
		}
		rel, err := filepath.Rel(m.Root, path)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			continue // a mount of another part of the hierarchy
		}
		return ownCgroup{v2: v2, mountpoint: m.MountPoint, rel: rel, readOnly: slices.Contains(m.MountOptions, "ro")}, nil
	}
	kind := "the cgroup v1 memory hierarchy"
	if v2 {
		kind = "cgroup v2"
	}
	return ownCgroup{}, fmt.Errorf("supervisor: cgroups: no mount of %s shows this process's cgroup %s", kind, path)
}

// openMemoryCgroups prepares the per-server cgroups below this process's
// memory cgroup (on v2: below its parent, if this process is already in
// supervisorLeaf, as a restarted supervisor is).
func openMemoryCgroups() (*memoryCgroups, error) {
	own, err := findOwnCgroup("/proc/self/cgroup", "/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	if own.v2 && filepath.Base(own.rel) == supervisorLeaf {
		own.rel = filepath.Dir(own.rel)
	}
	return newMemoryCgroups(own)
}

// newMemoryCgroups prepares base for per-server cgroups. On v2 it moves
// every process of base into base/supervisorLeaf and enables the memory
// controller for base's children.
func newMemoryCgroups(base ownCgroup) (*memoryCgroups, error) {
	dir := base.dir()
	if base.readOnly {
		return nil, fmt.Errorf("supervisor: cgroups: %s is mounted read-only (an unprivileged container)", base.mountpoint)
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
		return nil, fmt.Errorf("supervisor: cgroups: %w", err)
	}
	if !base.v2 {
		if filepath.Base(base.mountpoint) != string(cgroup1.Memory) {
			return nil, fmt.Errorf("supervisor: cgroups: the memory hierarchy is mounted at %s, not at a directory named memory", base.mountpoint)
		}
		if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
			return nil, fmt.Errorf("supervisor: cgroups: %s is not writable: %w", dir, err)
		}
		root := filepath.Dir(base.mountpoint)
		mem := func() ([]cgroup1.Subsystem, error) { return []cgroup1.Subsystem{cgroup1.NewMemory(root)}, nil }
		return &memoryCgroups{dir: dir, v1: mem, rel: filepath.Join("/", base.rel)}, nil
	}
	rel := filepath.Join("/", base.rel)
	m, err := cgroup2.Load(rel, cgroup2.WithMountpoint(base.mountpoint))
	if err != nil {
		return nil, fmt.Errorf("supervisor: cgroups: %w", err)
	}
	ctrls, err := m.Controllers()
	if err != nil {
		return nil, fmt.Errorf("supervisor: cgroups: %w", err)
	}
	if !slices.Contains(ctrls, "memory") {
		return nil, fmt.Errorf("supervisor: cgroups: the memory controller is not delegated to %s (cgroup.controllers: %q)", dir, strings.Join(ctrls, " "))
	}
	c := &memoryCgroups{dir: dir, rel: rel, mountpoint: base.mountpoint, v2: m}
	if err := c.enableV2(); err != nil {
		return nil, err
	}
	return c, nil
}

// enableV2 moves the processes of the base cgroup into supervisorLeaf and
// enables the memory controller in the base's cgroup.subtree_control. A
// process that appears in between (a supervisor started by init) makes
// the kernel refuse (EBUSY): it tries again.
func (c *memoryCgroups) enableV2() error {
	leaf, err := c.v2.NewChild(supervisorLeaf, nil)
	if err != nil {
		return fmt.Errorf("supervisor: cgroups: %w", err)
	}
	for attempt := 0; ; attempt++ {
		procs, err := c.v2.Procs(false)
		if err != nil {
			return fmt.Errorf("supervisor: cgroups: %w", err)
		}
		for _, pid := range procs {
			if err := leaf.AddProc(pid); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("supervisor: cgroups: move process %d into %s: %w", pid, supervisorLeaf, err)
			}
		}
		// Enabling it for the leaf's ancestors is enabling it in the base
		// (and, where the base is not the mount's root, re-enabling it
		// above, where it already is).
		err = leaf.ToggleControllers([]string{"memory"}, cgroup2.Enable)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || attempt == 2 {
			return fmt.Errorf("supervisor: cgroups: enable the memory controller: %w", err)
		}
	}
}

func serverCgroupName(id string) string { return serverCgroupPrefix + id }

// confine puts process pid in the cgroup of mount id (made if needed),
// with limit bytes as its hard memory limit.
func (c *memoryCgroups) confine(id string, pid int, limit int64) error {
	name := serverCgroupName(id)
	if c.v2 != nil {
		oomGroup := true
		res := &cgroup2.Resources{Memory: &cgroup2.Memory{Max: &limit, OOMGroup: &oomGroup}}
		m, err := c.v2.NewChild(name, res)
		if errors.Is(err, syscall.EBUSY) {
			// A process got into the base cgroup since: move it out.
			if err = c.enableV2(); err == nil {
				m, err = c.v2.NewChild(name, res)
			}
		}
		if err != nil {
			return fmt.Errorf("supervisor: cgroups: make %s: %w", name, err)
		}
		if err := m.AddProc(uint64(pid)); err != nil {
			return fmt.Errorf("supervisor: cgroups: move process %d into %s: %w", pid, name, err)
		}
		return nil
	}
	cg, err := cgroup1.New(cgroup1.StaticPath(filepath.Join(c.rel, name)),
		&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}, cgroup1.WithHierarchy(c.v1))
	if err != nil {
		return fmt.Errorf("supervisor: cgroups: make %s: %w", name, err)
	}
	if err := cg.AddProc(uint64(pid)); err != nil {
		return fmt.Errorf("supervisor: cgroups: move process %d into %s: %w", pid, name, err)
	}
	return nil
}

// release removes the cgroup of mount id, once its processes are gone
// (an exited server may take a moment to leave it). A cgroup that does
// not exist is not an error.
func (c *memoryCgroups) release(id string) error {
	name := serverCgroupName(id)
	if _, err := os.Stat(filepath.Join(c.dir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		if attempt > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		if c.v2 != nil {
			var m *cgroup2.Manager
			if m, err = cgroup2.Load(filepath.Join(c.rel, name), cgroup2.WithMountpoint(c.mountpoint)); err == nil {
				err = m.Delete()
			}
		} else {
			var cg cgroup1.Cgroup
			if cg, err = cgroup1.Load(cgroup1.StaticPath(filepath.Join(c.rel, name)), cgroup1.WithHierarchy(c.v1)); err == nil {
				err = cg.Delete()
			}
			if errors.Is(err, cgroup1.ErrCgroupDeleted) {
				err = nil
			}
		}
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("supervisor: cgroups: remove %s: %w", name, err)
}

// sweep removes the server cgroups left empty (by a supervisor that died
// before it removed them); those with a running server stay.
func (c *memoryCgroups) sweep() {
	entries, _ := os.ReadDir(c.dir)
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), serverCgroupPrefix) {
			_ = os.Remove(filepath.Join(c.dir, e.Name())) // rmdir: EBUSY while it has processes
		}
	}
}

// The supervisor's per-server cgroups, set up once per process (on v2
// this moves the process itself).
var serverCgroups struct {
	once sync.Once
	c    *memoryCgroups
}

// confine puts the FUSE server pid of mount id in its memory cgroup, if
// the Supervisor has a budget with Cgroups. The first call sets the
// cgroups up, and logs once whether servers get them; a server that
// cannot be confined runs unconfined (its GOMEMLIMIT still applies).
func (s *Supervisor) confine(id string, pid int) {
	mem := s.cfg.Memory
	if mem.BudgetMiB <= 0 || !mem.Cgroups {
		return
	}
	c := s.memoryCgroups()
	if c == nil {
		return
	}
	limit := SizeServer(mem.BudgetMiB, 0).LimitBytes
	if err := c.confine(id, pid, limit); err != nil && !errors.Is(err, syscall.ESRCH) { // ESRCH: it exited already
		s.cfg.Log.Error(err, "FUSE server runs without its own memory limit", "mountId", id, "pid", pid)
	}
}

// releaseServer removes the memory cgroup of mount id, whose server
// exited for good.
func (s *Supervisor) releaseServer(id string) {
	if s.cfg.Memory.BudgetMiB <= 0 || !s.cfg.Memory.Cgroups {
		return
	}
	if c := s.memoryCgroups(); c != nil {
		if err := c.release(id); err != nil {
			s.cfg.Log.Error(err, "memory cgroup of a stopped FUSE server left behind", "mountId", id)
		}
	}
}

func (s *Supervisor) memoryCgroups() *memoryCgroups {
	serverCgroups.once.Do(func() {
		log := s.cfg.Log
		c, err := openMemoryCgroups()
		if err != nil {
			logUnconfined(log, err)
			return
		}
		c.sweep()
		serverCgroups.c = c
		log.Info("each FUSE server runs in a memory cgroup of its own, limited to its budget", "cgroup", c.dir,
			"cgroupVersion", c.version(), "budgetMiB", s.cfg.Memory.BudgetMiB)
	})
	return serverCgroups.c
}

func logUnconfined(log logr.Logger, err error) {
	log.Info("FUSE servers run WITHOUT a memory cgroup of their own: their GOMEMLIMIT applies, but one server's burst "+
		"can reach the container's memory limit and OOM-kill the servers of other pods (on cgroup v2 with "+
		"memory.oom.group, the whole container)", "why", err.Error())
}

func (c *memoryCgroups) version() int {
	if c.v2 != nil {
		return 2
	}
	return 1
}
