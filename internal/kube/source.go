// Package kube is obsd's Kubernetes mode: it watches the pods of this node
// that opt in by annotation, finds their containers' processes through
// /proc/PID/cgroup, and reports them to the agent like the process
// selectors do, labelled with their Kubernetes identity.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/obsd-dev/obsd/internal/discover"
)

// Options configure a Source. Only Node is required.
type Options struct {
	// Node is this node's name (NODE_NAME from the downward API): only pods
	// with spec.nodeName equal to it are watched.
	Node string
	// Kubeconfig is a kubeconfig file (KUBECONFIG); "" means the in-cluster
	// configuration (the pod's ServiceAccount token).
	Kubeconfig string
	// Client overrides both, for tests.
	Client kubernetes.Interface
	// ProcRoot is where procfs is mounted; "" means "/proc".
	ProcRoot string
	// Interval is the time between scans of /proc for the processes of
	// selected containers; 0 means 500ms. A pod change triggers a scan at
	// once.
	Interval time.Duration
	// Resync is the informer's resync period; 0 means 10 minutes.
	Resync time.Duration
	// Linger is how long the Kubernetes labels of a removed container stay
	// known, so its series keep them until the agent forgets them; 0
	// means 2 minutes.
	Linger time.Duration
	// Logger receives warnings and debug detail; nil means none.
	Logger *slog.Logger
	// Self is a pid never reported, obsd's own; 0 means os.Getpid().
	Self int
}

// Source reports the processes of the opted-in containers on this node. It
// implements the same contract as discover.Watcher: Added and Removed, one
// at a time from Run's goroutine, removals first.
type Source struct {
	o      Options
	client kubernetes.Interface
	log    *slog.Logger
	owners *owners
	kick   chan struct{}
	synced atomic.Bool
	scans  atomic.Uint64

	// Only Run's goroutine touches these.
	procs   map[int]*procInfo
	current map[procKey]discover.Process
	// refused holds containers with no Go process, reported once.
	refused map[string]bool
	// warned holds one-time warnings already logged, by text.
	warned map[string]bool

	mu sync.RWMutex
	// ident maps service_instance_id to the Kubernetes labels of its
	// series, for the Gatherer.
	ident map[string]*identity

	watchErrors prometheus.Counter
	api         *apiHealth
	containersG prometheus.Gauge
	podsG       prometheus.Gauge
}

type identity struct {
	labels  []labelPair
	removed time.Time // zero while the container is instrumented
}

type labelPair struct{ name, value string }

type procKey struct {
	pid   int
	start uint64
	exe   string
}

// procInfo caches what one process's procfs files said, for as long as
// its start time and command name (which exec changes) stay the same.
type procInfo struct {
	start uint64
	comm  string
	seen  uint64

	container string // container ID; "" for none
	cgErr     error

	exe     string
	goDone  bool
	isGo    bool
	env     map[string]string
	envDone bool
}

// New checks the options and builds the API client; nothing is watched
// until Run.
func New(o Options) (*Source, error) {
	if o.Node == "" {
		return nil, errors.New("kubernetes mode needs the node name: set NODE_NAME (downward API spec.nodeName)")
	}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.Interval <= 0 {
		o.Interval = 500 * time.Millisecond
	}
	if o.Resync <= 0 {
		o.Resync = 10 * time.Minute
	}
	if o.Linger <= 0 {
		o.Linger = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Self == 0 {
		o.Self = os.Getpid()
	}
	s := &Source{
		o:       o,
		client:  o.Client,
		log:     o.Logger,
		kick:    make(chan struct{}, 1),
		procs:   map[int]*procInfo{},
		current: map[procKey]discover.Process{},
		refused: map[string]bool{},
		warned:  map[string]bool{},
		ident:   map[string]*identity{},
		api:     newAPIHealth(o.Logger),
		watchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "obsd_kubernetes_watch_errors_total",
			Help: "Failed lists and watches of this node's pods that client-go reports (an API server refusing connections is retried with backoff up to 30 s without a report).",
		}),
		containersG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "obsd_kubernetes_containers",
			Help: "Running containers of opted-in pods on this node that obsd selected.",
		}),
		podsG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "obsd_kubernetes_pods",
			Help: "Pods on this node known to obsd's informer.",
		}),
	}
	if s.client == nil {
		cfg, err := restConfig(o.Kubeconfig)
		if err != nil {
			return nil, err
		}
		cfg.Wrap(s.api.wrap)
		if s.client, err = kubernetes.NewForConfig(cfg); err != nil {
			return nil, fmt.Errorf("creating Kubernetes client: %w", err)
		}
	}
	s.owners = newOwners(s.client, s.log)
	return s, nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("loading Kubernetes client configuration (KUBECONFIG=%q): %w", kubeconfig, err)
	}
	cfg.UserAgent = "obsd"
	return cfg, nil
}

