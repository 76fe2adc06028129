package front

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// FromConnectionManager sets in c what the front takes from the connection
// manager around the ext_proc filter: use_remote_address,
// xff_num_trusted_hops and skip_xff_append (how the client's address is
// found), and the jwt_authn filter when one runs before ext_proc. It
// refuses what the front cannot imitate: original_ip_detection_extensions,
// a jwt_authn filter after ext_proc or two of them.
func (c *Config) FromConnectionManager(hcm *hcmv3.HttpConnectionManager) error {
	if len(hcm.GetOriginalIpDetectionExtensions()) > 0 {
		return errors.New("front: original_ip_detection_extensions: the front cannot imitate them")
	}
	c.UseRemoteAddress = hcm.GetUseRemoteAddress().GetValue()
	c.XFFNumTrustedHops = hcm.GetXffNumTrustedHops()
	c.SkipXFFAppend = hcm.GetSkipXffAppend()
	c.JWTAuthn = nil
	extProc := false
	for _, f := range hcm.GetHttpFilters() {
		tc := f.GetTypedConfig()
		switch {
		case f.GetDisabled():
		case tc.MessageIs((*extprocv3.ExternalProcessor)(nil)):
			extProc = true
		case tc.MessageIs((*jwtauthnv3.JwtAuthentication)(nil)):
			if extProc || c.JWTAuthn != nil {
				return fmt.Errorf("front: http filter %q: the front imitates one jwt_authn filter, before ext_proc", f.GetName())
			}
			c.JWTAuthn = &jwtauthnv3.JwtAuthentication{}
			if err := tc.UnmarshalTo(c.JWTAuthn); err != nil {
				return fmt.Errorf("front: http filter %q: %w", f.GetName(), err)
			}
		}
	}
	return nil
}

// connectionManager does to the request headers h what Envoy's connection
// manager does before any filter runs (ConnectionManagerUtility::
// mutateRequestHeaders) as far as the client's address goes: it works out
// the address it trusts as the client's (source.address), then, with
// use_remote_address, appends the peer to x-forwarded-for and, when no
// proxy in front is trusted, overwrites x-forwarded-proto.
func (x *exchange) connectionManager(h *headerMap) {
	cfg := &x.f.cfg
	peer, _ := netip.ParseAddrPort(x.r.RemoteAddr)
	if la, ok := x.r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		x.dest, _ = netip.ParseAddrPort(la.String())
	}
	// x-forwarded-for is one of Envoy's inline headers: repeated lines
	// are kept as one entry, joined with ",".
	lines := h.values("x-forwarded-for")
	xff := strings.Join(lines, ",")
	if len(lines) > 1 {
		h.set("x-forwarded-for", xff)
	}
	x.source = peer
	if !cfg.UseRemoteAddress {
		// The (hops+1)-th address from the right, by the xff original IP
		// detection Envoy builds from xff_num_trusted_hops.
		if a, ok := xffAddress(xff, int(cfg.XFFNumTrustedHops)); ok {
			x.source = netip.AddrPortFrom(a, 0)
		}
		return
	}
	if n := int(cfg.XFFNumTrustedHops); n > 0 {
		if a, ok := xffAddress(xff, n-1); ok {
			x.source = netip.AddrPortFrom(a, 0)
		}
	}
	if !cfg.SkipXFFAppend && peer.IsValid() {
		// A loopback peer is replaced by Envoy's own address.
		addr := peer.Addr().String()
		if peer.Addr().IsLoopback() {
			addr = localAddress()
		}
		if xff != "" {
			addr = xff + "," + addr
		}
		h.set("x-forwarded-for", addr)
	}
	if cfg.XFFNumTrustedHops == 0 {
		h.set("x-forwarded-proto", "http")
	}
}

// xffAddress is Envoy's Utility::getLastAddressFromXFF: the address skip
// entries from the right of x-forwarded-for, without port; none when the
// header is too short or that entry is not an IP address.
func xffAddress(xff string, skip int) (netip.Addr, bool) {
	if xff == "" {
		return netip.Addr{}, false
	}
	parts := strings.Split(xff, ",")
	if len(parts) <= skip {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-1-skip]))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a, true
}

// localAddress is Envoy's LocalInfo address (Network::Utility::
// getLocalAddress): the first non-loopback IPv4 address of the host's
// interfaces, else 127.0.0.1.
var localAddress = sync.OnceValue(func() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
})
