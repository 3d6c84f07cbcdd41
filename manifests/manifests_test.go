package manifests_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"rekey.dev/rekey/csidriver/supervisor"
	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/fusetest"
)

// Paths relative to this package's directory.
const (
	chartDir     = "../charts/rekey"
	defaultDir   = "default"
	namespace    = "rekey-system"
	k0sKubelet   = "/var/lib/k0s/kubelet"
	imagePrefix  = "ghcr.io/rekey-dev/"
	csiImageName = imagePrefix + "rekey-csi"
)

// variant is one way to install: a kustomize directory and the Helm values
// that must render the same objects.
type variant struct {
	name      string
	kustomize string
	helmSet   []string
}

var variants = []variant{
	{name: "default", kustomize: defaultDir},
	{name: "cert-manager", kustomize: "overlays/cert-manager", helmSet: []string{"webhook.certMode=cert-manager"}},
	{name: "kubelet-dir", kustomize: "overlays/kubelet-dir-example", helmSet: []string{"kubeletDir=" + k0sKubelet}},
	{name: "fuse-memory", kustomize: "overlays/fuse-memory-example", helmSet: []string{"node.fuseMemory.budgetMiB=8192", "node.fuseMemory.serverMiB=512"}},
	{name: "controller", kustomize: "overlays/controller", helmSet: []string{"controller.enabled=true"}},
}

// tool returns the binary named by env (skips without it, fails when
// CI=true).
func tool(t *testing.T, env, name string) string {
	t.Helper()
	return fusetest.Binary(t, env, "hack/install-tools.sh "+name)
}

func run(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// built caches kustomize builds by directory: several tests check one.
var built = map[string][]byte{}

func kustomizeBuild(t *testing.T, dir string) []byte {
	t.Helper()
	if out, ok := built[dir]; ok {
		return out
	}
	out := run(t, tool(t, "REKEY_KUSTOMIZE_BIN", "kustomize"), "build", dir)
	built[dir] = out
	return out
}

func helmTemplate(t *testing.T, set ...string) []byte {
	t.Helper()
	args := []string{"template", "rekey", chartDir, "--include-crds"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return run(t, tool(t, "REKEY_HELM_BIN", "helm"), args...)
}

// object is one rendered object as generic JSON.
type object map[string]any

func (o object) str(path ...string) string {
	var cur any = map[string]any(o)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = m[p]
	}
	s, _ := cur.(string)
	return s
}

func (o object) key() string {
	return o.str("kind") + "/" + o.str("metadata", "namespace") + "/" + o.str("metadata", "name")
}

// split parses a multi-document YAML stream into objects keyed by
// kind/namespace/name; a duplicate key fails the test.
func split(t *testing.T, stream []byte) map[string]object {
	t.Helper()
	out := map[string]object{}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	for {
		var o object
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if len(o) == 0 {
			continue
		}
		if _, dup := out[o.key()]; dup {
			t.Fatalf("%s twice", o.key())
		}
		out[o.key()] = o
	}
	return out
}

func keys(m map[string]object) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

// TestHelmEqualsKustomize renders every variant both ways and compares the
// parsed objects.
func TestHelmEqualsKustomize(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			kust := split(t, kustomizeBuild(t, v.kustomize))
			helm := split(t, helmTemplate(t, v.helmSet...))
			if diff := cmp.Diff(keys(kust), keys(helm)); diff != "" {
				t.Fatalf("objects differ (-kustomize +helm):\n%s", diff)
			}
			for _, k := range keys(kust) {
				if diff := cmp.Diff(kust[k], helm[k]); diff != "" {
					t.Errorf("%s differs (-kustomize +helm):\n%s", k, diff)
				}
			}
		})
	}
}

