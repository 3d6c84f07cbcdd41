// Package logging builds the logr.Logger every rekey binary writes with:
// structured key/value pairs on stderr, text or JSON, with a verbosity level.
package logging

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/go-logr/logr"
)

// New returns a logger writing to w. format is "text" or "json"; verbosity
// enables logger.V(n) calls for n up to it.
func New(w io.Writer, format string, verbosity int) (logr.Logger, error) {
	opts := &slog.HandlerOptions{Level: slog.Level(-verbosity)}
	var h slog.Handler
	switch format {
	case "", "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return logr.Discard(), fmt.Errorf("logging: format %q unknown, want text or json", format)
	}
	return logr.FromSlogHandler(h), nil
}
