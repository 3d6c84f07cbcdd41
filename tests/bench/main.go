// Command bench measures rekey-fuse side by side with s3fs, rclone mount and
// a raw aws-sdk-go-v2 client against the same local S3 server (MinIO, and
// versitygw if built), and prints one table of medians with rekey/peer
// ratios. It needs root (mounts, drop_caches) and /dev/fuse. Run it with
// `make bench` (after `make build`).
//
// With -compat (BENCH_COMPAT=1) it runs the POSIX behaviour cases of
// compat.go on each mount instead and prints what each file system did.
//
// Knobs (environment): QUICK=1 runs small sizes once (64 MiB, 100 small
// files, ls 500); BENCH_BIG_MIB, BENCH_SMALL, BENCH_LS and BENCH_REPEAT set
// each size; BENCH_TOOLS (rekey,s3fs,rclone,raw, and geesefs if asked for)
// and BENCH_SERVERS (minio,versitygw) pick what runs; REKEY_FUSE_BIN,
// REKEY_VERSITYGW_BIN and GEESEFS_BIN point at binaries. s3fs and rclone
// are installed with apt if missing; geesefs has no Debian package and no
// module on the Go proxy, so it runs only when GEESEFS_BIN names a binary
// built from its repository (docs/performance.md, "geesefs").
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

const (
	accessKey = "benchadmin"
	secretKey = "benchadmin-secret-key"
	bucket    = "bench"
)

// sizes of one run; QUICK=1 shrinks them for development.
type sizes struct {
	bigMiB  int // write/read 1 GiB
	small   int // 1000×4 KiB
	listing int // ls 10k
	repeat  int
}

var phases = []string{"write big", "read big", "small write+fsync", "small read", "ls", "ls -l"}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	sz := sizes{bigMiB: 1024, small: 1000, listing: 10000, repeat: 3}
	if os.Getenv("QUICK") == "1" {
		sz = sizes{bigMiB: 64, small: 100, listing: 500, repeat: 1}
	}
	sz.bigMiB = envInt("BENCH_BIG_MIB", sz.bigMiB)
	sz.small = envInt("BENCH_SMALL", sz.small)
	sz.listing = envInt("BENCH_LS", sz.listing)
	sz.repeat = envInt("BENCH_REPEAT", sz.repeat)
	defTools := "rekey,s3fs,rclone,raw"
	if os.Getenv("GEESEFS_BIN") != "" {
		defTools = "rekey,geesefs,s3fs,rclone,raw"
	}
	tools := flag.String("tools", envStr("BENCH_TOOLS", defTools), "comma-separated: rekey,s3fs,rclone,raw,geesefs (default adds geesefs when GEESEFS_BIN is set)")
	servers := flag.String("servers", envStr("BENCH_SERVERS", "minio,versitygw"), "comma-separated: minio,versitygw (skipped if not built)")
	rekeyBin := flag.String("rekey-fuse", envStr("REKEY_FUSE_BIN", "bin/rekey-fuse"), "rekey-fuse binary")
	compat := flag.Bool("compat", os.Getenv("BENCH_COMPAT") == "1", "run the POSIX behaviour cases on each mount instead of timing")
	flag.Parse()
	if os.Geteuid() != 0 {
		return errors.New("needs root (FUSE mounts and drop_caches)")
	}
	work, err := os.MkdirTemp("", "rekey-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	for _, server := range strings.Split(*servers, ",") {
		srv, err := startServer(server, work)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: skipping %s: %v\n", server, err)
			continue
		}
		if *compat {
			err = compatServer(srv, strings.Split(*tools, ","), *rekeyBin, work)
		} else {
			err = benchServer(srv, sz, strings.Split(*tools, ","), *rekeyBin, work)
		}
		srv.stop()
		if err != nil {
			return err
		}
	}
	return nil
}

