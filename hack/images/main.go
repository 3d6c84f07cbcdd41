// Command images builds rekey's container images as image tarballs from the
// static binaries in bin/, without a Docker daemon or registry: one layer of
// the binaries plus a distroless-style root (passwd/group with nonroot 65532,
// CA certificates, /tmp), an image config with entrypoint, user and working
// directory, written with go-containerregistry's tarball.WriteToFile so that
// `ctr images import`, `docker load` and `podman load` take it.
//
//	go run ./hack/images [-version v0.1.0] [-bin bin] [-out bin/images]
//	    [-extra ref=binary[:user]]...
//
// The product images (build/Dockerfile builds the same ones with Docker):
//
//	<registry>/rekey-csi:<version>      /rekey-csi, /rekey-fuse, /rekey-controller; root (the node plugin is privileged; rekey-controller runs as 65532)
//	<registry>/rekey-webhook:<version>  /rekey-webhook; 65532:65532
//	<registry>/rekey-sidecar:<version>  /rekey-sidecar; 65532:65532
//
// -extra adds a single-binary image (the e2e test's pause and load
// generator); the user defaults to 65532.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// spec is one image: binaries copied to / and the config.
type spec struct {
	ref        string
	file       string // output file name without .tar
	binaries   []string
	entrypoint []string
	user       string
}

const nonroot = "65532:65532"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run() error {
	version := flag.String("version", "", "image tag (default: contents of ./VERSION)")
	registry := flag.String("registry", "ghcr.io/rekey-dev", "image name prefix")
	binDir := flag.String("bin", "bin", "directory of the static binaries")
	out := flag.String("out", "bin/images", "output directory for <name>.tar")
	only := flag.String("only", "", "comma-separated product images to build (default all; \"none\" for only -extra)")
	var extras []string
	flag.Func("extra", "ref=binary[:user] — an extra single-binary image (repeatable)", func(s string) error {
		extras = append(extras, s)
		return nil
	})
	flag.Parse()

	if *version == "" {
		b, err := os.ReadFile("VERSION")
		if err != nil {
			return fmt.Errorf("no -version and no VERSION file: %w", err)
		}
		*version = strings.TrimSpace(string(b))
	}
	specs := []spec{
		{ref: *registry + "/rekey-csi:" + *version, file: "rekey-csi", binaries: []string{"rekey-csi", "rekey-fuse", "rekey-controller"}, entrypoint: []string{"/rekey-csi"}, user: "0:0"},
		{ref: *registry + "/rekey-webhook:" + *version, file: "rekey-webhook", binaries: []string{"rekey-webhook"}, entrypoint: []string{"/rekey-webhook"}, user: nonroot},
		{ref: *registry + "/rekey-sidecar:" + *version, file: "rekey-sidecar", binaries: []string{"rekey-sidecar"}, entrypoint: []string{"/rekey-sidecar"}, user: nonroot},
	}
	if *only != "" {
		keep := map[string]bool{}
		for _, n := range strings.Split(*only, ",") {
			keep[n] = true
		}
		var sel []spec
		for _, s := range specs {
			if keep[s.file] {
				sel = append(sel, s)
			}
		}
		specs = sel
	}
	for i := range specs {
		for j, b := range specs[i].binaries {
			specs[i].binaries[j] = filepath.Join(*binDir, b)
		}
	}
	for _, e := range extras {
		s, err := parseExtra(e)
		if err != nil {
			return err
		}
		specs = append(specs, s)
	}
	if err := os.MkdirAll(*out, 0o750); err != nil {
		return err
	}
	for _, s := range specs {
		path := filepath.Join(*out, s.file+".tar")
		if err := build(s, path); err != nil {
			return fmt.Errorf("%s: %w", s.ref, err)
		}
		fmt.Printf("%s\t%s\n", path, s.ref)
	}
	return nil
}

// parseExtra reads ref=binary[:user].
func parseExtra(s string) (spec, error) {
	ref, bin, ok := strings.Cut(s, "=")
	if !ok || ref == "" || bin == "" {
		return spec{}, fmt.Errorf("-extra %q: want ref=binary[:user]", s)
	}
	user := nonroot
	if b, u, ok := strings.Cut(bin, ":"); ok {
		bin, user = b, u
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return spec{}, err
	}
	file := strings.ReplaceAll(strings.TrimPrefix(r.Context().RepositoryStr(), "library/"), "/", "_")
	base := filepath.Base(bin)
	return spec{ref: ref, file: file, binaries: []string{bin}, entrypoint: []string{"/" + base}, user: user}, nil
}

func build(s spec, path string) error {
	ref, err := name.NewTag(s.ref)
	if err != nil {
		return err
	}
	layerTar, err := rootfs(s.binaries)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = s.entrypoint
	cf.Config.User = s.user
	cf.Config.WorkingDir = "/"
	cf.Config.Env = []string{"PATH=/", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.source":  "https://github.com/rekey-dev/rekey",
		"org.opencontainers.image.version": ref.TagStr(),
		"org.opencontainers.image.title":   ref.Context().RepositoryStr(),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// epoch is every timestamp in the images, so a rebuild of the same binaries
// gives the same image.
var epoch = time.Unix(0, 0).UTC()

// rootfs is the distroless-style root: the binaries at /, /etc/passwd and
// /etc/group with root and nonroot (65532), the host's CA bundle (for
// HTTPS S3 and STS endpoints), and /tmp.
func rootfs(binaries []string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: epoch})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []string{"etc/", "etc/ssl/", "etc/ssl/certs/", "home/", "home/nonroot/", "run/", "var/", "var/run/"} {
		if err := dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := dir("tmp/", 0o1777); err != nil {
		return nil, err
	}
	if err := file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")); err != nil {
		return nil, err
	}
	if err := file("etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n")); err != nil {
		return nil, err
	}
	ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if len(ca) > 0 {
		if err := file("etc/ssl/certs/ca-certificates.crt", 0o644, ca); err != nil {
			return nil, err
		}
	}
	for _, b := range binaries {
		data, err := os.ReadFile(b)
		if err != nil {
			return nil, err
		}
		if err := file(filepath.Base(b), 0o755, data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