// strictDecoder refuses unknown and duplicate fields.
var strictDecoder = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// decodeAll decodes every object of a build with client-go's scheme,
// strictly. cert-manager's kinds are not in it: they are checked as YAML.
func decodeAll(t *testing.T, stream []byte) []runtime.Object {
	t.Helper()
	var objs []runtime.Object
	docs := bytes.Split(stream, []byte("\n---\n"))
	for _, doc := range docs {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		if meta.Kind == "" {
			continue
		}
		if strings.HasPrefix(meta.APIVersion, "cert-manager.io/") || meta.Kind == "CustomResourceDefinition" {
			continue // the CRD is installed by the envtest suites of csidriver/volstatus and cmd/kubectl-rekey
		}
		obj, _, err := strictDecoder.Decode(doc, nil, nil)
		if err != nil {
			t.Errorf("%s: %v", meta.Kind, err)
			continue
		}
		objs = append(objs, obj)
	}
	return objs
}

func TestStrictDecode(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			if n := len(decodeAll(t, kustomizeBuild(t, v.kustomize))); n < 10 {
				t.Errorf("decoded %d objects, want the whole install", n)
			}
		})
	}
}

// install is a build's typed objects.
type install struct {
	all []runtime.Object
}

func load(t *testing.T, dir string) install {
	t.Helper()
	return install{all: decodeAll(t, kustomizeBuild(t, dir))}
}

