// Package helm holds the tests of tokengate's Helm chart (tokengate/):
// rendered with Helm's Go SDK, no cluster needed.
package helm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/internal/server"
)

const (
	chartDir      = "tokengate"
	haValuesFile  = "tokengate/ci/redis-tls-ha-values.yaml"
	istioManifest = "../../envoy/istio/tokengate.yaml"
	alertsFile    = "../prometheus/alerts.yaml" // written by the Prometheus work (issue 18)
	chartAlerts   = "tokengate/files/alerts.yaml"
	releaseName   = "tokengate"
	releaseNS     = "tokengate"
)

// scheme knows the kinds the chart may render (and the Istio manifest
// holds), in the API versions they are written in, and no other.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, monitoringv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// decodeStrict decodes one document into the Go type its apiVersion and
// kind name, as `kubectl apply` with strict field validation would: an
// unknown or duplicate field, a field in the wrong case or a value of the
// wrong type is an error.
func decodeStrict(doc []byte) (runtime.Object, error) {
	ser := k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, scheme, scheme,
		k8sjson.SerializerOptions{Yaml: true, Strict: true})
	obj, _, err := ser.Decode(doc, nil, nil)
	return obj, err
}

// objects are decoded manifests, one of each kind at most (two Services).
type objects struct {
	namespace   *corev1.Namespace
	configMap   *corev1.ConfigMap
	deployment  *appsv1.Deployment
	services    []*corev1.Service
	pdb         *policyv1.PodDisruptionBudget
	hpa         *autoscalingv2.HorizontalPodAutoscaler
	monitor     *monitoringv1.ServiceMonitor
	rule        *monitoringv1.PrometheusRule
	all         []runtime.Object
	configText  string         // the config file the Deployment runs on
	config      *config.Config // configText, parsed
	container   *corev1.Container
	flags       map[string]string
	grpcService *corev1.Service
}