// Collector exports the source's own metrics.
func (s *Source) Collector() prometheus.Collector {
	return collectors{s.watchErrors, s.api.errors, s.containersG, s.podsG}
}

type collectors []prometheus.Collector

func (c collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, x := range c {
		x.Describe(ch)
	}
}

func (c collectors) Collect(ch chan<- prometheus.Metric) {
	for _, x := range c {
		x.Collect(ch)
	}
}

// Check is a readiness check: the pod cache has synced and a scan ran.
func (s *Source) Check(context.Context) error {
	if !s.synced.Load() {
		return errors.New("pods of node " + s.o.Node + " not listed yet")
	}
	if s.scans.Load() == 0 {
		return errors.New("no scan completed yet")
	}
	return nil
}

// Run watches until ctx is done. It returns nil then; processes still
// reported are not passed to Removed (the agent detaches everything).
func (s *Source) Run(ctx context.Context, h discover.Handler) error {
	factory := informers.NewSharedInformerFactoryWithOptions(s.client, s.o.Resync,
		informers.WithTweakListOptions(func(lo *metav1ListOptions) {
			lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", s.o.Node).String()
		}))
	podInf := factory.Core().V1().Pods()
	inf := podInf.Informer()
	// Only what the rules read is kept: at hundreds of pods, managed
	// fields and the rest of the spec are most of the memory.
	if err := inf.SetTransform(trimPod); err != nil {
		return fmt.Errorf("setting the pod transform: %w", err)
	}
	if err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		s.watchErrors.Inc()
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}); err != nil {
		return fmt.Errorf("setting the watch error handler: %w", err)
	}
	kick := func() {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { kick() },
		UpdateFunc: func(any, any) { kick() },
		DeleteFunc: func(any) { kick() },
	}); err != nil {
		return fmt.Errorf("watching pods: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	lister := podInf.Lister()
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	for {
		if !s.synced.Load() && inf.HasSynced() {
			s.synced.Store(true)
			s.log.Info("watching pods", "node", s.o.Node)
		}
		if s.synced.Load() {
			s.reconcile(ctx, lister, h)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-t.C:
		}
	}
}

// reconcile compares what the pods want with the processes running and
// reports the difference.
func (s *Source) reconcile(ctx context.Context, lister listerscorev1.PodLister, h discover.Handler) {
	pods, err := lister.List(labels.Everything())
	if err != nil {
		s.log.Warn("listing cached pods", "err", err)
		return
	}
	s.podsG.Set(float64(len(pods)))
	wanted := map[string]*container{}
	keepOwners := map[types.UID]bool{}
	for _, pod := range pods {
		if !Optedin(pod) || pod.Spec.NodeName != s.o.Node {
			continue
		}
		if ref := controllerRef(pod); ref != "" {
			keepOwners[types.UID(ref)] = true
		}
		cs, unknown := containers(pod, s.owners.resolve(ctx, pod))
		for _, n := range unknown {
			s.warnOnce(fmt.Sprintf("pod %s/%s: %s names container %q, which the pod does not have", pod.Namespace, pod.Name, AnnotationContainers, n))
		}
		for i := range cs {
			wanted[cs[i].ID] = &cs[i]
		}
	}
	s.owners.forget(keepOwners)
	s.containersG.Set(float64(len(wanted)))

	byContainer := map[string][]int{}
	if len(wanted) > 0 {
		byContainer = s.scan(wanted)
	} else {
		clear(s.procs)
	}
	s.scans.Add(1)

	next := map[procKey]discover.Process{}
	for id, pids := range byContainer {
		c := wanted[id]
		var gos []int
		for _, pid := range pids {
			if s.isGo(pid) {
				gos = append(gos, pid)
			}
		}
		if len(gos) == 0 {
			if !s.refused[id] {
				// Hand the container's first process to the agent once, which
				// logs and counts it (reason not_go); never again.
				s.refused[id] = true
				s.log.Info("container has no Go process; not instrumenting it", "namespace", c.Namespace, "pod", c.Pod, "container", c.Name)
				if p, ok := s.process(c, pids[0], 0); ok {
					h.Added(p)
				}
			}
			continue
		}
		for i, pid := range gos {
			if p, ok := s.process(c, pid, i); ok {
				next[procKey{p.PID, p.StartTime, p.Exe}] = p
			}
		}
	}
	for id := range s.refused {
		if wanted[id] == nil {
			delete(s.refused, id)
		}
	}

	var added, removed []discover.Process
	for k, p := range s.current {
		if _, ok := next[k]; !ok {
			removed = append(removed, p)
		}
	}
	for k, p := range next {
		if _, ok := s.current[k]; !ok {
			added = append(added, p)
		}
	}
	s.current = next
	byPID := func(a, b discover.Process) int { return a.PID - b.PID }
	slices.SortFunc(removed, byPID)
	slices.SortFunc(added, byPID)
	now := time.Now()
	s.mu.Lock()
	live := map[string]bool{}
	for _, p := range next {
		live[p.InstanceID] = true
	}
	for inst, id := range s.ident {
		switch {
		case live[inst]:
			id.removed = time.Time{}
		case id.removed.IsZero():
			id.removed = now
		case now.Sub(id.removed) > s.o.Linger:
			delete(s.ident, inst)
		}
	}
	for _, p := range added {
		s.ident[p.InstanceID] = &identity{labels: s.labelsOf(p)}
	}
	s.mu.Unlock()
	for _, p := range removed {
		h.Removed(p)
	}
	for _, p := range added {
		h.Added(p)
	}
}

func controllerRef(pod *corev1.Pod) string {
	for _, r := range pod.OwnerReferences {
		if r.Controller != nil && *r.Controller {
			return string(r.UID)
		}
	}
	return ""
}

// scan maps the wanted containers to their processes through
// /proc/PID/cgroup, read once per process image.
func (s *Source) scan(wanted map[string]*container) map[string][]int {
	out := map[string][]int{}
	d, err := os.Open(s.o.ProcRoot)
	if err != nil {
		s.warnOnce(fmt.Sprintf("listing processes: %v", err))
		return out
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		s.warnOnce(fmt.Sprintf("listing processes: %v", err))
		return out
	}
	gen := s.scans.Load() + 1
	for _, name := range names {
		if name[0] < '1' || name[0] > '9' {
			continue
		}
		pid, err := strconv.Atoi(name)
		if err != nil || pid == s.o.Self {
			continue
		}
		dir := filepath.Join(s.o.ProcRoot, name)
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue // exited
		}
		start, comm, err := parseStat(stat)
		if err != nil {
			s.warnOnce(fmt.Sprintf("pid %d: %v", pid, err))
			continue
		}
		p := s.procs[pid]
		if p == nil || p.start != start || p.comm != comm {
			p = &procInfo{start: start, comm: comm}
			s.procs[pid] = p
			data, err := os.ReadFile(filepath.Join(dir, "cgroup"))
			if err == nil {
				var c CgroupContainer
				var ok bool
				if c, ok, err = ParseCgroup(data); ok {
					p.container = c.ID
				}
			}
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				p.cgErr = err
				s.warnOnce(fmt.Sprintf("pid %d: reading its container: %v", pid, err))
			}
		}
		p.seen = gen
		if p.container != "" && wanted[p.container] != nil {
			out[p.container] = append(out[p.container], pid)
		}
	}
	for pid, p := range s.procs {
		if p.seen != gen {
			delete(s.procs, pid)
		}
	}
	for _, pids := range out {
		sort.Ints(pids)
	}
	return out
}