func benchServer(srv *server, sz sizes, tools []string, rekeyBin, work string) error {
	ctx := context.Background()
	api := newClient(srv.endpoint)
	if _, err := api.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	fmt.Fprintf(os.Stderr, "bench: %s: putting %d objects for the listing\n", srv.name, sz.listing)
	if err := populate(ctx, api, "lsdir/", sz.listing); err != nil {
		return err
	}
	results := map[string]map[string][]time.Duration{}
	var order []string
	var rss string
	for _, tool := range tools {
		tool = strings.TrimSpace(tool)
		res := map[string][]time.Duration{}
		var err error
		switch tool {
		case "raw":
			err = benchRaw(ctx, api, sz, res)
		case "rekey", "s3fs", "rclone", "geesefs":
			var m *mount
			m, err = startMount(tool, srv, rekeyBin, work)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: skipping %s: %v\n", tool, err)
				continue
			}
			idle := m.rssKiB()
			err = benchMount(m.dir, tool, sz, res)
			if tool == "rekey" {
				rss = fmt.Sprintf("rekey-fuse RSS: idle %.1f MiB, peak %.1f MiB (VmHWM)", float64(idle)/1024, float64(m.peakKiB())/1024)
			}
			m.stop()
		default:
			err = fmt.Errorf("unknown tool %q", tool)
		}
		if err != nil {
			return fmt.Errorf("%s on %s: %w", tool, srv.name, err)
		}
		results[tool] = res
		order = append(order, tool)
	}
	printTable(srv.name, sz, order, results)
	if rss != "" {
		fmt.Println(rss)
	}
	fmt.Println()
	return nil
}

func compatServer(srv *server, tools []string, rekeyBin, work string) error {
	api := newClient(srv.endpoint)
	if _, err := api.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	results := map[string][]string{}
	var order []string
	for _, tool := range tools {
		tool = strings.TrimSpace(tool)
		if tool == "raw" {
			continue
		}
		m, err := startMount(tool, srv, rekeyBin, work)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: skipping %s: %v\n", tool, err)
			continue
		}
		results[tool] = runCompat(m.dir, tool)
		order = append(order, tool)
		m.stop()
	}
	printCompat(srv.name, order, results)
	return nil
}

// ---- servers ----

type server struct {
	name, endpoint string
	cmd            *exec.Cmd
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

func startServer(name, work string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	data, err := os.MkdirTemp(work, name+"-data-")
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	switch name {
	case "minio":
		bin, err := scriptOutput("tests/s3servers/build-minio.sh")
		if err != nil {
			return nil, err
		}
		cmd = exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", "127.0.0.1:0", data)
		cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+accessKey, "MINIO_ROOT_PASSWORD="+secretKey, "MINIO_BROWSER=off")
	case "versitygw":
		bin := os.Getenv("REKEY_VERSITYGW_BIN")
		if bin == "" {
			if bin, err = scriptOutput("tests/s3servers/build-versitygw.sh"); err != nil {
				return nil, err
			}
		}
		cmd = exec.Command(bin, "--access", accessKey, "--secret", secretKey, "--port", addr, "posix", data)
	default:
		return nil, fmt.Errorf("unknown server %q", name)
	}
	if os.Getenv("BENCH_VERBOSE") == "1" { // versitygw logs every request
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{name: name, endpoint: "http://" + addr, cmd: cmd}
	api := newClient(s.endpoint)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := api.ListBuckets(ctx, &s3.ListBucketsInput{})
		cancel()
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s did not answer: %w", name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func scriptOutput(script string) (string, error) {
	out, err := exec.Command(script).Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func newClient(endpoint string) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(endpoint),
		Region:       "us-east-1",
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: accessKey, SecretAccessKey: secretKey}, nil
		}),
		HTTPClient: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 64, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		}},
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

func populate(ctx context.Context, api *s3.Client, prefix string, n int) error {
	return parallelN(n, 32, func(i int) error {
		_, err := api.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(bucket), Key: aws.String(fmt.Sprintf("%sf%05d", prefix, i)),
			Body: bytes.NewReader([]byte("x")), ContentLength: aws.Int64(1),
		})
		return err
	})
}