// decodeManifests decodes every document of each source strictly.
func decodeManifests(sources map[string]string) (*objects, error) {
	var o objects
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(sources)) {
		r := k8syaml.NewYAMLReader(bufio.NewReader(strings.NewReader(sources[name])))
		for i := 1; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				break
			}
			if onlyComments(doc) {
				continue
			}
			obj, err := decodeStrict(doc)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s document %d: %w", name, i, err))
				continue
			}
			if err := o.add(obj); err != nil {
				errs = append(errs, fmt.Errorf("%s document %d: %w", name, i, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &o, o.resolve()
}

func onlyComments(doc []byte) bool {
	for line := range strings.SplitSeq(string(doc), "\n") {
		if l := strings.TrimSpace(line); l != "" && l != "---" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

func (o *objects) add(obj runtime.Object) error {
	twice := func(set bool) error {
		if set {
			return fmt.Errorf("a second %T", obj)
		}
		return nil
	}
	var err error
	switch v := obj.(type) {
	case *corev1.Namespace:
		err, o.namespace = twice(o.namespace != nil), v
	case *corev1.ConfigMap:
		err, o.configMap = twice(o.configMap != nil), v
	case *appsv1.Deployment:
		err, o.deployment = twice(o.deployment != nil), v
	case *corev1.Service:
		o.services = append(o.services, v)
	case *policyv1.PodDisruptionBudget:
		err, o.pdb = twice(o.pdb != nil), v
	case *autoscalingv2.HorizontalPodAutoscaler:
		err, o.hpa = twice(o.hpa != nil), v
	case *monitoringv1.ServiceMonitor:
		err, o.monitor = twice(o.monitor != nil), v
	case *monitoringv1.PrometheusRule:
		err, o.rule = twice(o.rule != nil), v
	default:
		err = fmt.Errorf("unexpected object %T", obj)
	}
	o.all = append(o.all, obj)
	return err
}

// resolve follows the container's --config flag through its volume mount
// to the ConfigMap key and parses that with tokengate's own parser.
func (o *objects) resolve() error {
	if o.deployment == nil || o.configMap == nil {
		return errors.New("want a Deployment and a ConfigMap")
	}
	cs := o.deployment.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		return fmt.Errorf("Deployment: got %d containers, want 1", len(cs))
	}
	o.container = &cs[0]
	o.flags = map[string]string{}
	for _, a := range o.container.Args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok || !strings.HasPrefix(a, "--") {
			return fmt.Errorf("container arg %q: want --name=value", a)
		}
		o.flags[name] = value
	}
	file := o.flags["config"]
	if file == "" {
		return errors.New("container: no --config; tokengate would run on its embedded default")
	}
	var volume string
	for _, vm := range o.container.VolumeMounts {
		if vm.MountPath == path.Dir(file) {
			volume = vm.Name
		}
	}
	var cmName string
	for _, v := range o.deployment.Spec.Template.Spec.Volumes {
		if v.Name == volume && v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
	}
	if volume == "" || cmName != o.configMap.Name {
		return fmt.Errorf("--config=%s: no ConfigMap %q volume mounted at %s", file, o.configMap.Name, path.Dir(file))
	}
	data, ok := o.configMap.Data[path.Base(file)]
	if !ok {
		return fmt.Errorf("ConfigMap %q has no key %q for --config=%s", cmName, path.Base(file), file)
	}
	o.configText = data
	cfg, err := config.Parse([]byte(data))
	if err != nil {
		return fmt.Errorf("ConfigMap %q key %q: %w", cmName, path.Base(file), err)
	}
	o.config = cfg
	for _, s := range o.services {
		for _, p := range s.Spec.Ports {
			if p.Name == "grpc" {
				o.grpcService = s
			}
		}
	}
	if o.grpcService == nil {
		return errors.New("no Service with a port named grpc")
	}
	return nil
}

// chartFiles reads the chart directory into memory, so tests can edit a
// file before loading it.
func chartFiles(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(chartDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		files[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// render renders the chart made of files with the values YAML (on top of
// its values.yaml), as `helm template tokengate -n tokengate` would,
// in strict mode: a template that names a value values.yaml lacks is an
// error. It returns the rendered manifests by template name.
func render(files map[string][]byte, values []byte) (map[string]string, error) {
	var bufs []*loader.BufferedFile
	for _, name := range slices.Sorted(maps.Keys(files)) {
		bufs = append(bufs, &loader.BufferedFile{Name: name, Data: files[name]})
	}
	ch, err := loader.LoadFiles(bufs)
	if err != nil {
		return nil, fmt.Errorf("loading the chart: %w", err)
	}
	vals, err := chartutil.ReadValues(values)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	return renderChart(ch, vals)
}

func renderChart(ch *chart.Chart, vals chartutil.Values) (map[string]string, error) {
	if err := ch.Validate(); err != nil {
		return nil, err
	}
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{
		Name: releaseName, Namespace: releaseNS, Revision: 1, IsInstall: true,
	}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	out, err := engine.Engine{Strict: true}.Render(ch, rv)
	if err != nil {
		return nil, err
	}
	manifests := map[string]string{}
	for name, text := range out {
		if strings.HasSuffix(name, "NOTES.txt") || strings.TrimSpace(text) == "" {
			continue
		}
		manifests[name] = text
	}
	return manifests, nil
}

// renderAndDecode renders and decodes, then runs tokengate --check-config
// on the rendered config file.
func renderAndDecode(files map[string][]byte, values []byte) (*objects, error) {
	manifests, err := render(files, values)
	if err != nil {
		return nil, err
	}
	o, err := decodeManifests(manifests)
	if err != nil {
		return nil, err
	}
	return o, checkConfig(o.configText)
}

// checkConfig runs `tokengate --check-config` (in process) on text: the
// same loading, validation and policy compilation as a start.
func checkConfig(text string) error {
	dir, err := os.MkdirTemp("", "tokengate-chart")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "tokengate.yaml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := server.Run(ctx, []string{"--check-config", "--config=" + file}, &stdout, &stderr); err != nil {
		return fmt.Errorf("tokengate --check-config: %w (stderr %q)", err, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "config ok: ") {
		return fmt.Errorf("tokengate --check-config: stdout %q, want config ok", stdout.String())
	}
	if stderr.Len() > 0 {
		return fmt.Errorf("tokengate --check-config warns: %s", stderr.String())
	}
	return nil
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// valueSets are the values the chart is tested with: its defaults and a
// production-shaped file.
func valueSets(t *testing.T) map[string][]byte {
	return map[string][]byte{"default": nil, "redis-tls-ha": readFile(t, haValuesFile)}
}

func TestChartRenders(t *testing.T) {
	files := chartFiles(t)
	for name, values := range valueSets(t) {
		t.Run(name, func(t *testing.T) {
			o, err := renderAndDecode(files, values)
			if err != nil {
				t.Fatal(err)
			}
			for _, obj := range o.all {
				m, ok := obj.(interface {
					GetNamespace() string
					GetName() string
					GetLabels() map[string]string
				})
				if !ok {
					t.Fatalf("%T has no metadata", obj)
				}
				if m.GetNamespace() != releaseNS {
					t.Errorf("%T %s: namespace %q, want the release's %q", obj, m.GetName(), m.GetNamespace(), releaseNS)
				}
				if m.GetLabels()["app.kubernetes.io/instance"] != releaseName {
					t.Errorf("%T %s: no app.kubernetes.io/instance label", obj, m.GetName())
				}
			}
			checkWiring(t, o)
			checkHardening(t, o)
			checkProbesAndShutdown(t, o)
		})
	}
}

// TestChartValueSets checks what each values file is for.
func TestChartValueSets(t *testing.T) {
	files := chartFiles(t)
	def, err := renderAndDecode(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	if def.config.Store.Backend != "memory" || *def.deployment.Spec.Replicas != 1 {
		t.Errorf("default: store %q, replicas %d; want one replica on the memory store", def.config.Store.Backend, *def.deployment.Spec.Replicas)
	}
	if def.hpa != nil || def.monitor != nil || def.rule != nil || len(def.services) != 1 {
		t.Error("default: want no HPA, ServiceMonitor, PrometheusRule or metrics Service")
	}
	if def.pdb == nil {
		t.Error("default: no PodDisruptionBudget")
	}

	ha, err := renderAndDecode(files, readFile(t, haValuesFile))
	if err != nil {
		t.Fatal(err)
	}
	if ha.config.Store.Backend != "redis" || ha.config.Store.Redis.PasswordEnv == "" || !ha.config.Store.Redis.TLS {
		t.Errorf("redis-tls-ha: store %+v, want redis over TLS with a password variable", ha.config.Store)
	}
	if !ha.config.TLS.Enabled() || ha.config.TLS.ClientCAFile == "" {
		t.Errorf("redis-tls-ha: tls %+v, want mutual TLS", ha.config.TLS)
	}
	if ha.hpa == nil || ha.hpa.Spec.MinReplicas == nil || *ha.hpa.Spec.MinReplicas != 3 {
		t.Errorf("redis-tls-ha: want an HPA from 3 replicas, got %+v", ha.hpa)
	} else if ha.hpa.Spec.ScaleTargetRef.Name != ha.deployment.Name || ha.hpa.Spec.ScaleTargetRef.Kind != "Deployment" {
		t.Errorf("HPA scales %+v, want Deployment %s", ha.hpa.Spec.ScaleTargetRef, ha.deployment.Name)
	}
	if ha.deployment.Spec.Replicas != nil {
		t.Error("redis-tls-ha: the Deployment sets replicas while the HPA owns them")
	}
	if ha.config.KeySaltEnv == "" {
		t.Error("redis-tls-ha: key_salt_env unset")
	}
	if ha.monitor == nil || ha.rule == nil || len(ha.rule.Spec.Groups) == 0 {
		t.Fatal("redis-tls-ha: want a ServiceMonitor and a PrometheusRule with rules")
	}
	// The ServiceMonitor selects the metrics Service, whose port it names.
	var metrics *corev1.Service
	for _, s := range ha.services {
		if s != ha.grpcService {
			metrics = s
		}
	}
	if metrics == nil {
		t.Fatal("redis-tls-ha: no metrics Service for the ServiceMonitor")
	}
	for k, v := range ha.monitor.Spec.Selector.MatchLabels {
		if metrics.Labels[k] != v {
			t.Errorf("ServiceMonitor selector %s=%s does not select Service %s", k, v, metrics.Name)
		}
		if ha.grpcService.Labels[k] == v && k == "app.kubernetes.io/component" {
			t.Errorf("ServiceMonitor selector also selects the gRPC Service")
		}
	}
	_, adminPort := splitPort(t, ha.config.AdminListen)
	if len(metrics.Spec.Ports) != 1 || metrics.Spec.Ports[0].Name != ha.monitor.Spec.Endpoints[0].Port || metrics.Spec.Ports[0].Port != adminPort {
		t.Errorf("metrics Service ports %+v, want one named %s on the admin port %d", metrics.Spec.Ports, ha.monitor.Spec.Endpoints[0].Port, adminPort)
	}
}

// TestChartRefusesPerReplicaBudgets: several replicas on a store of their
// own would each admit the whole budget.
func TestChartRefusesPerReplicaBudgets(t *testing.T) {
	files := chartFiles(t)
	for _, values := range []string{"replicaCount: 3\n", "autoscaling: {enabled: true}\n", "config: {store: {backend: bbolt}}\n"} {
		_, err := render(files, []byte(values))
		if err == nil {
			t.Errorf("%q: rendered, want a refusal", values)
			continue
		}
		t.Log(err)
	}
	if _, err := render(files, []byte("replicaCount: 3\nallowPerReplicaBudgets: true\n")); err != nil {
		t.Errorf("allowPerReplicaBudgets: %v", err)
	}
}

func splitPort(t *testing.T, addr string) (string, int32) {
	t.Helper()
	host, port, ok := strings.Cut(addr, ":")
	var n int32
	if _, err := fmt.Sscan(port, &n); !ok || err != nil {
		t.Fatalf("address %q: want host:port", addr)
	}
	return host, n
}

func checkWiring(t *testing.T, o *objects) {
	t.Helper()
	pod := o.deployment.Spec.Template
	for name, sel := range map[string]map[string]string{
		"Deployment selector": o.deployment.Spec.Selector.MatchLabels,
		"Service selector":    o.grpcService.Spec.Selector,
		"PDB selector":        pdbSelector(o),
	} {
		if len(sel) == 0 {
			t.Errorf("%s is empty", name)
		}
		for k, v := range sel {
			if pod.Labels[k] != v {
				t.Errorf("%s %s=%s does not select the pods (labels %v)", name, k, v, pod.Labels)
			}
		}
	}
	_, listen := splitPort(t, o.config.Listen)
	adminHost, admin := splitPort(t, o.config.AdminListen)
	ports := map[string]int32{}
	for _, p := range o.container.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != listen || ports["http-admin"] != admin {
		t.Errorf("container ports %v, want grpc %d and http-admin %d from the config", ports, listen, admin)
	}
	if adminHost != "0.0.0.0" {
		t.Errorf("admin_listen host %q, want all interfaces (Prometheus, the kubelet)", adminHost)
	}
	for _, p := range o.grpcService.Spec.Ports {
		if p.TargetPort.String() != "grpc" || p.AppProtocol == nil || *p.AppProtocol != "grpc" {
			t.Errorf("Service port %+v: want targetPort grpc, appProtocol grpc", p)
		}
	}
	ann := pod.Annotations
	if ann["prometheus.io/port"] != fmt.Sprint(admin) || ann["prometheus.io/scrape"] != "true" {
		t.Errorf("prometheus annotations %v, want a scrape of :%d", ann, admin)
	}

	env := map[string]*corev1.SecretKeySelector{}
	for _, e := range o.container.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("env %s: not from a Secret", e.Name)
			continue
		}
		env[e.Name] = e.ValueFrom.SecretKeyRef
	}
	if ref := env[o.config.Admin.TokenEnv]; o.config.Admin.TokenEnv == "" || ref == nil || (ref.Optional != nil && *ref.Optional) {
		t.Errorf("admin.token_env %q: want it from a Secret, not optional", o.config.Admin.TokenEnv)
	}
	if o.config.Store.Backend == "redis" && env[o.config.Store.Redis.PasswordEnv] == nil {
		t.Errorf("store.redis.password_env %q: not from a Secret", o.config.Store.Redis.PasswordEnv)
	}
	if s := o.config.KeySaltEnv; s != "" && env[s] == nil {
		t.Errorf("key_salt_env %q: not from a Secret", s)
	}
	// Every TLS file the config names is in a mounted Secret.
	for _, f := range []string{o.config.TLS.CertFile, o.config.TLS.KeyFile, o.config.TLS.ClientCAFile} {
		if f == "" {
			continue
		}
		if !mountedFromSecret(o, path.Dir(f)) {
			t.Errorf("tls file %s: its directory is not a mounted Secret", f)
		}
	}
}

func pdbSelector(o *objects) map[string]string {
	if o.pdb == nil || o.pdb.Spec.Selector == nil {
		return nil
	}
	return o.pdb.Spec.Selector.MatchLabels
}

func mountedFromSecret(o *objects, dir string) bool {
	for _, vm := range o.container.VolumeMounts {
		if vm.MountPath != dir {
			continue
		}
		for _, v := range o.deployment.Spec.Template.Spec.Volumes {
			if v.Name == vm.Name && v.Secret != nil {
				return true
			}
		}
	}
	return false
}

func checkHardening(t *testing.T, o *objects) {
	t.Helper()
	ps, c := o.deployment.Spec.Template.Spec.SecurityContext, o.container
	sc := c.SecurityContext
	checks := []struct {
		name string
		ok   bool
	}{
		{"pod runAsNonRoot", ps != nil && ps.RunAsNonRoot != nil && *ps.RunAsNonRoot},
		{"pod runAsUser non-zero", ps != nil && ps.RunAsUser != nil && *ps.RunAsUser != 0},
		{"pod seccompProfile RuntimeDefault", ps != nil && ps.SeccompProfile != nil && ps.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault},
		{"container allowPrivilegeEscalation false", sc != nil && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation},
		{"container readOnlyRootFilesystem", sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem},
		{"container drops ALL capabilities", sc != nil && sc.Capabilities != nil && slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"})},
		{"cpu and memory requests", !c.Resources.Requests.Cpu().IsZero() && !c.Resources.Requests.Memory().IsZero()},
		{"memory limit", !c.Resources.Limits.Memory().IsZero()},
		{"no cpu limit (throttling delays ext_proc replies)", c.Resources.Limits.Cpu().IsZero()},
		{"image pinned", strings.Contains(path.Base(c.Image), ":") && !strings.HasSuffix(c.Image, ":latest") || strings.Contains(c.Image, "@sha256:")},
		{"every volume mount read-only", !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return !m.ReadOnly })},
		{"store needs no disk", o.config.Store.Backend != "bbolt"},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("%s: not so", ch.name)
		}
	}
}

func checkProbesAndShutdown(t *testing.T, o *objects) {
	t.Helper()
	c := o.container
	_, listen := splitPort(t, o.config.Listen)
	_, admin := splitPort(t, o.config.AdminListen)
	for name, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		switch {
		case p == nil:
			t.Errorf("%s: missing", name)
		case o.config.TLS.Enabled():
			// The kubelet's gRPC probes speak plaintext only.
			want := "/readyz"
			if name == "livenessProbe" {
				want = "/healthz"
			}
			if p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port.IntVal != admin {
				t.Errorf("%s with TLS: want httpGet %s on the admin port %d, got %+v", name, want, admin, p.ProbeHandler)
			}
		case p.GRPC == nil || p.GRPC.Port != listen:
			t.Errorf("%s: want a grpc probe on the ext_proc port %d, got %+v", name, listen, p.ProbeHandler)
		}
	}
	dur := func(flag string, def time.Duration) time.Duration {
		v, ok := o.flags[flag]
		if !ok {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("--%s=%s: %v", flag, v, err)
		}
		return d
	}
	delay, drain := dur("drain-delay", 0), dur("drain-timeout", 15*time.Second)
	rp, lp := c.ReadinessProbe, c.LivenessProbe
	if rp == nil || lp == nil {
		return
	}
	if got := time.Duration(rp.PeriodSeconds*rp.FailureThreshold) * time.Second; delay == 0 || got > delay {
		t.Errorf("readiness fails after %v, drain delay %v: want the probe to fail within the delay", got, delay)
	}
	if got := time.Duration(lp.PeriodSeconds*lp.FailureThreshold) * time.Second; got <= delay+drain {
		t.Errorf("liveness fails after %v, shutdown takes up to %v: the kubelet would kill a draining pod", got, delay+drain)
	}
	if g := o.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= delay+drain {
		t.Errorf("terminationGracePeriodSeconds %v, want more than drain delay + timeout (%v)", g, delay+drain)
	}
}

// istioDifferences lists where the chart rendered with its default
// values (and release tokengate in namespace tokengate) disagrees with
// envoy/istio/tokengate.yaml on what both must share: the objects' names,
// ports, probes, security contexts, resources, shutdown timings and the
// container's arguments, and the config's listeners and admin token.
func istioDifferences(chart, istio *objects) []string {
	var out []string
	differ := func(what string, c, i any) {
		if !reflect.DeepEqual(c, i) {
			out = append(out, fmt.Sprintf("%s: chart %+v, Istio manifest %+v", what, c, i))
		}
	}
	cp, ip := chart.deployment.Spec.Template.Spec, istio.deployment.Spec.Template.Spec
	cc, ic := chart.container, istio.container
	differ("Deployment namespace/name", chart.deployment.Namespace+"/"+chart.deployment.Name, istio.deployment.Namespace+"/"+istio.deployment.Name)
	differ("Service namespace/name", chart.grpcService.Namespace+"/"+chart.grpcService.Name, istio.grpcService.Namespace+"/"+istio.grpcService.Name)
	differ("Service ports", chart.grpcService.Spec.Ports, istio.grpcService.Spec.Ports)
	differ("container ports", cc.Ports, ic.Ports)
	differ("startupProbe", cc.StartupProbe, ic.StartupProbe)
	differ("readinessProbe", cc.ReadinessProbe, ic.ReadinessProbe)
	differ("livenessProbe", cc.LivenessProbe, ic.LivenessProbe)
	differ("pod securityContext", cp.SecurityContext, ip.SecurityContext)
	differ("container securityContext", cc.SecurityContext, ic.SecurityContext)
	differ("resources", cc.Resources, ic.Resources)
	differ("terminationGracePeriodSeconds", cp.TerminationGracePeriodSeconds, ip.TerminationGracePeriodSeconds)
	differ("container args", cc.Args, ic.Args)
	differ("config listen", chart.config.Listen, istio.config.Listen)
	differ("config admin_listen", chart.config.AdminListen, istio.config.AdminListen)
	differ("config admin.token_env", chart.config.Admin.TokenEnv, istio.config.Admin.TokenEnv)
	envRef := func(o *objects, name string) *corev1.SecretKeySelector {
		for _, e := range o.container.Env {
			if e.Name == name && e.ValueFrom != nil {
				return e.ValueFrom.SecretKeyRef
			}
		}
		return nil
	}
	differ("admin token Secret", envRef(chart, chart.config.Admin.TokenEnv), envRef(istio, istio.config.Admin.TokenEnv))
	differ("pod prometheus.io annotations",
		[]string{chart.deployment.Spec.Template.Annotations["prometheus.io/port"], chart.deployment.Spec.Template.Annotations["prometheus.io/path"]},
		[]string{istio.deployment.Spec.Template.Annotations["prometheus.io/port"], istio.deployment.Spec.Template.Annotations["prometheus.io/path"]})
	return out
}

func decodeIstio(t *testing.T, text []byte) *objects {
	t.Helper()
	o, err := decodeManifests(map[string]string{istioManifest: string(text)})
	if err != nil {
		t.Fatalf("%s: %v", istioManifest, err)
	}
	return o
}

func TestChartAgreesWithIstioManifest(t *testing.T) {
	chart, err := renderAndDecode(chartFiles(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	istio := decodeIstio(t, readFile(t, istioManifest))
	for _, d := range istioDifferences(chart, istio) {
		t.Error(d)
	}
	// With Redis the chart takes the password from where the manifest does.
	ha, err := renderAndDecode(chartFiles(t), readFile(t, haValuesFile))
	if err != nil {
		t.Fatal(err)
	}
	if ha.config.Store.Redis.PasswordEnv != istio.config.Store.Redis.PasswordEnv {
		t.Errorf("store.redis.password_env: chart %q, Istio manifest %q", ha.config.Store.Redis.PasswordEnv, istio.config.Store.Redis.PasswordEnv)
	}
}

// TestChartAlertsMatchPrometheusRules keeps the chart's copy of the alert
// rules equal to deploy/prometheus/alerts.yaml once that file exists.
func TestChartAlertsMatchPrometheusRules(t *testing.T) {
	want, err := os.ReadFile(alertsFile)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s does not exist (yet); the chart's %s is a placeholder", alertsFile, chartAlerts)
	}
	if err != nil {
		t.Fatal(err)
	}
	var w, g map[string]any
	if err := sigsyaml.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	if err := sigsyaml.Unmarshal(readFile(t, chartAlerts), &g); err != nil {
		t.Fatalf("%s: %v", chartAlerts, err)
	}
	if !reflect.DeepEqual(g["groups"], w["groups"]) {
		t.Errorf("%s differs from %s: cp %[2]s %[1]s", chartAlerts, alertsFile)
	}
	// And the chart renders them into a PrometheusRule that decodes.
	o, err := renderAndDecode(chartFiles(t), []byte("prometheusRule: {enabled: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if o.rule == nil || len(o.rule.Spec.Groups) == 0 {
		t.Error("prometheusRule.enabled: no PrometheusRule with the alert rules")
	}
}

// TestChartRejectsTypos edits the chart, its values and the Istio
// manifest the way a hurried operator might, and checks that each kind of
// test above fails: the strict decoding of rendered objects, Helm's strict
// rendering, tokengate's config validation and the comparison with the
// Istio manifest.
func TestChartRejectsTypos(t *testing.T) {
	orig := chartFiles(t)
	ha := readFile(t, haValuesFile)
	if _, err := renderAndDecode(orig, nil); err != nil {
		t.Fatalf("unedited chart: %v", err)
	}
	edit := func(t *testing.T, text []byte, old, new string) []byte {
		t.Helper()
		i := bytes.Index(text, []byte(old))
		if i < 0 {
			t.Fatalf("no %q to edit; update this case", old)
		}
		return slices.Concat(text[:i], []byte(new), text[i+len(old):])
	}
	tests := []struct {
		name             string
		file             string // chart file edited; "" edits the redis-tls-ha values
		old, new         string
		wantErr          string
		wantIstioDiffers string // instead of an error, a difference from the Istio manifest
	}{
		// Rendered objects decode strictly into k8s.io/api types.
		{"misspelt probe field", "templates/deployment.yaml", "        readinessProbe:\n          grpc:", "        readinesProbe:\n          grpc:", `unknown field "spec.template.spec.containers[0].readinesProbe"`, ""},
		{"wrong case", "templates/deployment.yaml", "terminationGracePeriodSeconds:", "terminationgracePeriodSeconds:", `unknown field "spec.template.spec.terminationgracePeriodSeconds"`, ""},
		{"misspelt Service field", "templates/service.yaml", "appProtocol: grpc", "appProtocl: grpc", `unknown field "spec.ports[0].appProtocl"`, ""},
		{"misspelt PDB field", "templates/pdb.yaml", "maxUnavailable:", "maxUnavailible:", `unknown field "spec.maxUnavailible"`, ""},
		{"misspelt ServiceMonitor field", "templates/servicemonitor.yaml", "scrapeTimeout:", "scrapeTimout:", `unknown field "spec.endpoints[0].scrapeTimout"`, ""},
		{"misspelt HPA field", "templates/hpa.yaml", "averageUtilization:", "averageUtilisation:", `unknown field "spec.metrics[0].resource.target.averageUtilisation"`, ""},
		{"wrong apiVersion", "templates/pdb.yaml", "apiVersion: policy/v1", "apiVersion: policy/v2", `no kind "PodDisruptionBudget" is registered for version "policy/v2"`, ""},
		{"word for a number", "", "minReplicas: 3", "minReplicas: three", "cannot unmarshal string", ""},
		// Helm's strict rendering: a value the templates name must exist.
		{"misspelt value in a template", "templates/deployment.yaml", ".Values.drain.delay", ".Values.drain.dealy", `map has no entry for key "dealy"`, ""},
		// tokengate's own validation of the rendered config.
		{"misspelt config field in values", "", "tokens_per_minute: 100000", "token_per_minute: 100000", "unknown field token_per_minute", ""},
		{"invalid config value in values", "", "on_error: local", "on_error: sometimes", "store.redis.on_error", ""},
		{"invalid quota period", "", "token_quota_period: daily", "token_quota_period: fortnightly", "token_quota_period", ""},
		{"config not mounted", "templates/deployment.yaml", "mountPath: {{ include \"tokengate.configDir\" . }}", "mountPath: /etc/tg", "no ConfigMap", ""},
		// Agreement with the Istio manifest (default values).
		{"other readiness period", "values.yaml", "  readiness:\n    periodSeconds: 2", "  readiness:\n    periodSeconds: 3", "", "readinessProbe"},
		{"other drain delay", "values.yaml", "delay: 5s", "delay: 4s", "", "container args"},
		{"root user", "values.yaml", "runAsUser: 65532", "runAsUser: 1000", "", "pod securityContext"},
		{"other port", "values.yaml", "grpc: 50051", "grpc: 50052", "", "Service ports"},
	}
	istio := decodeIstio(t, readFile(t, istioManifest))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := maps.Clone(orig)
			values := []byte(nil)
			if tt.file == "" {
				values = edit(t, ha, tt.old, tt.new)
			} else {
				files[tt.file] = edit(t, files[tt.file], tt.old, tt.new)
				if strings.Contains(tt.file, "servicemonitor") || strings.Contains(tt.file, "hpa") {
					values = ha
				}
			}
			o, err := renderAndDecode(files, values)
			if tt.wantIstioDiffers != "" {
				if err != nil {
					t.Fatal(err)
				}
				diffs := strings.Join(istioDifferences(o, istio), "\n")
				t.Log(diffs)
				if !strings.Contains(diffs, tt.wantIstioDiffers) {
					t.Errorf("differences %q, want one about %s", diffs, tt.wantIstioDiffers)
				}
				return
			}
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
