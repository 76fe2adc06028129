package harness

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tokengate/tokengate/e2e/front"
	"github.com/tokengate/tokengate/envoy"
)

// defaultRouteTimeout is Envoy's route timeout when a route sets none.
const defaultRouteTimeout = 15 * time.Second

// FrontConfig is the stand-in's configuration for this stack: envoy.yaml
// as Envoy applies it (see frontConfig) with the stack's options applied,
// the front in front of upstream and tokengate.
func (s *Stack) FrontConfig(upstream string) front.Config {
	s.t.Helper()
	cfg, err := frontConfig(s.Bootstrap, s.Filter, s.Tokengate.Field("grpc"), upstream)
	if err != nil {
		s.t.Fatal(err)
	}
	cfg.Envoy = s.opts.Envoy
	if s.opts.RouteTimeout > 0 {
		cfg.RouteTimeout = s.opts.RouteTimeout
	}
	if s.opts.Front != nil {
		s.opts.Front(&cfg)
	}
	return cfg
}

// frontConfig is envoy.yaml's bootstrap b as Envoy applies it (the
// ext_proc filter, the listener's buffer limit, the route timeout, which
// codecs keep trailers, how the connection manager finds the client's
// address, a jwt_authn filter before ext_proc), the front before upstream
// and the tokengate at grpc.
func frontConfig(b *bootstrapv3.Bootstrap, filter *extprocv3.ExternalProcessor, grpc, upstream string) (front.Config, error) {
	ev, err := readEnvoy(b)
	if err != nil {
		return front.Config{}, err
	}
	cfg := front.Config{
		Filter:                  filter,
		ExtProcAddr:             grpc,
		Upstream:                upstream,
		BufferLimit:             BufferLimit(b),
		RouteTimeout:            ev.routeTimeout,
		DownstreamHTTP1Trailers: ev.downstreamTrailers,
		UpstreamHTTP1Trailers:   ev.upstreamTrailers,
	}
	if err := cfg.FromConnectionManager(ev.hcm); err != nil {
		return front.Config{}, err
	}
	return cfg, nil
}

// BufferLimit is the per-connection buffer limit of b's first listener,
// which bounds what the front buffers.
func BufferLimit(b *bootstrapv3.Bootstrap) int64 {
	return int64(b.GetStaticResources().GetListeners()[0].GetPerConnectionBufferLimitBytes().GetValue())
}

// StartFront starts a front on cfg on a loopback port, closed when the
// test ends, and returns it with its base URL.
func StartFront(t testing.TB, cfg front.Config) (*front.Front, string) {
	t.Helper()
	f, err := front.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	u, err := f.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return f, u
}

// loadEnvoy reads envoy/envoy.yaml and its ext_proc filter, changed by
// change when set.
func loadEnvoy(t testing.TB, change func(*extprocv3.ExternalProcessor)) (*bootstrapv3.Bootstrap, *extprocv3.ExternalProcessor) {
	t.Helper()
	b, err := envoy.Shipped() // envoy/envoy.yaml, built into the package
	if err != nil {
		t.Fatal(err)
	}
	filter, err := envoy.ExtProcFilter(b)
	if err != nil {
		t.Fatal(err)
	}
	if change != nil {
		change(filter)
	}
	return b, filter
}

// envoySettings are the envoy.yaml settings the front takes besides the
// ext_proc filter.
type envoySettings struct {
	hcm                *hcmv3.HttpConnectionManager
	routeTimeout       time.Duration
	downstreamTrailers bool
	upstreamTrailers   bool
}

// readEnvoy reads them: the first route of the first listener's
// connection manager (envoy.yaml has one), and the cluster it routes to.
func readEnvoy(b *bootstrapv3.Bootstrap) (envoySettings, error) {
	var out envoySettings
	hcm, err := firstHCM(b)
	if err != nil {
		return out, err
	}
	out.hcm = hcm
	out.downstreamTrailers = hcm.GetHttpProtocolOptions().GetEnableTrailers()
	route := firstRoute(hcm)
	if route == nil {
		return out, fmt.Errorf("harness: envoy.yaml's connection manager has no inline route")
	}
	out.routeTimeout = defaultRouteTimeout
	if d := route.GetRoute().GetTimeout(); d != nil {
		out.routeTimeout = d.AsDuration() // 0 disables it, as in Envoy
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() != route.GetRoute().GetCluster() {
			continue
		}
		opts := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
		if opts == nil {
			break
		}
		po := &upstreamhttpv3.HttpProtocolOptions{}
		if err := opts.UnmarshalTo(po); err != nil {
			return out, fmt.Errorf("harness: cluster %q protocol options: %w", c.GetName(), err)
		}
		out.upstreamTrailers = po.GetExplicitHttpConfig().GetHttpProtocolOptions().GetEnableTrailers()
	}
	return out, nil
}

func firstHCM(b *bootstrapv3.Bootstrap) (*hcmv3.HttpConnectionManager, error) {
	for _, fc := range b.GetStaticResources().GetListeners()[0].GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if f.GetTypedConfig().MessageIs((*hcmv3.HttpConnectionManager)(nil)) {
				hcm := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					return nil, fmt.Errorf("harness: %w", err)
				}
				return hcm, nil
			}
		}
	}
	return nil, fmt.Errorf("harness: envoy.yaml's first listener has no http_connection_manager")
}

func firstRoute(hcm *hcmv3.HttpConnectionManager) *routev3.Route {
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if r.GetRoute() != nil {
				return r
			}
		}
	}
	return nil
}

// applyToBootstrap writes the stack's options that a real Envoy must see
// too into b: the ext_proc filter as changed by StackOptions.Filter, and
// StackOptions.RouteTimeout.
func (s *Stack) applyToBootstrap(b *bootstrapv3.Bootstrap) error {
	for _, fc := range b.GetStaticResources().GetListeners()[0].GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if !f.GetTypedConfig().MessageIs((*hcmv3.HttpConnectionManager)(nil)) {
				continue
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
				return err
			}
			for _, hf := range hcm.GetHttpFilters() {
				if hf.GetTypedConfig().MessageIs((*extprocv3.ExternalProcessor)(nil)) {
					a, err := anypb.New(s.Filter)
					if err != nil {
						return err
					}
					hf.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}
				}
			}
			if s.opts.RouteTimeout > 0 {
				if r := firstRoute(hcm); r != nil {
					r.GetRoute().Timeout = durationpb.New(s.opts.RouteTimeout)
				}
			}
			a, err := anypb.New(hcm)
			if err != nil {
				return err
			}
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		}
	}
	return nil
}

// H2CClient returns a client that speaks HTTP/2 over cleartext with prior
// knowledge, as Envoy's listener (codec_type: AUTO) accepts it.
func H2CClient(timeout time.Duration) *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}, Timeout: timeout}
}
