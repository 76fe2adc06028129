package envoy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokengate/tokengate/internal/config"
)

const istioManifestFile = "istio/tokengate.yaml"

// The Kubernetes objects below carry only the fields the shipped manifest
// uses, under their Kubernetes names, and are decoded case-sensitively with
// unknown fields refused: `kubectl apply` rejects a misspelt field too
// (strict field validation), and this check can only vouch for the fields
// it knows.

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type typeMeta struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
}

type k8sNamespace struct {
	typeMeta `yaml:",inline"`
}

type k8sConfigMap struct {
	typeMeta `yaml:",inline"`
	Data     map[string]string `yaml:"data"`
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type k8sDeployment struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		Replicas *int          `yaml:"replicas"`
		Selector labelSelector `yaml:"selector"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     podSpec    `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot   *bool  `yaml:"runAsNonRoot"`
		RunAsUser      *int64 `yaml:"runAsUser"`
		RunAsGroup     *int64 `yaml:"runAsGroup"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
	} `yaml:"volumes"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name     string `yaml:"name"`
				Key      string `yaml:"key"`
				Optional *bool  `yaml:"optional"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	StartupProbe   *probe `yaml:"startupProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	GRPC *struct {
		Port    int     `yaml:"port"`
		Service *string `yaml:"service"`
	} `yaml:"grpc"`
	HTTPGet *struct {
		Path string      `yaml:"path"`
		Port intOrString `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	TimeoutSeconds   int `yaml:"timeoutSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

// Kubernetes' defaults for a probe's unset period and failure threshold.
func (p *probe) period() time.Duration {
	if p.PeriodSeconds == 0 {
		return 10 * time.Second
	}
	return time.Duration(p.PeriodSeconds) * time.Second
}

func (p *probe) failures() int {
	if p.FailureThreshold == 0 {
		return 3
	}
	return p.FailureThreshold
}

type k8sService struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name        string      `yaml:"name"`
			AppProtocol string      `yaml:"appProtocol"`
			Port        int         `yaml:"port"`
			TargetPort  intOrString `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sPDB struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		MinAvailable intOrString   `yaml:"minAvailable"`
		Selector     labelSelector `yaml:"selector"`
	} `yaml:"spec"`
}

// intOrString is Kubernetes' IntOrString: a port number or a port name.
type intOrString struct {
	Int int
	Str string
}

func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.ShortTag() == "!!int" {
		return n.Decode(&v.Int)
	}
	return n.Decode(&v.Str)
}

// manifest is tokengate.yaml, one object of each kind, with the tokengate
// configuration its Deployment runs on.
type manifest struct {
	namespace  *k8sNamespace
	configMap  *k8sConfigMap
	deployment *k8sDeployment
	service    *k8sService
	pdb        *k8sPDB
	container  *container
	flags      map[string]string // the container's --name=value args
	config     *config.Config
}

// parseManifest decodes every document of a multi-document manifest
// strictly, then follows the container's --config flag through its volume
// mount to the ConfigMap key and loads that with tokengate's own parser.
func parseManifest(data []byte) (*manifest, error) {
	m := &manifest{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 0; ; i++ {
		var doc yaml.Node
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		// Back to text, so yamlToJSON's checks (duplicate keys above all)
		// apply to each document on its own.
		text, err := yaml.Marshal(&doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if err := m.add(text); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
	}
	if m.namespace == nil || m.configMap == nil || m.deployment == nil || m.service == nil || m.pdb == nil {
		return nil, errors.New("want one each of Namespace, ConfigMap, Deployment, Service, PodDisruptionBudget")
	}
	if err := m.resolveConfig(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *manifest) add(text []byte) error {
	// yamlToJSON's checks (no duplicate keys, bounded aliases); the
	// decoding below is yaml's own, case-sensitive and strict.
	if _, err := yamlToJSON(text); err != nil {
		return err
	}
	var tm typeMeta
	if err := yaml.Unmarshal(text, &tm); err != nil {
		return err
	}
	var target any
	dup := false
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		dup, m.namespace = m.namespace != nil, &k8sNamespace{}
		target = m.namespace
	case "v1 ConfigMap":
		dup, m.configMap = m.configMap != nil, &k8sConfigMap{}
		target = m.configMap
	case "apps/v1 Deployment":
		dup, m.deployment = m.deployment != nil, &k8sDeployment{}
		target = m.deployment
	case "v1 Service":
		dup, m.service = m.service != nil, &k8sService{}
		target = m.service
	case "policy/v1 PodDisruptionBudget":
		dup, m.pdb = m.pdb != nil, &k8sPDB{}
		target = m.pdb
	default:
		return fmt.Errorf("unexpected object %s %s", tm.APIVersion, tm.Kind)
	}
	if dup {
		return fmt.Errorf("a second %s", tm.Kind)
	}
	d := yaml.NewDecoder(bytes.NewReader(text))
	d.KnownFields(true)
	if err := d.Decode(target); err != nil {
		return fmt.Errorf("%s %q: %w", tm.Kind, tm.Metadata.Name, err)
	}
	return nil
}

func (m *manifest) resolveConfig() error {
	cs := m.deployment.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		return fmt.Errorf("Deployment: got %d containers, want 1", len(cs))
	}
	m.container = &cs[0]
	m.flags = map[string]string{}
	for _, a := range m.container.Args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok || !strings.HasPrefix(a, "--") {
			return fmt.Errorf("container arg %q: want --name=value, one argument per flag", a)
		}
		m.flags[name] = value
	}
	file := m.flags["config"]
	if file == "" {
		return errors.New("container: no --config; tokengate would run on its embedded default")
	}
	var volume string
	for _, vm := range m.container.VolumeMounts {
		if vm.MountPath == path.Dir(file) {
			volume = vm.Name
		}
	}
	var cmName string
	for _, v := range m.deployment.Spec.Template.Spec.Volumes {
		if v.Name == volume && v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
	}
	if volume == "" || cmName != m.configMap.Metadata.Name {
		return fmt.Errorf("--config=%s: no ConfigMap %q volume mounted at %s", file, m.configMap.Metadata.Name, path.Dir(file))
	}
	data, ok := m.configMap.Data[path.Base(file)]
	if !ok {
		return fmt.Errorf("ConfigMap %q has no key %q for --config=%s", cmName, path.Base(file), file)
	}
	cfg, err := config.Parse([]byte(data))
	if err != nil {
		return fmt.Errorf("ConfigMap %q key %q: %w", cmName, path.Base(file), err)
	}
	m.config = cfg
	return nil
}

func loadShippedManifest(t *testing.T) *manifest {
	t.Helper()
	data, err := os.ReadFile(istioManifestFile)
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseManifest(data)
	if err != nil {
		t.Fatalf("%s: %v", istioManifestFile, err)
	}
	return m
}

// serviceAddr is where the mesh reaches tokengate's ext_proc port.
type serviceAddr struct {
	host string // Kubernetes DNS name
	port int
}

// tokengateService returns the Service port that speaks gRPC, as Istio
// names its host.
func tokengateService(t *testing.T, m *manifest) serviceAddr {
	t.Helper()
	for _, p := range m.service.Spec.Ports {
		if p.AppProtocol == "grpc" || p.Name == "grpc" || strings.HasPrefix(p.Name, "grpc-") {
			return serviceAddr{fmt.Sprintf("%s.%s.svc.cluster.local", m.service.Metadata.Name, m.service.Metadata.Namespace), p.Port}
		}
	}
	t.Fatalf("Service %q has no gRPC port (name grpc or appProtocol grpc); Istio would not use HTTP/2 for it", m.service.Metadata.Name)
	return serviceAddr{}
}

func (m *manifest) duration(t *testing.T, flag string, def time.Duration) time.Duration {
	t.Helper()
	v, ok := m.flags[flag]
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("--%s=%s: %v", flag, v, err)
	}
	return d
}

func portOf(t *testing.T, field, addr string) (host string, port int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", field, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s %q: %v", field, addr, err)
	}
	return h, n
}

func TestIstioManifestWiring(t *testing.T) {
	m := loadShippedManifest(t)
	ns := m.namespace.Metadata.Name
	for kind, meta := range map[string]objectMeta{
		"ConfigMap": m.configMap.Metadata, "Deployment": m.deployment.Metadata,
		"Service": m.service.Metadata, "PodDisruptionBudget": m.pdb.Metadata,
	} {
		if meta.Namespace != ns {
			t.Errorf("%s %q namespace: got %q, want %q", kind, meta.Name, meta.Namespace, ns)
		}
	}
	if got := m.namespace.Metadata.Labels["istio-injection"]; got != "enabled" {
		t.Errorf("Namespace label istio-injection: got %q, want enabled (mTLS from the gateway)", got)
	}

	podLabels := m.deployment.Spec.Template.Metadata.Labels
	for name, sel := range map[string]map[string]string{
		"Deployment selector": m.deployment.Spec.Selector.MatchLabels,
		"Service selector":    m.service.Spec.Selector,
		"PDB selector":        m.pdb.Spec.Selector.MatchLabels,
	} {
		if len(sel) == 0 {
			t.Errorf("%s is empty", name)
		}
		for k, v := range sel {
			if podLabels[k] != v {
				t.Errorf("%s %s=%s does not select the pods (labels %v)", name, k, v, podLabels)
			}
		}
	}

	// The ext_proc port, from the config the pods run, must be the one the
	// Service, the container and every probe name.
	_, listenPort := portOf(t, "listen", m.config.Listen)
	ports := map[string]int{}
	for _, p := range m.container.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != listenPort {
		t.Errorf("container port grpc: got %d, want the config's listen port %d", ports["grpc"], listenPort)
	}
	svc := tokengateService(t, m)
	for _, p := range m.service.Spec.Ports {
		if p.Port != svc.port {
			continue
		}
		target := p.TargetPort.Int
		if p.TargetPort.Str != "" {
			target = ports[p.TargetPort.Str]
		}
		if target != listenPort {
			t.Errorf("Service port %d targets %+v = %d, want %d", p.Port, p.TargetPort, target, listenPort)
		}
	}

	adminHost, adminPort := portOf(t, "admin_listen", m.config.AdminListen)
	if adminHost != "0.0.0.0" && adminHost != "" {
		t.Errorf("admin_listen host: got %q, want all interfaces so Prometheus can scrape the pod", adminHost)
	}
	ann := m.deployment.Spec.Template.Metadata.Annotations
	if ann["prometheus.io/port"] != strconv.Itoa(adminPort) || ann["prometheus.io/path"] != "/metrics" || ann["prometheus.io/scrape"] != "true" {
		t.Errorf("prometheus annotations: got %v, want scrape of :%d/metrics", ann, adminPort)
	}

	env := map[string]int{}
	for i, e := range m.container.Env {
		env[e.Name] = i
	}
	secretEnv := func(name string) (optional bool, ok bool) {
		i, found := env[name]
		if !found {
			return false, false
		}
		e := m.container.Env[i]
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			return false, false
		}
		o := e.ValueFrom.SecretKeyRef.Optional
		return o != nil && *o, true
	}
	if tok := m.config.Admin.TokenEnv; tok == "" {
		t.Error("config admin.token_env is unset: the admin API would be open on the pod's address")
	} else if optional, ok := secretEnv(tok); !ok || optional {
		t.Errorf("env %s: want it from a secret, not optional (got from secret %v, optional %v)", tok, ok, optional)
	}
	if pw := m.config.Store.Redis.PasswordEnv; m.config.Store.Backend == "redis" {
		if _, ok := secretEnv(pw); !ok {
			t.Errorf("env %s (store.redis.password_env): want it from a secret", pw)
		}
	}
	if n := m.deployment.Spec.Replicas; n == nil || *n < 2 {
		t.Errorf("replicas: got %v, want ≥ 2 (failure_mode_allow: false makes tokengate's absence an outage)", n)
	}
	if got := m.pdb.Spec.MinAvailable; got.Int < 1 && got.Str == "" {
		t.Errorf("PDB minAvailable: got %+v, want ≥ 1", got)
	}
}

// The ConfigMap's policies may key budgets and pick tiers by what the
// EnvoyFilter forwards, and by nothing else: a namespace or attribute it
// does not forward would leave every request of the policy without a key.
func TestIstioManifestKeysByWhatIsForwarded(t *testing.T) {
	m := loadShippedManifest(t)
	gateway, _ := loadShippedIstioFilters(t)
	hp := patchesByApplyTo(t, gateway)["HTTP_FILTER"]
	if hp == nil || hp.extProc == nil {
		t.Fatal("gateway EnvoyFilter: no ext_proc HTTP_FILTER patch")
	}
	forwarded := hp.extProc.GetMetadataOptions().GetForwardingNamespaces().GetUntyped()
	attributes := hp.extProc.GetRequestAttributes()
	for _, p := range m.config.Policies {
		var read []*config.MetadataValue
		if md := p.CounterKey.Metadata; md != nil {
			read = append(read, md)
		}
		if p.Tiers != nil && p.Tiers.Metadata != nil {
			read = append(read, p.Tiers.Metadata)
		}
		for _, md := range read {
			if !slices.Contains(forwarded, md.Namespace) {
				t.Errorf("policy %q reads metadata namespace %q; the EnvoyFilter forwards %q", p.Name, md.Namespace, forwarded)
			}
		}
		if a := p.CounterKey.Attribute; a != "" && !slices.Contains(attributes, a) {
			t.Errorf("policy %q keys by attribute %q; the EnvoyFilter sends %q", p.Name, a, attributes)
		}
	}
}

func TestIstioManifestProbesAndShutdown(t *testing.T) {
	m := loadShippedManifest(t)
	_, listenPort := portOf(t, "listen", m.config.Listen)
	c := m.container
	probes := []struct {
		name string
		p    *probe
	}{{"startupProbe", c.StartupProbe}, {"readinessProbe", c.ReadinessProbe}, {"livenessProbe", c.LivenessProbe}}
	for _, pr := range probes {
		if pr.p == nil {
			t.Fatalf("%s: missing", pr.name)
		}
		// Liveness may ask the admin port's /healthz instead, which answers
		// while the process does, whatever the store's state.
		if pr.name == "livenessProbe" && pr.p.HTTPGet != nil {
			_, adminPort := portOf(t, "admin_listen", m.config.AdminListen)
			if pr.p.HTTPGet.Path != "/healthz" || pr.p.HTTPGet.Port.Int != adminPort {
				t.Errorf("%s: httpGet %s on %+v, want /healthz on the admin port %d", pr.name, pr.p.HTTPGet.Path, pr.p.HTTPGet.Port, adminPort)
			}
			continue
		}
		switch {
		case pr.p.GRPC == nil:
			t.Errorf("%s: want a grpc probe on the ext_proc port (grpc.health.v1)", pr.name)
		case pr.p.GRPC.Port != listenPort:
			t.Errorf("%s: grpc port %d, want the ext_proc port %d", pr.name, pr.p.GRPC.Port, listenPort)
		case pr.p.GRPC.Service != nil && *pr.p.GRPC.Service != "":
			// tokengate reports its state on the server-wide name only.
			t.Errorf("%s: grpc service %q, want the server-wide \"\"", pr.name, *pr.p.GRPC.Service)
		}
	}

	// A gRPC liveness probe sees what readiness sees. With fail_closed,
	// a Redis outage turns health NOT_SERVING and the kubelet would
	// restart every replica, which cannot bring Redis back.
	if c.LivenessProbe.GRPC != nil && m.config.Store.Backend == "redis" && m.config.Store.Redis.OnError == "fail_closed" {
		t.Error("store.redis.on_error fail_closed with a gRPC liveness probe: a Redis outage restarts every replica")
	}

	delay := m.duration(t, "drain-delay", 0)
	drain := m.duration(t, "drain-timeout", 15*time.Second) // tokengate's default
	shutdown := delay + drain
	rp, lp := c.ReadinessProbe, c.LivenessProbe
	if got := rp.period() * time.Duration(rp.failures()); delay == 0 || got > delay {
		t.Errorf("readiness fails after %v, drain delay %v: want a delay the probe fits in, so the endpoint is gone before tokengate stops accepting", got, delay)
	}
	if got := lp.period() * time.Duration(lp.failures()); got <= shutdown {
		t.Errorf("liveness fails after %v, shutdown takes up to %v: the kubelet would kill a draining pod", got, shutdown)
	}
	grace := m.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil || time.Duration(*grace)*time.Second <= shutdown {
		t.Errorf("terminationGracePeriodSeconds: got %v, want more than drain delay + timeout (%v)", grace, shutdown)
	}
	var proxy struct {
		HoldApplicationUntilProxyStarts bool   `yaml:"holdApplicationUntilProxyStarts"`
		TerminationDrainDuration        string `yaml:"terminationDrainDuration"`
	}
	if err := yaml.Unmarshal([]byte(m.deployment.Spec.Template.Metadata.Annotations["proxy.istio.io/config"]), &proxy); err != nil {
		t.Fatalf("proxy.istio.io/config: %v", err)
	}
	if !proxy.HoldApplicationUntilProxyStarts {
		t.Error("proxy.istio.io/config: want holdApplicationUntilProxyStarts (Redis is dialled at start)")
	}
	if d, err := time.ParseDuration(proxy.TerminationDrainDuration); err != nil || d < shutdown {
		t.Errorf("proxy.istio.io/config terminationDrainDuration: got %q, want ≥ %v so the sidecar outlives the drain", proxy.TerminationDrainDuration, shutdown)
	}
}

func TestIstioManifestHardening(t *testing.T) {
	m := loadShippedManifest(t)
	ps, c := m.deployment.Spec.Template.Spec, m.container
	sc := c.SecurityContext
	checks := []struct {
		name string
		ok   bool
	}{
		{"pod runAsNonRoot", ps.SecurityContext.RunAsNonRoot != nil && *ps.SecurityContext.RunAsNonRoot},
		{"pod runAsUser non-zero", ps.SecurityContext.RunAsUser != nil && *ps.SecurityContext.RunAsUser != 0},
		{"pod seccompProfile RuntimeDefault", ps.SecurityContext.SeccompProfile.Type == "RuntimeDefault"},
		{"container allowPrivilegeEscalation false", sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation},
		{"container readOnlyRootFilesystem", sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem},
		{"container drops ALL capabilities", len(sc.Capabilities.Drop) == 1 && sc.Capabilities.Drop[0] == "ALL"},
		{"cpu request", c.Resources.Requests["cpu"] != ""},
		{"memory request", c.Resources.Requests["memory"] != ""},
		{"memory limit", c.Resources.Limits["memory"] != ""},
		// Throttling would delay every ext_proc reply.
		{"no cpu limit", c.Resources.Limits["cpu"] == ""},
		{"image pinned (not :latest, not untagged)", c.Image != "" && strings.Contains(path.Base(c.Image), ":") && !strings.HasSuffix(c.Image, ":latest")},
		{"config volume read-only", len(c.VolumeMounts) > 0 && c.VolumeMounts[0].ReadOnly},
		// A writable store file would need a volume; the manifest has none.
		{"store needs no disk", m.config.Store.Backend != "bbolt"},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("%s: not so", ch.name)
		}
	}
}

// TestIstioManifestRejectsTypos checks that the strict decoding and the
// config loading above can fail: each edit is one a hurried operator
// might make.
func TestIstioManifestRejectsTypos(t *testing.T) {
	orig, err := os.ReadFile(istioManifestFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseManifest(orig); err != nil {
		t.Fatalf("unedited file: %v", err)
	}
	tests := []struct {
		name, old, new, wantErr string
	}{
		{"misspelt probe", "readinessProbe:", "readinesProbe:", "field readinesProbe not found"},
		{"wrong case", "readinessProbe:", "readinessprobe:", "field readinessprobe not found"},
		{"misspelt grpc port", "          grpc:\n            port: 50051\n          periodSeconds: 2", "          grpc:\n            prot: 50051\n          periodSeconds: 2", "field prot not found"},
		{"misspelt config field", "tokens_per_minute: 10000", "token_per_minute: 10000", "unknown field token_per_minute"},
		{"invalid config value", "on_error: local", "on_error: sometimes", "store.redis.on_error"},
		{"config key renamed", "  tokengate.yaml: |", "  config.yaml: |", `no key "tokengate.yaml"`},
		{"config not mounted", "mountPath: /etc/tokengate", "mountPath: /etc/tg", "no ConfigMap"},
		{"no --config", "        - --config=/etc/tokengate/tokengate.yaml\n", "", "no --config"},
		{"wrong apiVersion", "apiVersion: apps/v1", "apiVersion: apps/v1beta1", "unexpected object apps/v1beta1 Deployment"},
		{"duplicate key", "  replicas: 2", "  replicas: 2\n  replicas: 3", `key "replicas" already defined`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := strings.Index(string(orig), tt.old)
			if i < 0 {
				t.Fatalf("%s no longer contains %q; update this case", istioManifestFile, tt.old)
			}
			edited := string(orig[:i]) + tt.new + string(orig[i+len(tt.old):])
			_, err := parseManifest([]byte(edited))
			if err == nil {
				t.Fatalf("accepted %q → %q", tt.old, tt.new)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error: got %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
