// Package kubetest runs a real Kubernetes control plane for tests: etcd
// (Debian's etcd-server) and kube-apiserver (built from the module proxy by
// apiserver/build.sh), both on 127.0.0.1, with RBAC and token auth. No
// kubelet or controllers run: tests write pods and their statuses.
package kubetest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// Require skips the test when the control plane's binaries are missing, or
// fails it under OBSD_REQUIRE_BPF=1 (CI installs and builds them).
func Require(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	miss := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("OBSD_REQUIRE_BPF") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	apiserver = os.Getenv("OBSD_KUBE_APISERVER")
	if apiserver == "" {
		var err error
		if apiserver, err = CachedAPIServer(); err != nil {
			miss("kube-apiserver: %v", err)
		}
	}
	if _, err := os.Stat(apiserver); err != nil {
		miss("kube-apiserver not built (run internal/test/kube/apiserver/build.sh): %v", err)
	}
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		miss("etcd not installed (apt-get install etcd-server): %v", err)
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		miss("kubectl not installed (apt-get install kubernetes-client): %v", err)
	}
	return apiserver, etcd
}

// CachedAPIServer is where apiserver/build.sh puts the binary.
func CachedAPIServer() (string, error) {
	mod, err := os.ReadFile(filepath.Join(e2e.RepoRoot(), "internal", "test", "kube", "apiserver", "go.mod"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(mod), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "require" && f[1] == "k8s.io/kubernetes" {
			cache := os.Getenv("OBSD_CACHE")
			if cache == "" {
				cache = "/var/cache/obsd"
			}
			return filepath.Join(cache, "kube-apiserver-"+f[2]), nil
		}
	}
	return "", fmt.Errorf("no k8s.io/kubernetes requirement in the wrapper go.mod")
}

// Cluster is a running control plane.
type Cluster struct {
	Dir        string
	URL        string // https://127.0.0.1:port
	Kubeconfig string // admin (system:masters) kubeconfig
	Client     kubernetes.Interface

	apiserverBin string
	apiserver    *exec.Cmd
	apiDone      <-chan struct{}
	apiArgs      []string
	port         int
}

// Start runs etcd and kube-apiserver until the test ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	apiserverBin, etcdBin := Require(t)
	dir := t.TempDir()
	etcdPort, peerPort, apiPort := freePort(t), freePort(t), freePort(t)
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	startProc(t, filepath.Join(dir, "etcd.log"), etcdBin,
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL, "--log-level", "warn")

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "sa.key")
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	token := randHex(16)
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokens, []byte(token+",admin,admin-uid,system:masters\n"))

	c := &Cluster{Dir: dir, URL: "https://127.0.0.1:" + strconv.Itoa(apiPort), apiserverBin: apiserverBin, port: apiPort}
	c.apiArgs = []string{
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(apiPort),
		"--cert-dir", filepath.Join(dir, "certs"),
		"--token-auth-file", tokens,
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", keyFile,
		"--service-account-signing-key-file", keyFile,
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--endpoint-reconciler-type", "none",
		// No controller manager creates the default ServiceAccount that
		// admission would mount into every pod.
		"--disable-admission-plugins", "ServiceAccount",
		"--v", "1",
	}
	c.StartAPIServer(t)
	c.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	writeFile(t, c.Kubeconfig, []byte(Kubeconfig(c.URL, token)))
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return c
}

// Kubeconfig is a kubeconfig for url authenticating with a bearer token.
func Kubeconfig(url, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: user
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: user}
current-context: test
`, url, token)
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer) and
// waits until it is ready.
func (c *Cluster) StartAPIServer(t testing.TB) {
	t.Helper()
	var done <-chan struct{}
	c.apiserver, done = startProc(t, filepath.Join(c.Dir, "apiserver.log"), c.apiserverBin, c.apiArgs...)
	c.apiDone = done
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(c.Dir, "apiserver.log"))
			t.Fatalf("kube-apiserver exited:\n%s", tail(log))
		default:
		}
		resp, err := client.Get(c.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			// Anonymous requests to /readyz are allowed by the default
			// system:public-info-viewer role.
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(c.Dir, "apiserver.log"))
	t.Fatalf("kube-apiserver not ready in 3 minutes:\n%s", tail(log))
}

// StopAPIServer stops kube-apiserver, leaving etcd and the data.
func (c *Cluster) StopAPIServer(t testing.TB) {
	t.Helper()
	c.apiserver.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.apiDone:
	case <-time.After(30 * time.Second):
		c.apiserver.Process.Kill()
		<-c.apiDone
	}
}

// Kubectl runs kubectl as admin and returns its combined output.
func (c *Cluster) Kubectl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return KubectlAs(t, c.Kubeconfig, args...)
}

// KubectlAs runs kubectl with kubeconfig and returns its combined output.
func KubectlAs(t testing.TB, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startProc starts bin with its output in logFile; the channel is closed
// when it has exited (one goroutine waits for it: exec.Cmd.Wait must be
// called once). It is killed at the test's end.
func startProc(t testing.TB, logFile, bin string, args ...string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	log, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		log.Close()
		if t.Failed() {
			data, _ := os.ReadFile(logFile)
			t.Logf("%s:\n%s", filepath.Base(logFile), tail(data))
		}
	})
	return cmd, done
}

func tail(b []byte) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeFile(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// NewContainerID returns a random 64-hex-digit container ID.
func NewContainerID() string { return randHex(32) }
