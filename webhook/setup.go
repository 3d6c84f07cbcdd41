package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
)

// ServerOptions configures the manager that hosts the webhook.
type ServerOptions struct {
	// Host and Port are where the webhook server listens.
	Host string
	Port int
	// CertDir holds tls.crt and tls.key; certwatcher reloads them on change.
	CertDir string
	// HealthAddr serves /healthz and /readyz; MetricsAddr serves /metrics.
	// "0" disables either.
	HealthAddr  string
	MetricsAddr string
	// LeaderElect turns on leader election (for certificate rotation) with
	// the Lease LeaderElectionID in Namespace.
	LeaderElect      bool
	LeaderElectionID string
	Namespace        string
}

// NewManager builds the controller-runtime manager for the webhook: a webhook
// server with hot-reloaded certificates, health endpoints, leader election and
// an informer cache that drops managedFields.
func NewManager(restCfg *rest.Config, opts ServerOptions, log logr.Logger) (manager.Manager, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("webhook: scheme: %w", err)
	}
	grace := 15 * time.Second
	mgr, err := manager.New(restCfg, manager.Options{
		Scheme: scheme,
		Logger: log,
		Cache:  cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
		WebhookServer: ctrlwebhook.NewServer(ctrlwebhook.Options{
			Host: opts.Host, Port: opts.Port, CertDir: opts.CertDir,
		}),
		HealthProbeBindAddress:        opts.HealthAddr,
		Metrics:                       metricsserver.Options{BindAddress: opts.MetricsAddr},
		LeaderElection:                opts.LeaderElect,
		LeaderElectionID:              opts.LeaderElectionID,
		LeaderElectionNamespace:       opts.Namespace,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &grace,
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("webhook: healthz: %w", err)
	}
	started := mgr.GetWebhookServer().StartedChecker()
	if err := mgr.AddReadyzCheck("webhook", func(req *http.Request) error {
		if err := started(req); err != nil {
			return err
		}
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return errors.New("webhook: informer caches not synced")
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("webhook: readyz: %w", err)
	}
	return mgr, nil
}

// Setup serves the injector built by NewCachedInjector at Path on mgr's
// webhook server.
func Setup(ctx context.Context, mgr manager.Manager, cfg Config) error {
	inj, err := NewCachedInjector(ctx, mgr, cfg)
	if err != nil {
		return err
	}
	mgr.GetWebhookServer().Register(Path, NewHandler(inj))
	return nil
}

// NewCachedInjector registers informers for Namespaces, PersistentVolumeClaims
// and PersistentVolumes in mgr's cache and answers an Injector reading
// through it, falling back to the API server on a miss.
func NewCachedInjector(ctx context.Context, mgr manager.Manager, cfg Config) (*Injector, error) {
	for _, obj := range []client.Object{&corev1.Namespace{}, &corev1.PersistentVolumeClaim{}, &corev1.PersistentVolume{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return nil, fmt.Errorf("webhook: informer for %T: %w", obj, err)
		}
	}
	return NewInjector(cfg, mgr.GetCache(), mgr.GetAPIReader())
}