func parallelN(n, workers int, fn func(int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	for range min(workers, max(n, 1)) {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// ---- mounts ----

type mount struct {
	tool, dir string
	cmd       *exec.Cmd
}

func startMount(tool string, srv *server, rekeyBin, work string) (*mount, error) {
	dir, err := os.MkdirTemp(work, tool+"-mnt-")
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	switch tool {
	case "rekey":
		keys := filepath.Join(work, "keys.json")
		b, _ := json.Marshal(map[string]string{"accessKeyId": accessKey, "secretAccessKey": secretKey})
		if err := os.WriteFile(keys, b, 0o600); err != nil {
			return nil, err
		}
		staging, err := os.MkdirTemp(work, "rekey-staging-")
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(rekeyBin); err != nil {
			return nil, fmt.Errorf("%s missing (make build)", rekeyBin)
		}
		cmd = exec.Command(rekeyBin, "--endpoint", srv.endpoint, "--bucket", bucket, "--mountpoint", dir,
			"--keys-file", keys, "--staging-dir", staging, "-o", "use_path_request_style")
	case "s3fs":
		if err := ensurePackage("s3fs", "s3fs"); err != nil {
			return nil, err
		}
		passwd := filepath.Join(work, "s3fs.passwd")
		if err := os.WriteFile(passwd, []byte(accessKey+":"+secretKey+"\n"), 0o600); err != nil {
			return nil, err
		}
		cmd = exec.Command("s3fs", bucket, dir, "-f", "-o",
			"url="+srv.endpoint+",use_path_request_style,passwd_file="+passwd+"")
	case "rclone":
		if err := ensurePackage("rclone", "rclone"); err != nil {
			return nil, err
		}
		cmd = exec.Command("rclone", "mount", ":s3:"+bucket, dir, "--use-server-modtime")
		env := slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "AWS_CA_BUNDLE=") })
		cmd.Env = append(env, "RCLONE_S3_PROVIDER=Minio", "RCLONE_S3_ENDPOINT="+srv.endpoint,
			"RCLONE_S3_ACCESS_KEY_ID="+accessKey, "RCLONE_S3_SECRET_ACCESS_KEY="+secretKey, "RCLONE_CONFIG=/dev/null")
	case "geesefs":
		bin := os.Getenv("GEESEFS_BIN")
		if bin == "" {
			return nil, errors.New("GEESEFS_BIN is not set (no package or module to install it from)")
		}
		// Keys in a shared-credentials file; the environment names only
		// the file.
		creds := filepath.Join(work, "geesefs.credentials")
		if err := os.WriteFile(creds, []byte("[default]\naws_access_key_id = "+accessKey+"\naws_secret_access_key = "+secretKey+"\n"), 0o600); err != nil {
			return nil, err
		}
		cmd = exec.Command(bin, "-f", "--endpoint", srv.endpoint, bucket, dir)
		env := slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "AWS_") })
		cmd.Env = append(env, "AWS_SHARED_CREDENTIALS_FILE="+creds)
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	var logBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	m := &mount{tool: tool, dir: dir, cmd: cmd}
	deadline := time.Now().Add(20 * time.Second)
	for !isMounted(dir) {
		if time.Now().After(deadline) {
			m.stop()
			return nil, fmt.Errorf("%s did not mount: %s", tool, logBuf.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // let it settle before the idle RSS sample
	return m, nil
}

func ensurePackage(bin, pkg string) error {
	if _, err := exec.LookPath(bin); err == nil {
		return nil
	}
	fmt.Fprintf(os.Stderr, "bench: installing %s with apt\n", pkg)
	cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", pkg)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

func isMounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

func (m *mount) status(field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

func (m *mount) rssKiB() int  { return m.status("VmRSS") }
func (m *mount) peakKiB() int { return m.status("VmHWM") }

func (m *mount) stop() {
	_ = exec.Command("umount", m.dir).Run()
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		<-done
	}
	_ = exec.Command("umount", "-l", m.dir).Run()
}

func dropCaches() {
	syscall.Sync()
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
}

// benchMount runs every phase sz.repeat times through the mount at dir.
func benchMount(dir, tool string, sz sizes, res map[string][]time.Duration) error {
	chunk := make([]byte, 1<<20)
	_, _ = rand.Read(chunk)
	small := make([]byte, 4096)
	_, _ = rand.Read(small)
	base := filepath.Join(dir, tool)
	if err := os.MkdirAll(filepath.Join(base, "small"), 0o755); err != nil {
		return err
	}
	big := filepath.Join(base, "big")
	lsDir := filepath.Join(dir, "lsdir")
	for r := range sz.repeat {
		fmt.Fprintf(os.Stderr, "bench: %s run %d/%d\n", tool, r+1, sz.repeat)
		steps := []func() error{
			func() error { // write big
				f, err := os.Create(big)
				if err != nil {
					return err
				}
				for range sz.bigMiB {
					if _, err := f.Write(chunk); err != nil {
						f.Close()
						return err
					}
				}
				return f.Close()
			},
			func() error { // read big
				f, err := os.Open(big)
				if err != nil {
					return err
				}
				defer f.Close()
				n, err := io.CopyBuffer(io.Discard, f, make([]byte, 1<<20))
				if err == nil && n != int64(sz.bigMiB)<<20 {
					err = fmt.Errorf("read %d bytes, want %d", n, int64(sz.bigMiB)<<20)
				}
				return err
			},
			func() error { // small write+fsync
				for i := range sz.small {
					f, err := os.Create(filepath.Join(base, "small", fmt.Sprintf("f%04d", i)))
					if err != nil {
						return err
					}
					_, err = f.Write(small)
					if err == nil {
						err = f.Sync()
					}
					if cerr := f.Close(); err == nil {
						err = cerr
					}
					if err != nil {
						return err
					}
				}
				return nil
			},
			func() error { // small read
				buf := make([]byte, 8192)
				for i := range sz.small {
					f, err := os.Open(filepath.Join(base, "small", fmt.Sprintf("f%04d", i)))
					if err != nil {
						return err
					}
					n, err := io.ReadFull(f, buf)
					f.Close()
					if n != len(small) || (err != nil && !errors.Is(err, io.ErrUnexpectedEOF)) {
						return fmt.Errorf("small read: %d bytes: %w", n, err)
					}
				}
				return nil
			},
			func() error { // ls
				f, err := os.Open(lsDir)
				if err != nil {
					return err
				}
				names, err := f.Readdirnames(-1)
				f.Close()
				if err == nil && len(names) != sz.listing {
					err = fmt.Errorf("ls: %d entries, want %d", len(names), sz.listing)
				}
				return err
			},
			func() error { // ls -l
				ents, err := os.ReadDir(lsDir)
				if err != nil {
					return err
				}
				for _, e := range ents {
					if _, err := e.Info(); err != nil {
						return err
					}
				}
				if len(ents) != sz.listing {
					return fmt.Errorf("ls -l: %d entries, want %d", len(ents), sz.listing)
				}
				return nil
			},
		}
		for i, step := range steps {
			dropCaches()
			start := time.Now()
			if err := step(); err != nil {
				return fmt.Errorf("%s: %w", phases[i], err)
			}
			res[phases[i]] = append(res[phases[i]], time.Since(start))
		}
	}
	return nil
}

// benchRaw runs the same phases with the SDK: parallel multipart upload and
// parallel ranged GETs (8 × 8 MiB) for the big object, one request per
// small object, ListObjectsV2 pages for ls.
func benchRaw(ctx context.Context, api *s3.Client, sz sizes, res map[string][]time.Duration) error {
	const part = 8 << 20
	data := make([]byte, part)
	_, _ = rand.Read(data)
	small := data[:4096]
	size := int64(sz.bigMiB) << 20
	key := "raw/big"
	for r := range sz.repeat {
		fmt.Fprintf(os.Stderr, "bench: raw run %d/%d\n", r+1, sz.repeat)
		steps := map[string]func() error{
			"write big": func() error {
				up, err := api.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: &key})
				if err != nil {
					return err
				}
				n := int((size + part - 1) / part)
				parts := make([]types.CompletedPart, n)
				err = parallelN(n, 8, func(i int) error {
					ln := min(int64(part), size-int64(i)*part)
					out, err := api.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: &key, UploadId: up.UploadId,
						PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(data[:ln]), ContentLength: aws.Int64(ln)})
					if err == nil {
						parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
					}
					return err
				})
				if err != nil {
					return err
				}
				_, err = api.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: &key,
					UploadId: up.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
				return err
			},
			"read big": func() error {
				n := int((size + part - 1) / part)
				return parallelN(n, 8, func(i int) error {
					off := int64(i) * part
					out, err := api.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: &key,
						Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, min(off+part, size)-1))})
					if err != nil {
						return err
					}
					defer out.Body.Close()
					_, err = io.Copy(io.Discard, out.Body)
					return err
				})
			},
			"small write+fsync": func() error {
				for i := range sz.small {
					if _, err := api.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(fmt.Sprintf("raw/small/f%04d", i)),
						Body: bytes.NewReader(small), ContentLength: aws.Int64(int64(len(small)))}); err != nil {
						return err
					}
				}
				return nil
			},
			"small read": func() error {
				for i := range sz.small {
					out, err := api.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(fmt.Sprintf("raw/small/f%04d", i))})
					if err != nil {
						return err
					}
					_, err = io.Copy(io.Discard, out.Body)
					out.Body.Close()
					if err != nil {
						return err
					}
				}
				return nil
			},
			"ls": func() error {
				p := s3.NewListObjectsV2Paginator(api, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("lsdir/"), Delimiter: aws.String("/")})
				n := 0
				for p.HasMorePages() {
					out, err := p.NextPage(ctx)
					if err != nil {
						return err
					}
					n += len(out.Contents)
				}
				if n != sz.listing {
					return fmt.Errorf("listed %d, want %d", n, sz.listing)
				}
				return nil
			},
		}
		for _, ph := range phases {
			step, ok := steps[ph]
			if !ok {
				continue
			}
			dropCaches()
			start := time.Now()
			if err := step(); err != nil {
				return fmt.Errorf("%s: %w", ph, err)
			}
			res[ph] = append(res[ph], time.Since(start))
		}
	}
	return nil
}

