// Command kubectl-rekey is the kubectl plugin of rekey (kubectl rekey ...):
//
//	kubectl rekey status [-n NS | -A] [--secret NS/NAME] [--pod NAME]
//	    a table of the pods' rekey volumes: key source, keys in use, whether
//	    they are the Secret's current content, their age, the last error
//	kubectl rekey wait --secret NS/NAME [-n NS] [--timeout 5m]
//	    exits 0 once every mount of the Secret runs its current keys (safe to
//	    revoke the old ones), 1 with the laggards named on timeout
//	kubectl rekey rotate --secret NS/NAME --from-file akId=FILE --from-file akSecret=FILE [--timeout 5m]
//	    writes new keys into the Secret (checked first), then waits like wait
//
// Exit status 2: the question could not be answered (usage, no CRD, no
// permission, no such Secret). See docs/rotation.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rekeyv1alpha1 "rekey.dev/rekey/api/v1alpha1"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/rekeyctl"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

const usage = `kubectl rekey: is it safe to revoke a key?

  kubectl rekey status [-n NS | -A] [--secret NS/NAME] [--pod NAME]
  kubectl rekey wait --secret NS/NAME [-n NS] [--timeout 5m]
  kubectl rekey rotate --secret NS/NAME --from-file ENTRY=FILE... [--timeout 5m]
  kubectl rekey version

Common flags: --kubeconfig FILE, --context NAME, --rekey-namespace NS (default rekey-system).
`

// Config is what the command line sets.
type Config struct {
	Command        string
	Kubeconfig     string
	Context        string
	Namespace      string
	AllNamespaces  bool
	Secret         string
	Pod            string
	Timeout        time.Duration
	Interval       time.Duration
	RekeyNamespace string
	Entries        map[string][]byte
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(exitCode(run(ctx, os.Args[1:], os.Stdout), os.Stderr))
}

func exitCode(err error, stderr io.Writer) int {
	var notSafe *rekeyctl.NotSafeError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &notSafe):
		fmt.Fprintln(stderr, "kubectl-rekey:", err)
		return 1
	}
	fmt.Fprintln(stderr, "kubectl-rekey:", err)
	return 2
}

func parse(args []string, stderr io.Writer) (Config, error) {
	cfg := Config{RekeyNamespace: contract.DefaultNamespace}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return cfg, fmt.Errorf("%w: name a command", rekeyctl.ErrUsage)
		}
		return cfg, flag.ErrHelp
	}
	cfg.Command, args = args[0], args[1:]
	fs := flag.NewFlagSet("kubectl rekey "+cfg.Command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&cfg.Context, "context", "", "kubeconfig context")
	fs.StringVar(&cfg.Namespace, "namespace", "", "pods' namespace (status default: the context's; wait default: all)")
	fs.StringVar(&cfg.Namespace, "n", "", "short for --namespace")
	fs.BoolVar(&cfg.AllNamespaces, "all-namespaces", false, "pods of every namespace")
	fs.BoolVar(&cfg.AllNamespaces, "A", false, "short for --all-namespaces")
	fs.StringVar(&cfg.Secret, "secret", "", "NAMESPACE/NAME of the volumes' nodePublishSecretRef Secret")
	fs.StringVar(&cfg.Pod, "pod", "", "only this pod (status)")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Minute, "give up after this long (wait)")
	fs.DurationVar(&cfg.Interval, "interval", 2*time.Second, "poll interval (wait)")
	fs.Func("from-file", "ENTRY=FILE: a Secret entry (akId, akSecret, ...) read from FILE (rotate; repeat)", func(v string) error {
		e, b, err := rekeyctl.ParseFromFile(v)
		if err != nil {
			return err
		}
		if cfg.Entries == nil {
			cfg.Entries = map[string][]byte{}
		}
		cfg.Entries[e] = b
		return nil
	})
	fs.StringVar(&cfg.RekeyNamespace, "rekey-namespace", cfg.RekeyNamespace, "rekey's namespace, holding the fingerprint key Secret")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, fmt.Errorf("%w: %v", rekeyctl.ErrUsage, err) //nolint:errorlint // flag's errors carry no cause worth keeping
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("%w: unexpected arguments %q", rekeyctl.ErrUsage, fs.Args())
	}
	switch cfg.Command {
	case "status", "version":
	case "wait", "rotate":
		if cfg.Secret == "" {
			return cfg, fmt.Errorf("%w: %s needs --secret NAMESPACE/NAME", rekeyctl.ErrUsage, cfg.Command)
		}
		if cfg.Command == "rotate" && len(cfg.Entries) == 0 {
			return cfg, fmt.Errorf("%w: rotate needs --from-file ENTRY=FILE for the new keys", rekeyctl.ErrUsage)
		}
	default:
		fmt.Fprint(stderr, usage)
		return cfg, fmt.Errorf("%w: unknown command %q", rekeyctl.ErrUsage, cfg.Command)
	}
	if cfg.Secret != "" {
		if _, _, err := rekeyctl.SplitRef(cfg.Secret); err != nil {
			return cfg, fmt.Errorf("--secret: %w", err)
		}
	}
	return cfg, nil
}

func run(ctx context.Context, args []string, out io.Writer) error {
	cfg, err := parse(args, os.Stderr)
	if err != nil {
		return err
	}
	if cfg.Command == "version" {
		_, err := fmt.Fprintln(out, "kubectl-rekey", version)
		return err
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = cfg.Kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: cfg.Context})
	rc, err := cc.ClientConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	ns := cfg.Namespace
	// wait looks in every namespace unless told: a PersistentVolume's
	// Secret may be mounted by pods of any namespace.
	if ns == "" && !cfg.AllNamespaces && cfg.Command == "status" {
		if ns, _, err = cc.Namespace(); err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
	}
	if cfg.AllNamespaces {
		ns = ""
	}
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return err
	}
	if err := rekeyv1alpha1.AddToScheme(s); err != nil {
		return err
	}
	c, err := client.New(rc, client.Options{Scheme: s})
	if err != nil {
		return fmt.Errorf("connect to the API server: %w", err)
	}
	return rekeyctl.Run(ctx, rekeyctl.Command{Name: cfg.Command, Lister: &rekeyctl.Lister{C: c, RekeyNamespace: cfg.RekeyNamespace},
		Scope: rekeyctl.Scope{Namespace: ns, Secret: cfg.Secret, Pod: cfg.Pod}, Timeout: cfg.Timeout, Interval: cfg.Interval,
		Entries: cfg.Entries, Out: out, Now: time.Now})
}
