package harness

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/e2e/internal/ports"
	"github.com/tokengate/tokengate/internal/proc"
)

// EnvoyReadyTimeout bounds Envoy's start, first health checks included.
const EnvoyReadyTimeout = 60 * time.Second

// UpstreamCluster is the cluster envoy.yaml routes API calls to.
const UpstreamCluster = "openai"

// StartEnvoy runs the Envoy binary bin on a copy of envoy.yaml whose
// listener and admin are on free loopback ports and whose tokengate and
// upstream clusters point at this stack's processes. Once Envoy reports
// ready it becomes the stack's URL, which is also returned.
func (s *Stack) StartEnvoy(bin string) string {
	s.t.Helper()
	b := proto.Clone(s.Bootstrap).(*bootstrapv3.Bootstrap)
	if err := s.applyToBootstrap(b); err != nil {
		s.t.Fatal(err)
	}
	listen, admin := ports.Free(s.t), ports.Free(s.t)
	b.GetStaticResources().GetListeners()[0].Address = loopback(listen)
	b.Admin = &bootstrapv3.Admin{Address: loopback(admin)}
	procCluster := s.Filter.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	if procCluster == "" {
		s.t.Fatal("harness: the ext_proc filter does not use envoy_grpc; cannot point it at tokengate")
	}
	s.pointCluster(b, procCluster, s.Tokengate.Field("grpc"))
	s.pointCluster(b, UpstreamCluster, s.Mock.Field("http"))

	data, err := protojson.MarshalOptions{Indent: "  "}.Marshal(b)
	if err != nil {
		s.t.Fatal(err)
	}
	path := filepath.Join(s.Dir, "envoy.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		s.t.Fatal(err)
	}
	readyURL := "http://127.0.0.1:" + strconv.Itoa(admin) + "/ready"
	p := launch(s.t, bin, []string{"-c", path, "--use-dynamic-base-id", "--concurrency", "2", "--log-level", "warn"},
		proc.Options{Probe: envoyReady(readyURL), ProbeEvery: 50 * time.Millisecond})
	if err := p.WaitReady(EnvoyReadyTimeout); err != nil {
		s.t.Fatal(err)
	}
	s.URL = "http://127.0.0.1:" + strconv.Itoa(listen)
	return s.URL
}

// pointCluster makes cluster name a static cluster with the single
// endpoint hostport: DNS names of the compose file mean nothing here.
func (s *Stack) pointCluster(b *bootstrapv3.Bootstrap, name, hostport string) {
	s.t.Helper()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		s.t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() != name {
			continue
		}
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		c.LoadAssignment = &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: address(host, n)}},
			}}}},
		}
		return
	}
	s.t.Fatalf("harness: envoy.yaml has no cluster %q", name)
}

// envoyReady probes Envoy's admin /ready, the only readiness signal
// Envoy gives: ready at 200.
func envoyReady(readyURL string) func() error {
	client := &http.Client{Timeout: time.Second}
	return func() error {
		code, err := getStatus(client, readyURL)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("GET /ready: %d", code)
		}
		return err
	}
}

func loopback(port int) *corev3.Address { return address("127.0.0.1", port) }

func address(host string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// EnvoyBinaryVersion runs bin --version and returns the release line the
// front would imitate for it, and the release number.
func EnvoyBinaryVersion(bin string) (front.EnvoyVersion, string, error) {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return 0, "", fmt.Errorf("harness: %s --version: %w\n%s", bin, err, out)
	}
	return front.ParseEnvoyVersion(string(out))
}