// parseStat returns the start time and command name from /proc/PID/stat.
func parseStat(data []byte) (uint64, string, error) {
	s := string(data)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return 0, "", errors.New("malformed stat: no command name")
	}
	f := strings.Fields(s[end+1:])
	// starttime is field 22; fields from 3 (state) on follow the name.
	if len(f) < 20 {
		return 0, "", fmt.Errorf("malformed stat: %d fields after the name", len(f))
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("malformed stat starttime: %w", err)
	}
	return start, s[open+1 : end], nil
}

// isGo reports whether the process runs a Go executable (has Go build
// info), read once per process image.
func (s *Source) isGo(pid int) bool {
	p := s.procs[pid]
	exe, err := os.Readlink(filepath.Join(s.o.ProcRoot, strconv.Itoa(pid), "exe"))
	if err != nil {
		return false
	}
	if p.goDone && p.exe == exe {
		return p.isGo
	}
	p.exe, p.goDone, p.envDone = exe, true, false
	p.isGo = isGoExecutable(filepath.Join(s.o.ProcRoot, strconv.Itoa(pid), "exe"))
	return p.isGo
}

// process builds what the agent is told about one process of c; nth is its
// rank among the container's Go processes (the first keeps the plain
// instance ID).
func (s *Source) process(c *container, pid, nth int) (discover.Process, bool) {
	p := s.procs[pid]
	dir := filepath.Join(s.o.ProcRoot, strconv.Itoa(pid))
	if p.exe == "" {
		exe, err := os.Readlink(filepath.Join(dir, "exe"))
		if err != nil {
			return discover.Process{}, false
		}
		p.exe = exe
	}
	if !p.envDone {
		p.envDone = true
		data, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil {
			s.log.Debug("reading a container process's environment", "pid", pid, "err", err)
		}
		p.env = parseEnviron(data)
	}
	exe, deleted := strings.CutSuffix(p.exe, " (deleted)")
	attrs, err := parseResourceAttrs(p.env["OTEL_RESOURCE_ATTRIBUTES"])
	if err != nil {
		s.warnOnce(fmt.Sprintf("pod %s/%s container %s: malformed OTEL_RESOURCE_ATTRIBUTES: %v", c.Namespace, c.Pod, c.Name, err))
	}
	inst := c.InstanceID()
	if nth > 0 {
		inst += "." + strconv.Itoa(pid)
	}
	svc := serviceName(c, p.env, attrs)
	res := map[string]string{}
	for k, v := range attrs {
		res[k] = v
	}
	for k, v := range resourceAttrs(c) {
		res[k] = v
	}
	return discover.Process{
		PID: pid, StartTime: p.start, Exe: exe, ExeDeleted: deleted,
		ExePath:       filepath.Join(dir, "exe"),
		ServiceName:   svc,
		InstanceID:    inst,
		ResourceAttrs: res,
		ManualTracing: strings.TrimSpace(p.env["OTEL_GO_MANUAL"]),
	}, true
}

