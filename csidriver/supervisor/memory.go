package supervisor

import (
	"strconv"

	"rekey.dev/rekey/fuseserver/mountopts"
)

// Every FUSE server of a node runs in the supervisor's container: without
// a budget of its own, one server's burst reaches the container's memory
// limit and the OOM killer takes servers of other pods with it (on cgroup
// v2 with memory.oom.group, the whole container). A budget gives each
// server a GOMEMLIMIT, a read-ahead pool that fits in it and, where the
// node allows, a memory cgroup of its own with the budget as its hard
// limit (cgroup_linux.go), so that an OOM kills that server only and the
// supervisor resumes it. docs/install.md, "Memory", sizes the container.

// Limits of ServerMemory.BudgetMiB.
const (
	DefaultServerMemoryMiB = 256
	MinServerMemoryMiB     = 64
)

// Sizing constants (measured: docs/install.md, "Memory").
const (
	// serverBaseMiB is what a server's Go heap and runtime hold besides
	// its read-ahead buffers under load: FUSE request buffers, the stat
	// cache, S3 client and upload buffers (an idle server holds ~15 MiB).
	serverBaseMiB = 64
	// minSlackMiB is the least memory a budget keeps outside GOMEMLIMIT:
	// the binary's mapped text, kernel stacks and the margin the Go
	// collector needs to act before the kernel does.
	minSlackMiB = 16
	// readAheadChunkMiB is the read-ahead buffer size of s3fs: the pool
	// is a whole number of chunks.
	readAheadChunkMiB = 8
)

// ServerMemory configures the memory budget of each FUSE server.
type ServerMemory struct {
	// BudgetMiB is the memory of one server: GOMEMLIMIT and its read-ahead
	// pool are derived from it (SizeServer) and, with Cgroups, it is the
	// hard limit of the server's own memory cgroup. 0: no budget.
	BudgetMiB int
	// Cgroups puts each server in a memory cgroup of its own below the
	// supervisor's, limited to BudgetMiB; where cgroups cannot be made
	// (read-only cgroupfs, no delegation) servers run without one.
	Cgroups bool
}

// ServerBudget is what one FUSE server runs with.
type ServerBudget struct {
	// LimitBytes is the hard memory limit of its cgroup; 0: none.
	LimitBytes int64
	// GoMemLimitBytes is its GOMEMLIMIT; 0: not set.
	GoMemLimitBytes int64
	// ReadAheadMiB is its read-ahead pool (mount option readahead_mb).
	ReadAheadMiB int
}

// SizeServer returns what a server with a budget of budgetMiB (0: none)
// runs with, for a volume whose mount options ask for readAheadMiB of
// read-ahead (mountopts.DefaultReadAheadMiB unless they set readahead_mb).
//
// The rule: the cgroup limit is the budget; GOMEMLIMIT keeps a tenth of it
// (at least minSlackMiB) for what Go does not count and for the collector
// to act before the kernel; of what GOMEMLIMIT leaves beyond serverBaseMiB,
// half may be read-ahead buffers (the other half is room for garbage
// between collections), in whole 8 MiB chunks. A volume asking for less
// read-ahead keeps its value. A budget below MinServerMemoryMiB counts as
// MinServerMemoryMiB.
func SizeServer(budgetMiB, readAheadMiB int) ServerBudget {
	readAheadMiB = max(readAheadMiB, 0)
	if budgetMiB <= 0 {
		return ServerBudget{ReadAheadMiB: readAheadMiB}
	}
	budgetMiB = max(budgetMiB, MinServerMemoryMiB)
	goLimitMiB := budgetMiB - max(budgetMiB/10, minSlackMiB)
	poolMiB := max((goLimitMiB-serverBaseMiB)/2, 0) / readAheadChunkMiB * readAheadChunkMiB
	return ServerBudget{
		LimitBytes:      int64(budgetMiB) << 20,
		GoMemLimitBytes: int64(goLimitMiB) << 20,
		ReadAheadMiB:    min(readAheadMiB, poolMiB),
	}
}

// serverEnv is the environment of a FUSE server: GOMEMLIMIT under a
// budget, nothing else (the servers' environment never carries secrets).
func (s *Supervisor) serverEnv() []string {
	b := SizeServer(s.cfg.Memory.BudgetMiB, 0)
	if b.GoMemLimitBytes == 0 {
		return []string{}
	}
	return []string{"GOMEMLIMIT=" + strconv.FormatInt(b.GoMemLimitBytes, 10)}
}

// serverOptions returns the volume's mount options with readahead_mb
// lowered to what the budget allows. Options that do not parse are
// returned as they are, for the server to refuse with its own error.
func (s *Supervisor) serverOptions(opts string) string {
	if s.cfg.Memory.BudgetMiB <= 0 {
		return opts
	}
	o, err := mountopts.Parse(opts)
	if err != nil {
		return opts
	}
	b := SizeServer(s.cfg.Memory.BudgetMiB, o.ReadAheadMiB)
	if b.ReadAheadMiB == o.ReadAheadMiB {
		return opts
	}
	s.cfg.Log.V(1).Info("read-ahead lowered to fit the server memory budget", "readAheadMiB", o.ReadAheadMiB,
		"to", b.ReadAheadMiB, "budgetMiB", s.cfg.Memory.BudgetMiB)
	o.ReadAheadMiB = b.ReadAheadMiB
	return o.String()
}
