package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Summary is what the demo measured.
type Summary struct {
	Rotations          int
	Kills, Resumed     int // FUSE servers killed under load, and resumed
	ResumeP50          time.Duration
	ResumeMax          time.Duration // from SIGKILL to the first answered read
	SwapFailures       int
	ViaPath            map[string]int // rotations by path: republish, sidecar
	Ops                int64
	Failed             int64
	Mismatched         int64
	Bytes              int64
	Duration           time.Duration
	P50, P99           time.Duration
	Publish, Unpublish time.Duration
	Errors             []string
	resumeTimes        []time.Duration
}

// fail records a failure outside the load and the swaps (a broken check).
func (s *Summary) fail(format string, a ...any) {
	s.Failed++
	s.Errors = append(s.Errors, fmt.Sprintf(format, a...))
}

func (s Summary) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nrotations\tswap p50\tswap p99\tresumed\toperations\tfailed\tmismatched bytes\tverified MiB\tduration")
	fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d\t%d\t%d\t%d\t%.1f\t%s\n", s.Rotations, ms(s.P50), ms(s.P99), s.Resumed, s.Kills, s.Ops, s.Failed,
		s.Mismatched, float64(s.Bytes)/(1<<20), s.Duration.Round(100*time.Millisecond))
	_ = tw.Flush()
	for _, e := range s.Errors {
		fmt.Fprintln(w, "  error:", e)
	}
	fmt.Fprintf(w, "demo: NodePublishVolume %s, NodeUnpublishVolume %s; %d rotations via republish, %d via sidecar\n",
		ms(s.Publish), ms(s.Unpublish), s.ViaPath[pathRepublish], s.ViaPath[pathSidecar])
	fmt.Fprintf(w, "demo: FUSE server killed %d times under load, resumed %d times; kill to first answered read: p50 %s, max %s\n",
		s.Kills, s.Resumed, ms(s.ResumeP50), ms(s.ResumeMax))
	fmt.Fprintf(w, "demo: %d rotations, %d resumed, %d operations, %d failed, swap p99 %s ms\n",
		s.Rotations, s.Resumed, s.Ops, s.failures(), msNum(s.P99))
}

// failures counts failed operations and checks, and refused or failed swaps.
func (s Summary) failures() int64 { return s.Failed + int64(s.SwapFailures) }

func ms(d time.Duration) string { return msNum(d) + " ms" }

func msNum(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }
