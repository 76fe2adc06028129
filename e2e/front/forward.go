package front

import (
	"regexp"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// attributesKey is the one key of ProcessingRequest.attributes: the
// ext_proc filter's fixed name (FilterName in ext_proc.cc), not the name
// the filter is given in the configuration.
const attributesKey = "envoy.filters.http.ext_proc"

// attribute is one request_attributes or response_attributes entry: the
// expression as configured (Envoy's key for its value), the attribute it
// names and, for headers['name'], the header.
type attribute struct {
	expr, name, header string
}

var headersAttribute = regexp.MustCompile(`^(request|response)\.headers\[\s*(?:'([^']*)'|"([^"]*)")\s*\]$`)

// knownAttributes are the attributes the front evaluates (Envoy's
// attributes.rst lists more; the front refuses those).
var knownAttributes = map[string]bool{
	"source.address": true, "source.port": true, "destination.address": true, "destination.port": true,
	"request.path": true, "request.url_path": true, "request.host": true, "request.scheme": true,
	"request.method": true, "request.id": true, "request.protocol": true, "request.query": true,
	"request.referer": true, "request.useragent": true, "response.code": true,
	"connection.mtls": true, "connection.requested_server_name": true,
}

// compileAttributes reads the expressions the front can evaluate and
// lists the others.
func compileAttributes(exprs []string) (out []attribute, unknown []string) {
	for _, e := range exprs {
		t := strings.TrimSpace(e)
		if m := headersAttribute.FindStringSubmatch(t); m != nil {
			out = append(out, attribute{expr: e, name: m[1] + ".headers", header: strings.ToLower(m[2] + m[3])})
			continue
		}
		if !knownAttributes[t] {
			unknown = append(unknown, e)
			continue
		}
		out = append(out, attribute{expr: e, name: t})
	}
	return out, unknown
}

// addMetadataAndAttributes adds to msg what Envoy's addDynamicMetadata and addAttributes
// add (1.30 on): metadata_context on every message, with each forwarding
// namespace the request's dynamic metadata has at send time, and the
// direction's attributes on its first message.
func (x *exchange) addMetadataAndAttributes(msg *extprocsvc.ProcessingRequest, p phase) {
	if !x.f.cfg.Envoy.ForwardsMetadataAndAttributes() {
		return
	}
	msg.MetadataContext = x.forwardedMetadata()
	attrs, sent := x.f.respAttrs, &x.respAttrsSent
	if p.request() {
		attrs, sent = x.f.reqAttrs, &x.reqAttrsSent
	}
	if len(attrs) == 0 || *sent {
		return
	}
	*sent = true
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for _, a := range attrs {
		// An attribute without a value is left out, as a failed CEL
		// evaluation is.
		if v := x.evaluate(a); v != nil {
			s.Fields[a.expr] = v
		}
	}
	msg.Attributes = map[string]*structpb.Struct{attributesKey: s}
}

// forwardedMetadata is metadata_context: for each forwarding namespace,
// untyped or typed, the request's dynamic metadata of that name if it has
// any. The request's dynamic metadata is what the filters before ext_proc
// wrote (jwt_authn, Config.DynamicMetadata) with what the processor wrote
// since (receiving_namespaces) merged over it.
func (x *exchange) forwardedMetadata() *corev3.Metadata {
	md := &corev3.Metadata{}
	for _, ns := range x.f.fwdUntyped {
		s := mergeStruct(x.dynamic.GetFilterMetadata()[ns], x.metadata.GetFields()[ns].GetStructValue())
		if s == nil {
			continue
		}
		if md.FilterMetadata == nil {
			md.FilterMetadata = map[string]*structpb.Struct{}
		}
		md.FilterMetadata[ns] = s
	}
	for _, ns := range x.f.fwdTyped {
		if a := x.dynamic.GetTypedFilterMetadata()[ns]; a != nil {
			if md.TypedFilterMetadata == nil {
				md.TypedFilterMetadata = map[string]*anypb.Any{}
			}
			md.TypedFilterMetadata[ns] = a
		}
	}
	return md
}

// mergeStruct returns a new Struct with over's fields set on base's, as
// Envoy's setDynamicMetadata merges a namespace; nil when both are.
func mergeStruct(base, over *structpb.Struct) *structpb.Struct {
	if base == nil && over == nil {
		return nil
	}
	out := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for _, s := range []*structpb.Struct{base, over} {
		for k, v := range s.GetFields() {
			out.Fields[k] = v
		}
	}
	return out
}

// mergeMetadata merges add into md per namespace: untyped namespaces
// field by field, typed ones replaced.
func mergeMetadata(md, add *corev3.Metadata) {
	for ns, s := range add.GetFilterMetadata() {
		if md.FilterMetadata == nil {
			md.FilterMetadata = map[string]*structpb.Struct{}
		}
		md.FilterMetadata[ns] = mergeStruct(md.FilterMetadata[ns], s)
	}
	for ns, a := range add.GetTypedFilterMetadata() {
		if md.TypedFilterMetadata == nil {
			md.TypedFilterMetadata = map[string]*anypb.Any{}
		}
		md.TypedFilterMetadata[ns] = a
	}
}

// evaluate returns an attribute's value as Envoy converts it into the
// Struct (booleans and numbers as such, the rest as strings), or nil when
// it has none (a header absent, response attributes before a response).
func (x *exchange) evaluate(a attribute) *structpb.Value {
	req, resp := x.reqHeaders, x.respHeaders
	header := func(h *headerMap, key string) *structpb.Value {
		if h == nil {
			return nil
		}
		vs := h.values(key)
		if len(vs) == 0 {
			return nil
		}
		return structpb.NewStringValue(strings.Join(vs, ","))
	}
	path, _ := req.get(":path")
	switch a.name {
	case "source.address":
		return structpb.NewStringValue(x.source.String())
	case "source.port":
		return structpb.NewNumberValue(float64(x.source.Port()))
	case "destination.address":
		return structpb.NewStringValue(x.dest.String())
	case "destination.port":
		return structpb.NewNumberValue(float64(x.dest.Port()))
	case "request.path":
		return header(req, ":path")
	case "request.url_path":
		p, _, _ := strings.Cut(path, "?")
		return structpb.NewStringValue(p)
	case "request.query":
		_, q, _ := strings.Cut(path, "?")
		return structpb.NewStringValue(q)
	case "request.host":
		return header(req, ":authority")
	case "request.scheme":
		return header(req, ":scheme")
	case "request.method":
		return header(req, ":method")
	case "request.id":
		return header(req, "x-request-id")
	case "request.referer":
		return header(req, "referer")
	case "request.useragent":
		return header(req, "user-agent")
	case "request.protocol":
		if x.r.ProtoMajor == 2 {
			return structpb.NewStringValue("HTTP/2")
		}
		return structpb.NewStringValue(x.r.Proto)
	case "request.headers":
		return header(req, a.header)
	case "response.headers":
		return header(resp, a.header)
	case "response.code":
		if resp == nil {
			return nil
		}
		s, _ := resp.get(":status")
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil
		}
		return structpb.NewNumberValue(float64(n))
	case "connection.mtls":
		return structpb.NewBoolValue(false) // the listener has no TLS
	case "connection.requested_server_name":
		return structpb.NewStringValue("")
	}
	return nil
}

// filtersBefore imitates the HTTP filters before ext_proc: jwt_authn when
// configured (which may answer by itself), then Config.DynamicMetadata for
// the others. What they write is the dynamic metadata
// forwarding_namespaces reads.
func (x *exchange) filtersBefore(h *headerMap) *localReply {
	x.dynamic = &corev3.Metadata{}
	if x.f.jwt != nil {
		md, lr := x.f.jwt.check(h, time.Now())
		if lr != nil {
			return lr
		}
		if md != nil {
			x.dynamic.FilterMetadata = map[string]*structpb.Struct{jwtNamespace: md}
		}
	}
	if fn := x.f.cfg.DynamicMetadata; fn != nil {
		mergeMetadata(x.dynamic, fn(x.r))
	}
	return nil
}
