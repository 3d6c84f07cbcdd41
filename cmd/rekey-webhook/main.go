// Command rekey-webhook serves rekey's mutating admission webhook: it injects
// the credential-rotation sidecar into pods that opted in and use an
// s3.rekey.dev volume. Its certificates come from cert-manager (mounted into
// --cert-dir) or from the built-in self-signed authority.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"rekey.dev/rekey/certs"
	"rekey.dev/rekey/webhook"
)

// Certificate modes of --cert-mode.
const (
	certModeSelfSigned  = "self-signed"
	certModeCertManager = "cert-manager"
)

// Config is everything the flags set.
type Config struct {
	Injector webhook.Config
	Certs    certs.Config
	CertMode string

	Port           int
	Host           string
	HealthAddr     string
	MetricsAddr    string
	LeaderElect    bool
	LeaderElection string
	Zap            zap.Options
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := parseFlags(flag.CommandLine, os.Args[1:])
	if err == nil {
		err = run(ctx, cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rekey-webhook:", err)
		os.Exit(1)
	}
}

func parseFlags(fs *flag.FlagSet, args []string) (Config, error) {
	cfg := Config{Injector: webhook.DefaultConfig(), Certs: certs.DefaultConfig(), CertMode: certModeSelfSigned}
	inj, crt := &cfg.Injector, &cfg.Certs
	fs.StringVar(&inj.Image, "sidecar-image", inj.Image, "image of the injected sidecar")
	fs.StringVar((*string)(&inj.ImagePullPolicy), "sidecar-image-pull-policy", string(inj.ImagePullPolicy), "imagePullPolicy of the sidecar")
	fs.BoolVar(&inj.NativeSidecar, "native-sidecar", inj.NativeSidecar, "inject a native sidecar (init container with restartPolicy Always, Kubernetes >= 1.29); false injects a classic container")
	fs.Int64Var(&inj.UID, "sidecar-uid", inj.UID, "UID and GID of the sidecar")
	fs.StringVar(&inj.CPURequest, "sidecar-cpu-request", inj.CPURequest, "default CPU request of the sidecar (empty: none)")
	fs.StringVar(&inj.CPULimit, "sidecar-cpu-limit", inj.CPULimit, "default CPU limit of the sidecar (empty: none)")
	fs.StringVar(&inj.MemoryRequest, "sidecar-memory-request", inj.MemoryRequest, "default memory request of the sidecar (empty: none)")
	fs.StringVar(&inj.MemoryLimit, "sidecar-memory-limit", inj.MemoryLimit, "default memory limit of the sidecar (empty: none)")
	fs.Int64Var(&inj.TokenExpirationSeconds, "token-expiration-seconds", inj.TokenExpirationSeconds, "lifetime of projected service-account tokens for rrsa/irsa volumes")

	fs.StringVar(&cfg.CertMode, "cert-mode", cfg.CertMode, "where serving certificates come from: self-signed (built-in CA, Secret, caBundle patching) or cert-manager (files mounted into --cert-dir)")
	fs.StringVar(&crt.CertDir, "cert-dir", "/tmp/k8s-webhook-server/serving-certs", "directory holding tls.crt and tls.key")
	fs.StringVar(&crt.Namespace, "namespace", "", "namespace of the webhook (from the downward API)")
	fs.StringVar(&crt.ServiceName, "service-name", crt.ServiceName, "Service in front of the webhook")
	fs.StringVar(&crt.SecretName, "secret-name", crt.SecretName, "Secret holding the self-signed CA and serving certificate")
	fs.StringVar(&crt.WebhookConfigName, "webhook-config-name", crt.WebhookConfigName, "MutatingWebhookConfiguration whose caBundle the self-signed mode patches")
	fs.DurationVar(&crt.CAValidity, "ca-validity", crt.CAValidity, "lifetime of the self-signed CA")
	fs.DurationVar(&crt.CertValidity, "cert-validity", crt.CertValidity, "lifetime of the self-signed serving certificate")
	fs.DurationVar(&crt.CheckInterval, "cert-check-interval", crt.CheckInterval, "how often certificates are checked and re-read")
	extraSANs := fs.String("cert-extra-sans", "", "comma-separated extra DNS names for the self-signed serving certificate")

	fs.IntVar(&cfg.Port, "port", 9443, "webhook server port")
	fs.StringVar(&cfg.Host, "host", "", "webhook server bind address (empty: all)")
	fs.StringVar(&cfg.HealthAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.StringVar(&cfg.MetricsAddr, "metrics-bind-address", ":8080", `address of /metrics ("0" disables)`)
	fs.BoolVar(&cfg.LeaderElect, "leader-elect", true, "elect a leader for certificate rotation and caBundle patching")
	fs.StringVar(&cfg.LeaderElection, "leader-election-id", "rekey-webhook", "name of the leader election Lease")
	cfg.Zap.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("flags: %w", err)
	}
	if *extraSANs != "" {
		crt.ExtraSANs = strings.Split(*extraSANs, ",")
	}
	if err := inj.Validate(); err != nil {
		return Config{}, err
	}
	if cfg.CertMode != certModeSelfSigned && cfg.CertMode != certModeCertManager {
		return Config{}, fmt.Errorf("flags: --cert-mode %q: want %s or %s", cfg.CertMode, certModeSelfSigned, certModeCertManager)
	}
	if crt.Namespace == "" {
		return Config{}, errors.New("flags: --namespace is required")
	}
	return cfg, nil
}

func run(ctx context.Context, cfg Config) error {
	log := zap.New(zap.UseFlagOptions(&cfg.Zap))
	ctrllog.SetLogger(log) // controller-runtime's own packages log through it
	ctx = logr.NewContext(ctx, log)
	restCfg, err := config.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	mgr, err := webhook.NewManager(restCfg, webhook.ServerOptions{
		Host: cfg.Host, Port: cfg.Port, CertDir: cfg.Certs.CertDir,
		HealthAddr: cfg.HealthAddr, MetricsAddr: cfg.MetricsAddr,
		LeaderElect: cfg.LeaderElect, LeaderElectionID: cfg.LeaderElection, Namespace: cfg.Certs.Namespace,
	}, log)
	if err != nil {
		return err
	}
	if cfg.CertMode == certModeSelfSigned {
		direct, err := client.New(restCfg, client.Options{Scheme: mgr.GetScheme()})
		if err != nil {
			return fmt.Errorf("client: %w", err)
		}
		authority, err := certs.New(cfg.Certs, direct, cfg.LeaderElect, log.WithName("certs"))
		if err != nil {
			return err
		}
		if err := authority.Bootstrap(ctx); err != nil {
			return err
		}
		if err := authority.Add(mgr); err != nil {
			return err
		}
	}
	if err := webhook.Setup(ctx, mgr, cfg.Injector); err != nil {
		return err
	}
	log.Info("Starting rekey webhook", "port", cfg.Port, "certMode", cfg.CertMode, "nativeSidecar", cfg.Injector.NativeSidecar)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	return nil
}
