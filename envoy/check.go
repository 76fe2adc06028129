package envoy

import (
	"errors"
	"fmt"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// validateTypedConfigs applies the API's validation rules to the message
// inside every google.protobuf.Any in m, at any depth.
//
// The generated ValidateAll stops at an Any: it cannot know the type
// inside. Envoy validates each typed_config when it builds the extension,
// so without this walk a negative ext_proc message_timeout or an empty
// stat_prefix would pass here and stop Envoy from starting.
func validateTypedConfigs(m proto.Message) error {
	return walkMessage(m.ProtoReflect(), "")
}

func walkMessage(m protoreflect.Message, path string) error {
	var errs []error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := string(fd.Name())
		if path != "" {
			p = path + "." + p
		}
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				errs = append(errs, walkValue(mv.Message(), fmt.Sprintf("%s[%q]", p, k.String())))
				return true
			})
		case fd.IsList():
			if fd.Message() == nil {
				return true
			}
			l := v.List()
			for i := range l.Len() {
				errs = append(errs, walkValue(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i)))
			}
		case fd.Message() != nil:
			errs = append(errs, walkValue(v.Message(), p))
		}
		return true
	})
	return errors.Join(errs...)
}

// walkValue validates m if it is an Any, then keeps looking for Anys
// inside it.
func walkValue(m protoreflect.Message, path string) error {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		return walkMessage(m, path)
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var errs []error
	if v, ok := inner.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", path, a.GetTypeUrl(), err))
		}
	}
	errs = append(errs, walkMessage(inner.ProtoReflect(), path))
	return errors.Join(errs...)
}

// checkReferences reports the cross-reference errors Envoy refuses to start
// with but no per-message rule can see: duplicate names, a route or an
// ext_proc grpc_service naming a cluster that does not exist, and an HTTP
// filter chain whose last filter is not the router. Cluster names are only
// checked when all clusters are static; with CDS they may arrive later.
func checkReferences(b *bootstrapv3.Bootstrap) error {
	var errs []error
	sr := b.GetStaticResources()

	clusters := map[string]bool{}
	for i, c := range sr.GetClusters() {
		if clusters[c.GetName()] {
			errs = append(errs, fmt.Errorf("static_resources.clusters[%d]: duplicate cluster name %q", i, c.GetName()))
		}
		clusters[c.GetName()] = true
	}
	dr := b.GetDynamicResources()
	checkClusters := dr.GetCdsConfig() == nil && dr.GetCdsResourcesLocator() == ""
	needCluster := func(path, name string) {
		if checkClusters && !clusters[name] {
			errs = append(errs, fmt.Errorf("%s: unknown cluster %q", path, name))
		}
	}

	listeners := map[string]bool{}
	for i, l := range sr.GetListeners() {
		lp := fmt.Sprintf("static_resources.listeners[%d]", i)
		if listeners[l.GetName()] {
			errs = append(errs, fmt.Errorf("%s: duplicate listener name %q", lp, l.GetName()))
		}
		listeners[l.GetName()] = true

		hcms, err := connectionManagers(l)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", lp, err))
			continue
		}
		for j, hcm := range hcms {
			hp := fmt.Sprintf("%s (http_connection_manager %d)", lp, j)
			for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
				for k, r := range vh.GetRoutes() {
					rp := fmt.Sprintf("%s: virtual host %q route %d", hp, vh.GetName(), k)
					if c := r.GetRoute().GetCluster(); c != "" {
						needCluster(rp, c)
					}
					for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
						needCluster(rp, wc.GetName())
					}
				}
			}

			filters := hcm.GetHttpFilters()
			for k, f := range filters {
				fp := fmt.Sprintf("%s: http filter %q", hp, f.GetName())
				isRouter := f.GetTypedConfig().MessageIs((*routerv3.Router)(nil))
				if isRouter && k != len(filters)-1 {
					errs = append(errs, fmt.Errorf("%s: the router must be the last http filter; filters after it never run", fp))
				}
				if !f.GetTypedConfig().MessageIs((*extprocv3.ExternalProcessor)(nil)) {
					continue
				}
				ep := &extprocv3.ExternalProcessor{}
				if err := f.GetTypedConfig().UnmarshalTo(ep); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", fp, err))
					continue
				}
				if c := ep.GetGrpcService().GetEnvoyGrpc().GetClusterName(); c != "" {
					needCluster(fp+" grpc_service", c)
				}
			}
			// The only terminal HTTP filter this package registers is the
			// router; Envoy requires the chain to end in a terminal filter.
			if n := len(filters); n == 0 || !filters[n-1].GetTypedConfig().MessageIs((*routerv3.Router)(nil)) {
				errs = append(errs, fmt.Errorf("%s: the last http filter must be the router", hp))
			}
		}
	}
	return errors.Join(errs...)
}