func find[T runtime.Object](t *testing.T, in install, name string) T {
	t.Helper()
	for _, o := range in.all {
		if typed, ok := o.(T); ok {
			if m, ok := any(typed).(interface{ GetName() string }); ok && m.GetName() == name {
				return typed
			}
		}
	}
	var zero T
	t.Fatalf("no %T %q", zero, name)
	return zero
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func envValue(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

func mount(c corev1.Container, volume string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == volume {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// expand resolves $(VAR) references in args the way kubelet does, from the
// container's literal env; a reference to an undefined variable fails.
func expand(t *testing.T, c corev1.Container) []string {
	t.Helper()
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	var out []string
	for _, a := range c.Args {
		out = append(out, ref.ReplaceAllStringFunc(a, func(m string) string {
			name := ref.FindStringSubmatch(m)[1]
			for _, e := range c.Env {
				if e.Name == name {
					if e.ValueFrom != nil {
						return "<" + name + ">"
					}
					return e.Value
				}
			}
			t.Errorf("container %s: %s references undefined $(%s)", c.Name, a, name)
			return m
		}))
	}
	return out
}

func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// definedFlags lists the flags a command's main.go defines (fs.XxxVar(&..,
// "name", ...) and fs.Xxx("name", ...)), so the manifests cannot pass a flag
// the binary does not know.
func definedFlags(t *testing.T, mainGo string) map[string]bool {
	t.Helper()
	src, err := os.ReadFile(mainGo)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`fs\.(?:String|Bool|Int|Int64|Duration)(?:Var)?\((?:[^,]+,\s*)?"([a-z0-9-]+)"`)
	out := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		out[m[1]] = true
	}
	if len(out) < 5 {
		t.Fatalf("%s: found only %d flags; is the pattern stale?", mainGo, len(out))
	}
	return out
}

func checkFlags(t *testing.T, c corev1.Container, args []string, defined map[string]bool) {
	t.Helper()
	for _, a := range args {
		if !strings.HasPrefix(a, "-") || a == "--" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !defined[name] {
			t.Errorf("container %s: flag --%s is not defined by the binary", c.Name, name)
		}
	}
}

// checkNode asserts the node DaemonSet's invariants for kubelet root dir.
func checkNode(t *testing.T, in install, dir string) {
	t.Helper()
	ds := find[*appsv1.DaemonSet](t, in, "rekey-csi-node")
	spec := ds.Spec.Template.Spec
	csiFlags := definedFlags(t, "../cmd/rekey-csi/main.go")

	var hostPath string
	for _, v := range spec.Volumes {
		if v.Name == "kubelet-dir" && v.HostPath != nil {
			hostPath = v.HostPath.Path
		}
		if v.HostPath != nil && v.Name != "kubelet-dir" && v.HostPath.Path != "/dev/fuse" {
			t.Errorf("unexpected hostPath %s: the kubelet root must be one mount (hard links across mounts fail)", v.HostPath.Path)
		}
	}
	if hostPath != dir {
		t.Errorf("kubelet-dir hostPath = %q, want %q", hostPath, dir)
	}

	driver := container(t, spec, "driver")
	sup := container(t, spec, "supervisor")
	for _, c := range []corev1.Container{driver, sup} {
		if !strings.HasPrefix(c.Image, csiImageName+":") {
			t.Errorf("container %s image %s, want %s", c.Name, c.Image, csiImageName)
		}
		if v, _ := envValue(c, "KUBELET_DIR"); v != dir {
			t.Errorf("container %s KUBELET_DIR = %q, want %q", c.Name, v, dir)
		}
		m := mount(c, "kubelet-dir")
		if m == nil || m.MountPath != dir {
			t.Errorf("container %s mounts the kubelet dir at %+v, want %q (the host path)", c.Name, m, dir)
		}
		if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
			t.Errorf("container %s must be privileged", c.Name)
		}
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("container %s needs memory requests and limits", c.Name)
		}
	}
	if m := mount(driver, "kubelet-dir"); m == nil || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional {
		t.Error("driver: the kubelet dir must be mounted with Bidirectional propagation")
	}
	if m := mount(sup, "kubelet-dir"); m == nil || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Error("supervisor: the kubelet dir must be mounted with HostToContainer propagation (it sees the driver's mounts)")
	}
	if mount(driver, "dev-fuse") == nil {
		t.Error("driver must mount /dev/fuse")
	}

	// Driver flags: every path under the kubelet root.
	dargs := expand(t, driver)
	if len(dargs) == 0 || dargs[0] != "driver" || len(driver.Command) != 1 || driver.Command[0] != "/rekey-csi" {
		t.Errorf("driver runs %v %v, want /rekey-csi driver ...", driver.Command, dargs)
	}
	checkFlags(t, driver, dargs[1:], csiFlags)
	plugin := dir + "/plugins/" + contract.DriverName
	want := map[string]string{
		"kubelet-root-dir":  dir,
		"endpoint":          "unix://" + plugin + "/csi.sock",
		"supervisor-socket": plugin + "/supervisor.sock",
		"node-id":           "<NODE_NAME>",
	}
	for f, w := range want {
		if got, _ := flagValue(dargs, f); got != w {
			t.Errorf("driver --%s = %q, want %q", f, got, w)
		}
	}
	addr, ok := flagValue(dargs, "http-addr")
	if !ok || driver.LivenessProbe == nil || driver.LivenessProbe.HTTPGet == nil ||
		driver.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Error("driver needs --http-addr and a /healthz liveness probe")
	} else if port := driver.LivenessProbe.HTTPGet.Port; port.IntValue() != 0 {
		// By number (hostNetwork: no declared port, or a rolling update
		// could not place the new node pod beside the old one).
		if ":"+port.String() != addr {
			t.Errorf("driver probe port %s does not match --http-addr=%s", port.String(), addr)
		}
	} else if len(driver.Ports) != 1 || ":"+fmt.Sprint(driver.Ports[0].ContainerPort) != addr || driver.Ports[0].Name != port.String() {
		t.Errorf("driver port %v does not match --http-addr=%s and the probe's %s", driver.Ports, addr, port.String())
	}

	// Supervisor: rekey-csi init --instance-state-dir=<state> -- /rekey-csi supervisor ...
	sargs := expand(t, sup)
	if len(sargs) < 5 || sargs[0] != "init" || !slices.Equal(sargs[2:5], []string{"--", "/rekey-csi", "supervisor"}) {
		t.Fatalf("supervisor args %v, want init --instance-state-dir=... -- /rekey-csi supervisor ...", sargs)
	}
	checkFlags(t, sup, sargs[1:2], csiFlags)
	checkFlags(t, sup, sargs[5:], csiFlags)
	if got, _ := flagValue(sargs[:2], "instance-state-dir"); got != func() string { v, _ := flagValue(sargs[5:], "state-dir"); return v }() {
		t.Errorf("init --instance-state-dir = %q, want the supervisor's --state-dir: the next node pod finds the instance lock there", got)
	}
	ready, _ := flagValue(sargs[5:], "ready-file")
	if p := sup.ReadinessProbe; ready == "" || p == nil || p.Exec == nil ||
		!slices.Equal(p.Exec.Command, []string{"/rekey-csi", "ready", "--ready-file=" + ready}) {
		t.Errorf("supervisor: --ready-file=%q and readiness probe %+v: the probe must check the supervisor's ready file", ready, p)
	}
	if got, _ := flagValue(sargs, "supervisor-socket"); got != want["supervisor-socket"] {
		t.Errorf("supervisor --supervisor-socket = %q, want the driver's %q", got, want["supervisor-socket"])
	}
	if got, _ := flagValue(sargs, "state-dir"); !strings.HasPrefix(got, dir+"/") {
		t.Errorf("supervisor --state-dir = %q, want it under the kubelet dir mount %s (hard links to pods)", got, dir)
	}
	if sup.LivenessProbe != nil {
		t.Error("supervisor must have no liveness probe: a restart ends every FUSE server")
	}
	// Staging disk: the node keeps a reserve above kubelet's default
	// eviction threshold (nodefs.available<10%), and pods' disk options
	// are capped (docs/csi-driver.md, "Disk").
	if v, _ := flagValue(sargs[5:], "staging-reserve-percent"); atoi(v) <= 10 {
		t.Errorf("supervisor --staging-reserve-percent=%q, want more than kubelet's 10%% eviction threshold", v)
	}
	for _, f := range []string{"max-write-cache-mb", "max-staging-mb"} {
		if v, _ := flagValue(dargs, f); atoi(v) <= 0 {
			t.Errorf("driver --%s=%q, want a cap", f, v)
		}
	}
}

