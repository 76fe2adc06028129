package extproc

import (
	"net"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tokengate/tokengate/extproc/llm"
	"github.com/tokengate/tokengate/extproc/policy"
	"github.com/tokengate/tokengate/internal/config"
)

// attributesKey is where Envoy puts the request attributes it sends
// (request_attributes): under its ext_proc filter's name.
const attributesKey = "envoy.filters.http.ext_proc"

// identity is what the request carries of who sent it, kept from its
// messages: the request headers, and what Envoy forwards of its dynamic
// metadata (on every message) and of the request's attributes (on the
// first message only).
type identity struct {
	headers  headers
	metadata *corev3.Metadata
	attrs    *structpb.Struct
}

// note keeps what a message forwards of the request's identity.
func (id *identity) note(req *extprocv3.ProcessingRequest) {
	if md := req.GetMetadataContext(); md != nil {
		id.metadata = md
	}
	if a := req.GetAttributes()[attributesKey]; a != nil && id.attrs == nil {
		id.attrs = a
	}
}

// key returns the request's key under pol, as one string to hash: a
// single header's value as it is (so a key reads the same as it always
// did), or every source the policy names, each tagged, all of which must
// be present.
func (p *processor) key(pol *policy.Policy) (string, bool) {
	md, attr := pol.KeyMetadata(), pol.KeyAttribute()
	if md == nil && attr == "" && !pol.PerRoute() {
		return subscriptionKey(p.id.headers, p.keySourcesFor(pol))
	}
	var parts []string
	if len(pol.KeyHeaders()) > 0 {
		// A policy naming no key source keys each API's callers where
		// they send their key, composite or not.
		v, ok := subscriptionKey(p.id.headers, p.keySourcesFor(pol))
		if !ok {
			return "", false
		}
		parts = append(parts, "header="+strconv.Quote(v))
	}
	if md != nil {
		v, ok := metadataValue(p.id.metadata, md)
		if !ok {
			return "", false
		}
		parts = append(parts, "metadata="+strconv.Quote(v))
	}
	if attr != "" {
		v, ok := attributeValue(p.id.attrs, attr)
		if !ok {
			return "", false
		}
		parts = append(parts, "attribute="+strconv.Quote(v))
	}
	if pol.PerRoute() {
		parts = append(parts, "route="+strconv.Quote(routeOf(p.path)))
	}
	return strings.Join(parts, ";"), true
}

// tierOf returns the request's tier under pol: "" when the policy has no
// tiers or the request names none.
func (p *processor) tierOf(pol *policy.Policy) string {
	md, header := pol.TierSource()
	switch {
	case md != nil:
		v, _ := metadataValue(p.id.metadata, md)
		return v
	case header != "":
		return strings.TrimSpace(p.id.headers.get(header))
	}
	return ""
}

// metadataValue reads a value of Envoy's dynamic metadata: a string as it
// is, a number in its shortest form, a boolean as true or false. Objects,
// lists and nulls are no value: a key must name one thing.
func metadataValue(md *corev3.Metadata, m *config.MetadataValue) (string, bool) {
	ns := md.GetFilterMetadata()[m.Namespace]
	if ns == nil {
		return "", false
	}
	v := structpb.NewStructValue(ns)
	for _, field := range m.Path {
		s := v.GetStructValue()
		if s == nil {
			return "", false
		}
		if v = s.GetFields()[field]; v == nil {
			return "", false
		}
	}
	return scalar(v)
}

// routeOf is a normalised path as a key reads it: what the upstream
// routes alike is one route (a trailing slash changes nothing, as it
// changes nothing to Detect).
func routeOf(path string) string {
	if len(path) > 1 {
		path = strings.TrimSuffix(path, "/")
	}
	return path
}

// attributeValue reads a request attribute as a key: each spelling of
// what Envoy routes alike is one value. A client address is its host
// alone (the port changes with every connection), and for IPv6 its /64:
// one client holds a whole /64, and would otherwise hold 2^64 budgets. A
// host is compared without regard to case, as Envoy's virtual hosts
// match it; a path is the route, without its query (Envoy's request.path
// carries it).
func attributeValue(attrs *structpb.Struct, name string) (string, bool) {
	v := attrs.GetFields()[name]
	if v == nil {
		return "", false
	}
	s, ok := scalar(v)
	if !ok {
		return s, ok
	}
	switch name {
	case "source.address":
		if host, _, err := net.SplitHostPort(s); err == nil {
			s = host
		}
		if ip := net.ParseIP(s); ip != nil && ip.To4() == nil {
			s = ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
		}
		return s, s != ""
	case "request.host":
		return strings.TrimSuffix(strings.ToLower(s), "."), true
	case "request.path":
		return routeOf(llm.NormalizePath(s)), true
	}
	return s, true
}

func scalar(v *structpb.Value) (string, bool) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return k.StringValue, k.StringValue != ""
	case *structpb.Value_NumberValue:
		return strconv.FormatFloat(k.NumberValue, 'g', -1, 64), true
	case *structpb.Value_BoolValue:
		return strconv.FormatBool(k.BoolValue), true
	}
	return "", false
}
