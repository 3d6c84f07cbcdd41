package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	registerv1 "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	"k8s.io/mount-utils"

	"rekey.dev/rekey/internal/contract"
	"rekey.dev/rekey/internal/csiproc"
	"rekey.dev/rekey/internal/keys"
)

// volumeID is the PV's volume handle.
const volumeID = "demo-pv"

// kubelet plays kubelet's part towards the node plugin: plugin
// registration, then CSI calls on the endpoint the plugin announced.
type kubelet struct {
	root     string
	conn     *grpc.ClientConn
	node     csi.NodeClient
	identity csi.IdentityClient
}

// pod is one pod's directories below the kubelet root, as kubelet lays
// them out, and the identity podInfoOnMount passes to the driver.
type pod struct {
	uid, name, namespace, serviceAccount string
	target                               string // the CSI volume's mount point
	sockets                              string // the rekey-sockets emptyDir
	secret                               string // the projected Secret for the sidecar
}

// register does what kubelet's plugin watcher does with the driver's
// registration socket: GetInfo, then NotifyRegistrationStatus. It returns
// the announced plugin info.
func register(ctx context.Context, root string) (*registerv1.PluginInfo, error) {
	path := filepath.Join(root, "plugins_registry", contract.DriverName+"-reg.sock")
	conn, err := csiproc.Dial(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	c := registerv1.NewRegistrationClient(conn)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		info, err := c.GetInfo(ctx, &registerv1.InfoRequest{})
		if err == nil {
			if info.GetName() != contract.DriverName || info.GetType() != registerv1.CSIPlugin {
				return nil, fmt.Errorf("registration announces %s plugin %q, want CSIPlugin %q", info.GetType(), info.GetName(), contract.DriverName)
			}
			_, err = c.NotifyRegistrationStatus(ctx, &registerv1.RegistrationStatus{PluginRegistered: true})
			if err != nil {
				return nil, fmt.Errorf("NotifyRegistrationStatus: %w", err)
			}
			return info, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("plugin registration at %s: %w", path, errors.Join(ctx.Err(), err))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// newKubelet connects to the CSI endpoint and checks it the way kubelet
// and the CSI sidecars do: plugin info, Probe, node info and capabilities.
// It returns the lines to print.
func newKubelet(ctx context.Context, root, endpoint string) (_ *kubelet, _ []string, err error) {
	conn, err := csiproc.Dial(endpoint)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			_ = conn.Close()
		}
	}()
	k := &kubelet{root: root, conn: conn, node: csi.NewNodeClient(conn), identity: csi.NewIdentityClient(conn)}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pi, err := k.identity.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("GetPluginInfo: %w", err)
	}
	probe, err := k.identity.Probe(ctx, &csi.ProbeRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("probe: %w", err)
	}
	if probe.GetReady() != nil && !probe.GetReady().GetValue() {
		return nil, nil, errors.New("probe: the plugin is not ready")
	}
	ni, err := k.node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("NodeGetInfo: %w", err)
	}
	caps, err := k.node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("NodeGetCapabilities: %w", err)
	}
	rpcs := "none (no staging, no stats)"
	if len(caps.GetCapabilities()) > 0 {
		rpcs = fmt.Sprint(caps.GetCapabilities())
	}
	return k, []string{
		fmt.Sprintf("CSI %s %s: Probe ready, NodeGetInfo node %q, node capabilities %s", pi.GetName(), pi.GetVendorVersion(), ni.GetNodeId(), rpcs),
	}, nil
}

func (k *kubelet) close() { _ = k.conn.Close() }

// newPod lays out a pod's volume directories the way kubelet does before
// it calls NodePublishVolume: the CSI volume's parent directory (the driver
// creates the mount point), the rekey-sockets emptyDir, and the projected
// Secret the webhook adds for the sidecar.
func newPod(root string) (*pod, error) {
	uid, err := newUID()
	if err != nil {
		return nil, err
	}
	vols := filepath.Join(root, "pods", uid, "volumes")
	p := &pod{uid: uid, name: "demo-app", namespace: "default", serviceAccount: "demo-app",
		target:  filepath.Join(vols, "kubernetes.io~csi", volumeID, "mount"),
		sockets: filepath.Join(vols, "kubernetes.io~empty-dir", contract.SocketVolumeName),
		secret:  filepath.Join(vols, "kubernetes.io~projected", contract.SourceVolumePrefix+"0"),
	}
	for _, d := range []string{filepath.Dir(p.target), p.sockets, p.secret} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("pod directories: %w", err)
		}
	}
	return p, nil
}

// publishRequest is what kubelet sends for the pod's PV: the
// PV's attributes plus podInfoOnMount keys, and the Secret's keys from
// nodePublishSecretRef.
func publishRequest(p *pod, s3URL string, ak keys.Keys) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{
		VolumeId:   volumeID,
		TargetPath: p.target,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		},
		VolumeContext: map[string]string{
			contract.VolumeAttrBucket:      bucket,
			contract.VolumeAttrURL:         s3URL,
			contract.VolumeAttrOtherOpts:   "-o use_path_request_style",
			contract.PodInfoName:           p.name,
			contract.PodInfoNamespace:      p.namespace,
			contract.PodInfoUID:            p.uid,
			contract.PodInfoServiceAccount: p.serviceAccount,
			contract.PodInfoEphemeral:      "false",
		},
		Secrets: secretData(ak),
	}
}

// publish calls NodePublishVolume and returns how long it took.
func (k *kubelet) publish(ctx context.Context, req *csi.NodePublishVolumeRequest) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	start := time.Now()
	_, err := k.node.NodePublishVolume(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("NodePublishVolume: %w", err)
	}
	return time.Since(start), nil
}

// unpublish calls NodeUnpublishVolume and returns how long it took.
func (k *kubelet) unpublish(ctx context.Context, p *pod) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	start := time.Now()
	_, err := k.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: volumeID, TargetPath: p.target})
	if err != nil {
		return 0, fmt.Errorf("NodeUnpublishVolume: %w", err)
	}
	return time.Since(start), nil
}

// secretData is the Secret's data as kubelet passes it.
func secretData(k keys.Keys) map[string]string {
	return map[string]string{contract.SecretKeyAkID: k.AccessKeyID, contract.SecretKeyAkSecret: k.SecretAccessKey}
}

// newUID returns a random RFC 4122 version 4 UUID, like a pod UID.
func newUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("pod uid: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]), nil
}

// fuseWaiting tells how many requests wait for an answer on the FUSE
// connection mounted at path (/sys/fs/fuse/connections).
func fuseWaiting(path string) string {
	mps, _ := mount.ParseMountInfo("/proc/self/mountinfo")
	for _, m := range mps {
		if m.MountPoint != path {
			continue
		}
		conn := filepath.Join("/sys/fs/fuse/connections", strconv.Itoa(m.Minor))
		b, err := os.ReadFile(filepath.Join(conn, "waiting"))
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("%s requests waiting on %s", strings.TrimSpace(string(b)), conn)
	}
	return path + " is not mounted"
}

// isMountPoint reports whether path is a mount point, from mountinfo (a
// stat of a FUSE mount could block).
func isMountPoint(path string) bool {
	mps, _ := mount.ParseMountInfo("/proc/self/mountinfo")
	for _, m := range mps {
		if m.MountPoint == path {
			return true
		}
	}
	return false
}