// atoi is the number in s, or 0.
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func TestNodePlugin(t *testing.T) {
	in := load(t, defaultDir)
	checkNode(t, in, contract.DefaultKubeletRootDir)

	ds := find[*appsv1.DaemonSet](t, in, "rekey-csi-node")
	spec := ds.Spec.Template.Spec
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists || spec.Tolerations[0].Key != "" {
		t.Errorf("tolerations %+v, want all", spec.Tolerations)
	}
	if spec.HostNetwork {
		t.Error("the base must not use hostNetwork (overlays add it)")
	}
	if spec.HostPID || spec.HostIPC {
		t.Error("the node plugin must not share the host's PID or IPC namespace")
	}
	// The new node pod starts next to the old one and takes its mounts
	// over; deleting the old one first would end them.
	if u := ds.Spec.UpdateStrategy; u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil ||
		u.RollingUpdate.MaxSurge == nil || u.RollingUpdate.MaxSurge.IntValue() != 1 ||
		u.RollingUpdate.MaxUnavailable == nil || u.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("updateStrategy %+v, want RollingUpdate with maxSurge 1 and maxUnavailable 0", u)
	}
	if spec.ServiceAccountName != "rekey-csi-node" {
		t.Errorf("serviceAccountName %q", spec.ServiceAccountName)
	}
	// The FUSE servers upload their staged data when the pod stops: init
	// waits DefaultServerStopGrace for them, the kubelet must wait longer.
	if g := spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= supervisor.DefaultServerStopGrace+10*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v, want more than init's server stop grace %s plus 10s", g, supervisor.DefaultServerStopGrace)
	}
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		if !strings.HasPrefix(c.Image, csiImageName+":") {
			t.Errorf("container %s uses image %s: the node plugin is one image (no registrar or livenessprobe)", c.Name, c.Image)
		}
	}
}

func TestKubeletDirOverlay(t *testing.T) {
	checkNode(t, load(t, "overlays/kubelet-dir-example"), k0sKubelet)
}

