// Command loadgen is the e2e test's application: it runs the verified
// read/write load of internal/loadcheck in a directory (the mounted bucket)
// and prints one JSON line of cumulative counts per interval, plus every new
// failure message, until SIGTERM. The e2e test reads these lines with
// `kubectl logs`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"rekey.dev/rekey/internal/loadcheck"
)

// Report is one line of output.
type Report struct {
	Time       time.Time `json:"time"`
	Ops        int64     `json:"ops"`
	Failed     int64     `json:"failed"`
	Mismatched int64     `json:"mismatched"`
	Bytes      int64     `json:"bytes"`
	Errors     []string  `json:"errors,omitempty"` // failure messages new since the last line
}

func main() {
	dir := flag.String("dir", "/data", "directory to work in")
	workers := flag.Int("workers", 2, "concurrent workers")
	size := flag.Int("max-file-size", 64<<10, "largest file written")
	every := flag.Duration("interval", time.Second, "report interval")
	flag.Parse()

	host, _ := os.Hostname()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var st loadcheck.Stats
	done := make(chan struct{})
	go func() {
		defer close(done)
		loadcheck.Load{Dir: *dir + "/" + host, Workers: *workers, MaxFileSize: *size}.Run(ctx, &st)
	}()
	enc := json.NewEncoder(os.Stdout)
	seen := 0
	report := func() {
		errs := st.Errors()
		r := Report{Time: time.Now().UTC(), Ops: st.Ops.Load(), Failed: st.Failed.Load(),
			Mismatched: st.Mismatched.Load(), Bytes: st.Bytes.Load(), Errors: errs[seen:]}
		seen = len(errs)
		if err := enc.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	t := time.NewTicker(*every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			report()
		case <-done:
			report()
			return
		}
	}
}
