// Package envoy loads and checks the Envoy bootstrap shipped with tokengate
// (envoy.yaml), and answers the few questions the e2e harness and the docs
// ask of it: which ext_proc settings Envoy will use, which port it listens
// on, where a cluster points.
//
// Loading is strict on purpose. The demo runs without an Envoy binary in CI,
// so this package stands in for Envoy's own config loader: unknown fields,
// misspelled enum values, unresolvable typed_config types, values that break
// Envoy's validation rules and references to undefined clusters are all
// errors, and a typo in envoy.yaml fails `go test` instead of the demo.
package envoy

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"

	// Every typed_config in envoy.yaml names its type by URL; protojson can
	// only resolve the types linked into the binary, so each extension the
	// file uses (and the file access logger, its common alternative) is
	// registered here, with the two filters whose dynamic metadata
	// tokengate can key by (metadata_options.forwarding_namespaces):
	// jwt_authn and ext_authz, placed before ext_proc.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

//go:embed envoy.yaml
var shipped []byte

// Shipped returns envoy.yaml as this repository ships it, embedded in the
// binary, so a tool needs no checkout to follow it.
func Shipped() (*bootstrapv3.Bootstrap, error) { return ParseBootstrap(shipped) }

// LoadBootstrap reads the Envoy bootstrap at path and checks it as
// ParseBootstrap does. Errors name the path.
func LoadBootstrap(path string) (*bootstrapv3.Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	b, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("envoy: %s: %w", path, err)
	}
	return b, nil
}

// ParseBootstrap decodes a YAML Envoy v3 bootstrap and checks it the way
// Envoy does at start-up: strict proto decoding (unknown fields rejected,
// every typed_config resolvable), the validation rules of the API, the
// same rules for every typed_config inside it, and references between
// listeners, routes, filters and clusters.
func ParseBootstrap(yamlData []byte) (*bootstrapv3.Bootstrap, error) {
	b, err := parse(yamlData)
	if err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	return b, nil
}

func parse(data []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yamlToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("reading YAML: %w", err)
	}
	b := &bootstrapv3.Bootstrap{}
	// DiscardUnknown stays false: a misspelled field must be an error, as
	// it is for Envoy, not a silently dropped setting.
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, b); err != nil {
		return nil, fmt.Errorf("decoding bootstrap: %w", err)
	}
	// All three checks run so that one test run reports every problem.
	if err := errors.Join(
		b.ValidateAll(),
		validateTypedConfigs(b),
		checkReferences(b),
	); err != nil {
		return nil, fmt.Errorf("invalid bootstrap: %w", err)
	}
	return b, nil
}

// ExtProcFilter returns the configuration of the ext_proc filter in the
// HTTP connection manager of the first static listener: the settings Envoy
// will apply to every tokengate stream. More than one ext_proc filter there
// is an error, since a caller emulating Envoy would otherwise silently
// ignore all but one.
func ExtProcFilter(b *bootstrapv3.Bootstrap) (*extprocv3.ExternalProcessor, error) {
	l, err := firstListener(b)
	if err != nil {
		return nil, err
	}
	hcms, err := connectionManagers(l)
	if err != nil {
		return nil, fmt.Errorf("envoy: listener %q: %w", l.GetName(), err)
	}
	if len(hcms) == 0 {
		return nil, fmt.Errorf("envoy: listener %q has no http_connection_manager", l.GetName())
	}
	var found []*extprocv3.ExternalProcessor
	for _, f := range hcms[0].GetHttpFilters() {
		if !f.GetTypedConfig().MessageIs((*extprocv3.ExternalProcessor)(nil)) {
			continue
		}
		cfg := &extprocv3.ExternalProcessor{}
		if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
			return nil, fmt.Errorf("envoy: http filter %q: %w", f.GetName(), err)
		}
		found = append(found, cfg)
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("envoy: listener %q has no ext_proc http filter", l.GetName())
	case 1:
		return found[0], nil
	default:
		return nil, fmt.Errorf("envoy: listener %q has %d ext_proc http filters, want 1", l.GetName(), len(found))
	}
}

// ListenerPort returns the port of the first static listener, where
// clients send their API calls.
func ListenerPort(b *bootstrapv3.Bootstrap) (uint32, error) {
	l, err := firstListener(b)
	if err != nil {
		return 0, err
	}
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return 0, fmt.Errorf("envoy: listener %q has no socket address", l.GetName())
	}
	if np := sa.GetNamedPort(); np != "" {
		return 0, fmt.Errorf("envoy: listener %q uses named port %q, not a number", l.GetName(), np)
	}
	return sa.GetPortValue(), nil
}

// ClusterAddress returns "host:port" of the first endpoint of the static
// cluster called name, e.g. "tokengate:50051".
func ClusterAddress(b *bootstrapv3.Bootstrap, name string) (string, error) {
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() != name {
			continue
		}
		eps := c.GetLoadAssignment().GetEndpoints()
		if len(eps) == 0 || len(eps[0].GetLbEndpoints()) == 0 {
			return "", fmt.Errorf("envoy: cluster %q has no endpoint", name)
		}
		sa := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if sa == nil {
			return "", fmt.Errorf("envoy: cluster %q: first endpoint has no socket address", name)
		}
		if sa.GetNamedPort() != "" {
			return "", fmt.Errorf("envoy: cluster %q: first endpoint uses named port %q, not a number", name, sa.GetNamedPort())
		}
		return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)), nil
	}
	return "", fmt.Errorf("envoy: no static cluster %q", name)
}

func firstListener(b *bootstrapv3.Bootstrap) (*listenerv3.Listener, error) {
	ls := b.GetStaticResources().GetListeners()
	if len(ls) == 0 {
		return nil, errors.New("envoy: bootstrap has no static listener")
	}
	return ls[0], nil
}

// connectionManagers decodes every HttpConnectionManager in l's filter
// chains, the default chain last, in the order Envoy would list them.
func connectionManagers(l *listenerv3.Listener) ([]*hcmv3.HttpConnectionManager, error) {
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(chains[:len(chains):len(chains)], dc)
	}
	var out []*hcmv3.HttpConnectionManager
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			if !f.GetTypedConfig().MessageIs((*hcmv3.HttpConnectionManager)(nil)) {
				continue
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
				return nil, fmt.Errorf("network filter %q: %w", f.GetName(), err)
			}
			out = append(out, hcm)
		}
	}
	return out, nil
}