func TestCSIDriver(t *testing.T) {
	in := load(t, defaultDir)
	var d *storagev1.CSIDriver
	for _, o := range in.all {
		if c, ok := o.(*storagev1.CSIDriver); ok {
			d = c
		}
	}
	if d == nil || d.Name != contract.DriverName {
		t.Fatalf("no CSIDriver %s", contract.DriverName)
	}
	s := d.Spec
	if s.AttachRequired == nil || *s.AttachRequired || s.PodInfoOnMount == nil || !*s.PodInfoOnMount ||
		s.RequiresRepublish == nil || !*s.RequiresRepublish {
		t.Errorf("attachRequired/podInfoOnMount/requiresRepublish = %v/%v/%v, want false/true/true",
			s.AttachRequired, s.PodInfoOnMount, s.RequiresRepublish)
	}
	if s.FSGroupPolicy == nil || *s.FSGroupPolicy != storagev1.NoneFSGroupPolicy {
		t.Errorf("fsGroupPolicy %v, want None", s.FSGroupPolicy)
	}
	if !slices.Equal(s.VolumeLifecycleModes, []storagev1.VolumeLifecycleMode{"Persistent", "Ephemeral"}) {
		t.Errorf("volumeLifecycleModes %v", s.VolumeLifecycleModes)
	}
	var aud []string
	for _, r := range s.TokenRequests {
		aud = append(aud, r.Audience)
	}
	if !slices.Equal(aud, []string{"sts.aliyuncs.com", "sts.amazonaws.com"}) {
		t.Errorf("tokenRequests audiences %v", aud)
	}
}

func TestWebhook(t *testing.T) {
	in := load(t, defaultDir)
	dep := find[*appsv1.Deployment](t, in, "rekey-webhook")
	if dep.Namespace != namespace || dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("webhook %s/%s replicas %v, want rekey-system and 2", dep.Namespace, dep.Name, dep.Spec.Replicas)
	}
	spec := dep.Spec.Template.Spec
	if a := spec.Affinity; a == nil || a.PodAntiAffinity == nil ||
		len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
		t.Error("webhook replicas need pod anti-affinity")
	}
	// Pod Security "restricted".
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil ||
		psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("webhook pod: want runAsNonRoot and seccomp RuntimeDefault")
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Error("webhook pod must not share host namespaces")
	}
	c := container(t, spec, "webhook")
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		len(sc.Capabilities.Add) > 0 || (sc.Privileged != nil && *sc.Privileged) {
		t.Errorf("webhook container securityContext %+v is not restricted", sc)
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("webhook volume %s is a hostPath", v.Name)
		}
	}
	args := expand(t, c)
	checkFlags(t, c, args, definedFlags(t, "../cmd/rekey-webhook/main.go"))
	sidecar, _ := envValue(c, "SIDECAR_IMAGE")
	if got, _ := flagValue(args, "sidecar-image"); got != sidecar || !strings.HasPrefix(sidecar, imagePrefix+"rekey-sidecar:") {
		t.Errorf("--sidecar-image=%q (SIDECAR_IMAGE %q), want %srekey-sidecar:<tag>", got, sidecar, imagePrefix)
	}
	if c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Error("webhook needs readiness and liveness probes")
	}

	pdb := find[*policyv1.PodDisruptionBudget](t, in, "rekey-webhook")
	if pdb.Spec.Selector == nil || pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != dep.Spec.Template.Labels["app.kubernetes.io/name"] {
		t.Error("the PDB does not select the webhook pods")
	}
	svc := find[*corev1.Service](t, in, "rekey-webhook")
	if svc.Spec.Selector["app.kubernetes.io/name"] != "rekey-webhook" {
		t.Error("the Service does not select the webhook pods")
	}

	mwc := find[*admissionregistrationv1.MutatingWebhookConfiguration](t, in, "rekey-webhook")
	if len(mwc.Webhooks) != 2 {
		t.Fatalf("%d webhook entries, want 2", len(mwc.Webhooks))
	}
	for _, w := range mwc.Webhooks {
		if w.SideEffects == nil || *w.SideEffects != "None" || w.TimeoutSeconds == nil || *w.TimeoutSeconds > 10 ||
			w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != "IfNeeded" || w.FailurePolicy == nil {
			t.Errorf("%s: sideEffects/timeoutSeconds/reinvocationPolicy/failurePolicy not set as designed", w.Name)
		}
		s := w.ClientConfig.Service
		if s == nil || s.Name != svc.Name || s.Namespace != namespace || s.Path == nil || *s.Path != "/mutate-v1-pod" {
			t.Errorf("%s: clientConfig.service %+v", w.Name, s)
		}
		var excluded []string
		for _, e := range w.NamespaceSelector.MatchExpressions {
			if e.Key == "kubernetes.io/metadata.name" && e.Operator == "NotIn" {
				excluded = e.Values
			}
		}
		for _, ns := range []string{"kube-system", namespace} {
			if !slices.Contains(excluded, ns) {
				t.Errorf("%s: namespace %s is not excluded", w.Name, ns)
			}
		}
		if w.ObjectSelector == nil || len(w.ObjectSelector.MatchExpressions) == 0 {
			t.Errorf("%s: no objectSelector excluding the webhook's own pods", w.Name)
		}
	}
}