// ---- output ----

func median(ds []time.Duration) (time.Duration, bool) {
	if len(ds) == 0 {
		return 0, false
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2], true
}

func printTable(server string, sz sizes, order []string, results map[string]map[string][]time.Duration) {
	heads := []string{
		fmt.Sprintf("write %d MiB", sz.bigMiB), fmt.Sprintf("read %d MiB", sz.bigMiB),
		fmt.Sprintf("%d×4 KiB write+fsync", sz.small), fmt.Sprintf("%d×4 KiB read", sz.small),
		fmt.Sprintf("ls %d", sz.listing), fmt.Sprintf("ls -l %d", sz.listing),
	}
	fmt.Printf("\n### %s (median of %d, seconds; ratio = rekey/peer, < 1 means rekey is faster)\n\n", server, sz.repeat)
	fmt.Printf("| | %s |\n|---|%s\n", strings.Join(heads, " | "), strings.Repeat("---|", len(heads)))
	for _, tool := range order {
		cells := make([]string, len(phases))
		for i, ph := range phases {
			cells[i] = "–"
			if m, ok := median(results[tool][ph]); ok {
				cells[i] = fmt.Sprintf("%.2f", m.Seconds())
			}
		}
		fmt.Printf("| %s | %s |\n", tool, strings.Join(cells, " | "))
	}
	rk, ok := results["rekey"]
	if !ok {
		return
	}
	for _, tool := range order {
		if tool == "rekey" {
			continue
		}
		cells := make([]string, len(phases))
		for i, ph := range phases {
			cells[i] = "–"
			a, ok1 := median(rk[ph])
			b, ok2 := median(results[tool][ph])
			if ok1 && ok2 && b > 0 {
				cells[i] = fmt.Sprintf("%.2f", a.Seconds()/b.Seconds())
			}
		}
		fmt.Printf("| rekey/%s | %s |\n", tool, strings.Join(cells, " | "))
	}
	if m, ok := median(rk["write big"]); ok && m > 0 {
		fmt.Printf("\nrekey sequential write %.0f MiB/s", float64(sz.bigMiB)/m.Seconds())
		if r, ok := median(results["raw"]["write big"]); ok {
			fmt.Printf(" (%.0f %% of raw)", 100*r.Seconds()/m.Seconds())
		}
		if m, ok := median(rk["read big"]); ok && m > 0 {
			fmt.Printf(", sequential read %.0f MiB/s", float64(sz.bigMiB)/m.Seconds())
			if r, ok := median(results["raw"]["read big"]); ok {
				fmt.Printf(" (%.0f %% of raw)", 100*r.Seconds()/m.Seconds())
			}
		}
		fmt.Println()
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envStr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