// serviceName applies the documented order: the container's own
// OTEL_SERVICE_NAME (or service.name in its OTEL_RESOURCE_ATTRIBUTES), the
// pod's obsd.dev/service-name, its app.kubernetes.io/name label, its
// owner's name, the pod's name.
func serviceName(c *container, env, attrs map[string]string) string {
	if v := strings.TrimSpace(env["OTEL_SERVICE_NAME"]); v != "" {
		return v
	}
	if v := strings.TrimSpace(attrs["service.name"]); v != "" {
		return v
	}
	if c.EnvService != "" {
		return c.EnvService
	}
	return c.Service
}

// resourceAttrs are the semconv k8s.* resource attributes of c.
func resourceAttrs(c *container) map[string]string {
	m := map[string]string{
		"k8s.namespace.name": c.Namespace,
		"k8s.pod.name":       c.Pod,
		"k8s.pod.uid":        string(c.PodUID),
		"k8s.container.name": c.Name,
		"k8s.node.name":      c.Node,
		"container.id":       c.ID,
	}
	for k, v := range map[string]string{
		"k8s.replicaset.name":  c.Workload.ReplicaSet,
		"k8s.deployment.name":  c.Workload.Deployment,
		"k8s.statefulset.name": c.Workload.StatefulSet,
		"k8s.daemonset.name":   c.Workload.DaemonSet,
		"k8s.job.name":         c.Workload.Job,
		"k8s.cronjob.name":     c.Workload.CronJob,
	} {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

// seriesLabels maps the resource attributes that label every series to
// their Prometheus names. The k8s.pod.uid and container.id stay on spans:
// as labels they would change with every restart.
var seriesLabels = []struct{ attr, label string }{
	{"k8s.namespace.name", "k8s_namespace_name"},
	{"k8s.pod.name", "k8s_pod_name"},
	{"k8s.container.name", "k8s_container_name"},
	{"k8s.node.name", "k8s_node_name"},
	{"k8s.replicaset.name", "k8s_replicaset_name"},
	{"k8s.deployment.name", "k8s_deployment_name"},
	{"k8s.statefulset.name", "k8s_statefulset_name"},
	{"k8s.daemonset.name", "k8s_daemonset_name"},
	{"k8s.job.name", "k8s_job_name"},
	{"k8s.cronjob.name", "k8s_cronjob_name"},
}

// SeriesLabels are the label names Kubernetes mode adds to target series.
func SeriesLabels() []string {
	out := make([]string, len(seriesLabels))
	for i, l := range seriesLabels {
		out[i] = l.label
	}
	return out
}

func (s *Source) labelsOf(p discover.Process) []labelPair {
	var out []labelPair
	for _, l := range seriesLabels {
		if v := p.ResourceAttrs[l.attr]; v != "" {
			out = append(out, labelPair{l.label, v})
		}
	}
	return out
}

func (s *Source) warnOnce(msg string) {
	if s.warned[msg] {
		return
	}
	if len(s.warned) > 10000 {
		clear(s.warned) // bound the memory; worst case a warning repeats
	}
	s.warned[msg] = true
	s.log.Warn(msg)
}