// TestRBAC: no wildcards; Secrets only by name (create cannot be), except
// that the webhook's namespaced Role may list and watch the Secrets of its own
// namespace (the certificate rotator's informer); the node plugin only posts
// Events.
func TestRBAC(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			in := load(t, v.kustomize)
			for _, o := range in.all {
				var rules []rbacv1.PolicyRule
				var name string
				switch r := o.(type) {
				case *rbacv1.Role:
					rules, name = r.Rules, "Role "+r.Name
				case *rbacv1.ClusterRole:
					rules, name = r.Rules, "ClusterRole "+r.Name
				default:
					continue
				}
				for _, r := range rules {
					for _, s := range slices.Concat(r.Verbs, r.Resources, r.APIGroups) {
						if strings.Contains(s, "*") {
							t.Errorf("%s: wildcard %q", name, s)
						}
					}
					unnamed := []string{"create"}
					if name == "Role rekey-webhook" {
						unnamed = []string{"create", "list", "watch"}
					}
					// rekey-controller-secrets: get of provisioner Secrets, whose
					// names are templates, in the namespaces granted it only.
					if slices.Contains(r.Resources, "secrets") && len(r.ResourceNames) == 0 && !slices.Equal(r.Verbs, unnamed) &&
						!slices.Equal(r.Verbs, []string{"create"}) &&
						(name != "Role rekey-controller-secrets" || !slices.Equal(r.Verbs, []string{"get"})) {
						t.Errorf("%s: secrets %v without resourceNames", name, r.Verbs)
					}
					if strings.HasPrefix(name, "ClusterRole") && slices.Contains(r.Resources, "secrets") {
						t.Errorf("%s: cluster-wide secrets access", name)
					}
				}
			}
			node := find[*rbacv1.ClusterRole](t, in, "rekey-csi-node")
			want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
				{APIGroups: []string{"rekey.dev"}, Resources: []string{"rekeyvolumestatuses"}, Verbs: []string{"get", "create", "patch"}}}
			if diff := cmp.Diff(want, node.Rules); diff != "" {
				t.Errorf("rekey-csi-node rules (-want +got):\n%s", diff)
			}
		})
	}
}

// TestOneVersion: the three images share one tag, the chart's appVersion.
func TestOneVersion(t *testing.T) {
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &chart); err != nil {
		t.Fatal(err)
	}
	var k struct {
		Images []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	b, err = os.ReadFile(filepath.Join(defaultDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, img := range k.Images {
		names = append(names, img.Name)
		if img.NewTag != chart.AppVersion || img.NewName != "" {
			t.Errorf("image %s: newName %q newTag %q, want tag %q (Chart.yaml appVersion)", img.Name, img.NewName, img.NewTag, chart.AppVersion)
		}
	}
	want := []string{imagePrefix + "rekey-csi", imagePrefix + "rekey-webhook", imagePrefix + "rekey-sidecar"}
	if !slices.Equal(names, want) {
		t.Errorf("images %v, want %v", names, want)
	}
}
