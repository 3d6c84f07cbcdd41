package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Cluster is a single-node Kubernetes on loopback: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet (node "localhost") and
// containerd, every one with its own ports and directories under Dir, so it
// clashes with nothing else on the machine.
type Cluster struct {
	Dir      string // work directory; kubelet root is Dir/kubelet
	K8sBin   string // kube-apiserver, etcd, kubelet, ... (tests/cluster/build.sh --all)
	APIPort  int
	EtcdPort int
	Pause    string // sandbox image reference

	procs []*proc
}

// proc is a process started by the test, in its own process group.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func (c *Cluster) path(p ...string) string { return filepath.Join(append([]string{c.Dir}, p...)...) }

// KubeletRoot is kubelet's --root-dir: the one value the e2e overlay sets for
// the node plugin.
func (c *Cluster) KubeletRoot() string { return c.path("kubelet") }

// Kubeconfig is the admin kubeconfig.
func (c *Cluster) Kubeconfig() string { return c.path("admin.kubeconfig") }

// ContainerdSock is containerd's socket.
func (c *Cluster) ContainerdSock() string { return c.path("containerd", "containerd.sock") }

func (c *Cluster) start(name string, args ...string) (*proc, error) {
	return c.startEnv(name, nil, args...)
}

// startEnv starts a process with env added to ours; its output goes to
// Dir/logs/<name>.log.
func (c *Cluster) startEnv(name string, env []string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(c.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	c.procs = append(c.procs, p)
	return p, nil
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Up writes certificates and configuration (kept for the next run) and starts
// every component, returning once the node is Ready.
func (c *Cluster) Up(ctx context.Context) error {
	for _, d := range []string{"logs", "pki", "etcd", "kubelet", "containerd", "cni/net.d", "cni/ipam"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil { //nolint:gosec // kubelet and pod users traverse these, as under /var/lib/kubelet
			return err
		}
	}
	pkiDir := c.path("pki")
	if err := pki(pkiDir); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", c.APIPort)
	if err := kubeconfig(c.Kubeconfig(), pkiDir, server, "admin"); err != nil {
		return err
	}
	if err := kubeconfig(c.path("kubelet.kubeconfig"), pkiDir, server, "kubelet"); err != nil {
		return err
	}
	if err := c.writeConfigs(); err != nil {
		return err
	}
	k := func(b string) string { return filepath.Join(c.K8sBin, b) }
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPort)
	if _, err := c.start("containerd", "containerd", "--config", c.path("containerd.toml")); err != nil {
		return err
	}
	// A fresh etcd every run: no objects survive from an earlier run.
	_ = os.RemoveAll(c.path("etcd"))
	if _, err := c.start("etcd", k("etcd"), "--data-dir", c.path("etcd"), "--name", "e2e",
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPort+1),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPort+1),
		"--initial-cluster", fmt.Sprintf("e2e=http://127.0.0.1:%d", c.EtcdPort+1),
		"--unsafe-no-fsync", "--quota-backend-bytes", "1073741824", "--log-level", "warn"); err != nil {
		return err
	}
	pk := func(n string) string { return filepath.Join(pkiDir, n) }
	if _, err := c.start("kube-apiserver", k("kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(c.APIPort),
		"--endpoint-reconciler-type=none", "--kubelet-preferred-address-types=Hostname",
		"--tls-cert-file", pk("apiserver.crt"), "--tls-private-key-file", pk("apiserver.key"),
		"--client-ca-file", pk("ca.crt"),
		"--kubelet-client-certificate", pk("apiserver-kubelet-client.crt"), "--kubelet-client-key", pk("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority", pk("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		// The discovery document MinIO's OpenID config reads (STS step)
		// points to the keys where MinIO can fetch them.
		"--service-account-jwks-uri=https://127.0.0.1:"+strconv.Itoa(c.APIPort)+"/openid/v1/jwks",
		"--service-account-key-file", pk("sa.pub"), "--service-account-signing-key-file", pk("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC", "--allow-privileged=true",
		"--enable-admission-plugins=NodeRestriction", "--profiling=false", "--v=1"); err != nil {
		return err
	}
	if err := waitFor(ctx, 90*time.Second, "kube-apiserver ready", func() error {
		_, err := c.kubectl(ctx, "get", "--raw", "/readyz")
		return err
	}); err != nil {
		return err
	}
	if _, err := c.start("kube-controller-manager", k("kube-controller-manager"),
		"--kubeconfig", c.Kubeconfig(), "--authentication-kubeconfig", c.Kubeconfig(), "--authorization-kubeconfig", c.Kubeconfig(),
		"--service-account-private-key-file", pk("sa.key"), "--root-ca-file", pk("ca.crt"),
		"--leader-elect=false", "--secure-port=0", "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle",
		"--concurrent-gc-syncs=2", "--v=1"); err != nil {
		return err
	}
	if _, err := c.start("kube-scheduler", k("kube-scheduler"),
		"--kubeconfig", c.Kubeconfig(), "--authentication-kubeconfig", c.Kubeconfig(), "--authorization-kubeconfig", c.Kubeconfig(),
		"--leader-elect=false", "--secure-port=0", "--v=1"); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, "containerd socket", func() error {
		_, err := os.Stat(c.ContainerdSock())
		return err
	}); err != nil {
		return err
	}
	if _, err := c.start("kubelet", k("kubelet"),
		"--config", c.path("kubelet.yaml"), "--kubeconfig", c.path("kubelet.kubeconfig"),
		"--container-runtime-endpoint", "unix://"+c.ContainerdSock(),
		"--root-dir", c.KubeletRoot(), "--hostname-override=localhost", "--v=1"); err != nil {
		return err
	}
	return waitFor(ctx, 120*time.Second, "node localhost Ready", func() error {
		out, err := c.kubectl(ctx, "get", "node", "localhost", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil {
			return err
		}
		if out != "True" {
			return fmt.Errorf("Ready=%q", out)
		}
		return nil
	})
}

func (c *Cluster) writeConfigs() error {
	pkiDir := c.path("pki")
	containerd := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
oom_score = 0
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[7]q
`, c.path("containerd", "root"), c.path("containerd", "state"), c.ContainerdSock(), c.ContainerdSock()+".ttrpc",
		c.path("containerd", "opt"), c.Pause, c.path("cni", "net.d"))
	if err := os.WriteFile(c.path("containerd.toml"), []byte(containerd), 0o600); err != nil {
		return err
	}
	cni := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "rekey-e2e",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.88.77.0/24"}]]}}
  ]
}
`, bridgeName, c.path("cni", "ipam"))
	if err := os.WriteFile(c.path("cni", "net.d", "10-rekey-e2e.conflist"), []byte(cni), 0o600); err != nil {
		return err
	}
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
address: 127.0.0.1
port: %d
healthzBindAddress: 127.0.0.1
healthzPort: %d
readOnlyPort: 0
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%%", "imagefs.available": "1%%"}
# Kubelet republishes requiresRepublish volumes when it syncs a pod, every
# syncFrequency (default 1m): 10s makes the republish rotation path quick to test.
syncFrequency: 10s
resolvConf: /etc/resolv.conf
serializeImagePulls: false
containerLogMaxSize: 10Mi
`, kubeletPort, kubeletPort-2, filepath.Join(pkiDir, "kubelet-serving.crt"), filepath.Join(pkiDir, "kubelet-serving.key"), filepath.Join(pkiDir, "ca.crt"))
	return os.WriteFile(c.path("kubelet.yaml"), []byte(kubelet), 0o600)
}

const (
	bridgeName  = "rkye2e0"
	kubeletPort = 20250
)

// kubectl runs kubectl with the admin kubeconfig and returns its trimmed
// stdout; the error carries stderr.
func (c *Cluster) kubectl(ctx context.Context, args ...string) (string, error) {
	return c.kubectlIn(ctx, "", args...)
}

func (c *Cluster) kubectlIn(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.K8sBin, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig()}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return strings.TrimSpace(string(out)), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// ctr runs containerd's ctr against the cluster's containerd.
func (c *Cluster) ctr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.ContainerdSock(), "-n", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Down stops everything the cluster started and removes what it left in the
// kernel: the pods' processes (killed through their cgroups), containerd's
// shims, every mount under Dir (FUSE connections aborted first), the kubepods
// cgroups and the CNI bridge. It reports what it had to clean by force.
func (c *Cluster) Down() []string {
	var notes []string
	stopOrder := []string{"kubelet", "kube-scheduler", "kube-controller-manager"}
	for _, n := range stopOrder {
		for _, p := range c.procs {
			if p.name == n {
				p.stop(10 * time.Second)
			}
		}
	}
	if n := killCgroup("kubepods"); n > 0 {
		notes = append(notes, fmt.Sprintf("killed %d pod processes", n))
	}
	if n := c.killShims(); n > 0 {
		notes = append(notes, fmt.Sprintf("killed %d containerd shims", n))
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(10 * time.Second)
	}
	c.procs = nil
	if n := unmountUnder(c.Dir); n > 0 {
		notes = append(notes, fmt.Sprintf("unmounted %d mounts under %s", n, c.Dir))
	}
	removeCgroup("kubepods")
	if err := exec.Command("ip", "link", "del", bridgeName).Run(); err == nil {
		notes = append(notes, "removed bridge "+bridgeName)
	}
	return notes
}

// killShims kills the containerd-shim processes serving this containerd
// (matched by its socket address on their command line).
func (c *Cluster) killShims() int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 0 && strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") && strings.Contains(string(cmdline), c.ContainerdSock()) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				n++
			}
		}
	}
	return n
}

// cgroupRoots are the cgroup v1 hierarchies kubelet's cgroupfs driver uses.
var cgroupRoots = []string{"pids", "cpu,cpuacct", "memory", "cpuset", "freezer", "blkio", "devices", "hugetlb", "systemd"}

// killCgroup SIGKILLs every process in /sys/fs/cgroup/pids/<name>/** and
// returns how many it signalled.
func killCgroup(name string) int {
	n := 0
	for round := 0; round < 5; round++ {
		found := 0
		_ = filepath.WalkDir(filepath.Join("/sys/fs/cgroup/pids", name), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return nil //nolint:nilerr // a cgroup that vanished mid-walk is fine
			}
			if d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p) //nolint:gosec // cgroupfs under /sys, not a user-controlled tree
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && syscall.Kill(pid, syscall.SIGKILL) == nil {
					found++
				}
			}
			return nil
		})
		n += found
		if found == 0 {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	return n
}

// removeCgroup removes the empty cgroup directories kubelet made.
func removeCgroup(name string) {
	for _, r := range cgroupRoots {
		root := filepath.Join("/sys/fs/cgroup", r, name)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
	}
}

// mountsUnder lists the mount points at or below dir, deepest first, with
// their filesystem type.
func mountsUnder(dir string) [][2]string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][2]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		mp := unescapeMount(fields[4])
		fstype := ""
		for i, x := range fields {
			if x == "-" && i+1 < len(fields) {
				fstype = fields[i+1]
			}
		}
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, [2]string{mp, fstype})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i][0]) > len(out[j][0]) })
	return out
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// unmountUnder detaches every mount below dir (repeatedly: kubelet's
// shared bind mount of its root propagates copies).
func unmountUnder(dir string) int {
	n := 0
	for round := 0; round < 10; round++ {
		ms := mountsUnder(dir)
		if len(ms) == 0 {
			break
		}
		for _, m := range ms {
			if strings.HasPrefix(m[1], "fuse") {
				abortFUSE(m[0])
			}
			if syscall.Unmount(m[0], syscall.MNT_DETACH) == nil {
				n++
			}
		}
	}
	return n
}

// abortFUSE aborts the FUSE connection of mount point mp, so that nothing
// waits on a server that is gone.
func abortFUSE(mp string) {
	if _, err := os.Stat("/sys/fs/fuse/connections/"); err == nil {
		_ = syscall.Mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, "") // EBUSY when mounted already
	}
	// The device number of a FUSE mount is the connection's fusectl name;
	// stat could hang on a dead server, so read it from mountinfo instead.
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == mp {
			if _, minor, ok := strings.Cut(fields[2], ":"); ok {
				_ = os.WriteFile("/sys/fs/fuse/connections/"+minor+"/abort", []byte("1"), 0o200)
			}
			return
		}
	}
}

// waitFor polls f every 250 ms until it returns nil or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = f(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s: %w", timeout, what, last)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
