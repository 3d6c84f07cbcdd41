package sidecar

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/keys"
)

// Run is the sidecar: it watches every source of cfg, delivers keys to the
// FUSE servers in cfg.SocketDir, and serves health and metrics if asked.
// It returns nil once ctx is cancelled (SIGTERM) and everything stopped,
// or an error if it cannot start.
func Run(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("sidecar: invalid config: %w", err)
	}
	log := cfg.Log
	m := newMetrics()
	h := newHub(&cfg, m)
	for _, src := range cfg.Sources {
		h.addVolume(cfg.volumeID(src), src)
	}

	// Everything that can fail at start, before any goroutine runs.
	assumers := map[string]Assumer{}
	for _, src := range cfg.Sources {
		if authType(src) == contract.AuthTypeSecret {
			continue
		}
		a, err := cfg.NewAssumer(src, cfg.STSSessionName, cfg.STSDuration)
		if err != nil {
			return err
		}
		assumers[cfg.volumeID(src)] = a
	}
	var lisHealth, lisMetrics net.Listener
	var err error
	if cfg.HealthAddr != "" {
		if lisHealth, err = listen(cfg.HealthAddr); err != nil {
			return err
		}
	}
	if cfg.MetricsAddr != "" && cfg.MetricsAddr != cfg.HealthAddr {
		if lisMetrics, err = listen(cfg.MetricsAddr); err != nil {
			if lisHealth != nil {
				_ = lisHealth.Close()
			}
			return err
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	h.mu.Lock()
	h.ctx = gctx
	h.mu.Unlock()
	if lisHealth != nil {
		g.Go(func() error { return serveHTTP(gctx, lisHealth, h.handler(true, cfg.MetricsAddr == cfg.HealthAddr)) })
	}
	if lisMetrics != nil {
		g.Go(func() error { return serveHTTP(gctx, lisMetrics, h.handler(false, true)) })
	}

	for _, src := range cfg.Sources {
		id := cfg.volumeID(src)
		slog := log.WithValues("volumeId", id, "source", authType(src))
		publish := func(k keys.Keys, observed time.Time) { h.publish(id, k, observed) }
		fail := func(reason string) { h.fail(id, reason) }
		switch authType(src) {
		case contract.AuthTypeSecret:
			ss := &SecretSource{Dir: src.SecretDir, Publish: publish, Fail: fail, Log: slog}
			w := &DirWatcher{Dir: src.SecretDir, Debounce: cfg.Debounce, Poll: cfg.PollInterval, OnChange: ss.Check, Log: slog}
			g.Go(func() error { return w.Start(gctx) })
		default:
			sts := assumers[id]
			r := &Refresher{
				Source: authType(src), TokenFile: src.TokenFile, STS: sts, Clock: cfg.Clock, Margin: cfg.RefreshMargin,
				Backoff: Backoff{Min: cfg.MinBackoff, Max: cfg.MaxBackoff},
				Publish: publish, Fail: fail, Log: slog,
				Observe: func(d time.Duration, err error) { m.observeSTS(sts.Action(), d, err) },
			}
			r.Init()
			tw := &tokenWatch{file: src.TokenFile, changed: r.TokenChanged}
			w := &DirWatcher{Dir: filepath.Dir(src.TokenFile), Debounce: cfg.Debounce, Poll: cfg.PollInterval, OnChange: tw.check, Log: slog}
			g.Go(func() error { return r.Start(gctx) })
			g.Go(func() error { return w.Start(gctx) })
		}
	}
	sockets := &DirWatcher{Dir: cfg.SocketDir, Debounce: cfg.Debounce, Poll: cfg.PollInterval, OnChange: h.discover, Log: log}
	g.Go(func() error { return sockets.Start(gctx) })
	log.Info("sidecar started", "volumes", len(cfg.Sources), "socketDir", cfg.SocketDir)

	err = g.Wait()
	h.stop()
	if err != nil {
		return err
	}
	log.Info("sidecar stopped")
	return nil
}

// tokenWatch tells a Refresher when the token file's content changed.
type tokenWatch struct {
	file    string
	changed func()
	last    [32]byte
}

func (t *tokenWatch) check() {
	tok, err := readToken(t.file)
	if err != nil {
		return // the refresher reports it when it needs the token
	}
	if sum := sha256.Sum256([]byte(tok)); sum != t.last {
		t.last = sum
		t.changed()
	}
}
